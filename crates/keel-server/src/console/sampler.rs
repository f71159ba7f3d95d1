//! The console's history: every `SAMPLE_EVERY` the sampler records each topic's high-watermark
//! sum and log size (throughput is the difference between two samples) and each consumer
//! group's lag per partition. Everything is bounded: `SAMPLES_MAX` samples, at most
//! `TOPICS_MAX` topics and `GROUPS_MAX` groups, `LAG_PARTITIONS_MAX` partitions per group.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{ListGroupsRequest, OffsetFetchRequest};
use tokio::sync::watch;

use super::Console;
use crate::broker::{now_ms, stopped, Broker};
use crate::handlers;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Ten minutes at one sample every five seconds.
pub const SAMPLES_MAX: usize = 120;
const TOPICS_MAX: usize = 1_000;
const GROUPS_MAX: usize = 200;
pub const LAG_PARTITIONS_MAX: usize = 1_000;

/// Totals of one topic at one instant: high watermarks summed over partitions, and the record
/// batch bytes producers have appended since the broker started (`keel_produced_bytes_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TopicTotals {
    pub records: i64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct TopicSample {
    pub at_ms: i64,
    pub topics: BTreeMap<String, TopicTotals>,
}

/// One group's lag at one instant: (topic, partition, lag).
#[derive(Clone, Debug)]
pub struct LagSample {
    pub at_ms: i64,
    pub lags: Vec<(String, i32, i64)>,
}

/// A rate between two samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub at_ms: i64,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
}

#[derive(Default)]
pub struct History {
    samples: VecDeque<TopicSample>,
    lags: BTreeMap<String, VecDeque<LagSample>>,
}

impl History {
    pub fn push_topics(&mut self, sample: TopicSample) {
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Records the lags of the groups listed now; groups no longer listed are forgotten.
    pub fn push_lags(&mut self, at_ms: i64, groups: BTreeMap<String, Vec<(String, i32, i64)>>) {
        self.lags.retain(|group, _| groups.contains_key(group));
        for (group, lags) in groups {
            let series = self.lags.entry(group).or_default();
            if series.len() == SAMPLES_MAX {
                series.pop_front();
            }
            series.push_back(LagSample { at_ms, lags });
        }
    }

    /// Throughput between consecutive samples, of one topic or (`None`) of all topics. A topic
    /// that shrank (deleted, recreated, retention) counts as zero, never negative.
    pub fn rates(&self, topic: Option<&str>) -> Vec<Rate> {
        let total = |sample: &TopicSample| -> Option<TopicTotals> {
            match topic {
                Some(name) => sample.topics.get(name).copied(),
                None => Some(TopicTotals {
                    records: sample.topics.values().map(|t| t.records).sum(),
                    bytes: sample.topics.values().map(|t| t.bytes).sum(),
                }),
            }
        };
        let mut rates = Vec::with_capacity(self.samples.len());
        for (earlier, later) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            let seconds = (later.at_ms - earlier.at_ms) as f64 / 1000.0;
            if seconds <= 0.0 {
                continue;
            }
            let rate = match topic {
                // Per topic: only where the topic is in both samples.
                Some(_) => match (total(earlier), total(later)) {
                    (Some(a), Some(b)) => Some((b.records - a.records, b.bytes as i64 - a.bytes as i64)),
                    (None, Some(_)) | (Some(_), None) | (None, None) => None,
                },
                // All topics: each topic's growth, so a deleted topic does not subtract.
                None => Some(later.topics.iter().fold((0i64, 0i64), |(records, bytes), (name, b)| {
                    let a = earlier.topics.get(name).copied().unwrap_or_default();
                    (records + (b.records - a.records).max(0), bytes + (b.bytes as i64 - a.bytes as i64).max(0))
                })),
            };
            if let Some((records, bytes)) = rate {
                rates.push(Rate {
                    at_ms: later.at_ms,
                    records_per_s: records.max(0) as f64 / seconds,
                    bytes_per_s: bytes.max(0) as f64 / seconds,
                });
            }
        }
        rates
    }

    pub fn lag_history(&self, group: &str) -> Vec<LagSample> {
        self.lags.get(group).map(|series| series.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Runs until `stop`: samples topics and group lags every `SAMPLE_EVERY`.
pub async fn run(console: Arc<Console>, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let topics = topic_totals(&broker);
        console.history().push_topics(topics);
        let lags = group_lags(&broker).await;
        console.history().push_lags(now_ms(), lags);
    }
}

/// Each hosted topic's high-watermark sum and bytes produced, now. Bytes come from the produce
/// counter rather than the log size, which retention and compaction shrink.
pub fn topic_totals(broker: &Broker) -> TopicSample {
    let mut topics: BTreeMap<String, TopicTotals> = BTreeMap::new();
    for partition in broker.partitions.all() {
        if topics.len() >= TOPICS_MAX && !topics.contains_key(&partition.topic) {
            continue;
        }
        topics.entry(partition.topic.clone()).or_default().records += partition.high_watermark();
    }
    for (topic, totals) in topics.iter_mut() {
        totals.bytes = broker.metrics.produced_bytes(topic);
    }
    TopicSample { at_ms: now_ms(), topics }
}

/// Every group's committed offsets against the high watermarks: (topic, partition, lag).
pub async fn group_lags(broker: &Arc<Broker>) -> BTreeMap<String, Vec<(String, i32, i64)>> {
    let listed = handlers::groups::list_groups(broker, ListGroupsRequest::default(), 5).await;
    let mut out = BTreeMap::new();
    for group in listed.groups.into_iter().take(GROUPS_MAX) {
        let id = group.group_id.0.to_string();
        let lags = committed_lags(broker, &id).await.into_iter().map(|l| (l.topic, l.partition, l.lag)).collect();
        out.insert(id, lags);
    }
    out
}

/// One partition's committed offset and lag.
#[derive(Debug, Clone)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// The group's committed offsets (OffsetFetch, all topics) with each partition's lag; at most
/// `LAG_PARTITIONS_MAX` partitions.
pub async fn committed_lags(broker: &Arc<Broker>, group_id: &str) -> Vec<PartitionLag> {
    let mut request = OffsetFetchRequest::default();
    let mut wanted = kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default();
    wanted.group_id = kafka_protocol::messages::GroupId(handlers::str_bytes(group_id));
    wanted.topics = None;
    request.groups.push(wanted);
    let response = handlers::groups::offset_fetch(broker, request, 8).await;
    let mut lags = Vec::new();
    for group in response.groups {
        for topic in group.topics {
            for p in topic.partitions {
                if p.error_code != 0 || p.committed_offset < 0 || lags.len() >= LAG_PARTITIONS_MAX {
                    continue;
                }
                let name = topic.name.0.to_string();
                let high_watermark = broker.replica(&name, p.partition_index).map_or(-1, |q| q.high_watermark());
                let lag = if high_watermark < 0 { 0 } else { (high_watermark - p.committed_offset).max(0) };
                lags.push(PartitionLag {
                    topic: name,
                    partition: p.partition_index,
                    committed: p.committed_offset,
                    high_watermark,
                    lag,
                });
            }
        }
    }
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    lags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, topics: &[(&str, i64, u64)]) -> TopicSample {
        TopicSample {
            at_ms,
            topics: topics
                .iter()
                .map(|(name, records, bytes)| (name.to_string(), TopicTotals { records: *records, bytes: *bytes }))
                .collect(),
        }
    }

    #[test]
    fn rates_are_deltas_per_second_and_never_negative() {
        let mut history = History::default();
        history.push_topics(sample(0, &[("a", 0, 0), ("b", 100, 1000)]));
        history.push_topics(sample(5_000, &[("a", 50, 500), ("b", 100, 1000)]));
        // b deleted and recreated: its totals shrink.
        history.push_topics(sample(10_000, &[("a", 100, 1000), ("b", 10, 100)]));
        let all = history.rates(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], Rate { at_ms: 5_000, records_per_s: 10.0, bytes_per_s: 100.0 });
        assert_eq!(all[1], Rate { at_ms: 10_000, records_per_s: 10.0, bytes_per_s: 100.0 });
        let b = history.rates(Some("b"));
        assert_eq!(b[1].records_per_s, 0.0);
        assert!(history.rates(Some("missing")).is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut history = History::default();
        for i in 0..(SAMPLES_MAX as i64 + 50) {
            history.push_topics(sample(i * 5_000, &[("a", i, 0)]));
            history.push_lags(i, BTreeMap::from([("g".to_string(), vec![("a".to_string(), 0, i)])]));
        }
        assert_eq!(history.samples.len(), SAMPLES_MAX);
        assert_eq!(history.lag_history("g").len(), SAMPLES_MAX);
        history.push_lags(0, BTreeMap::new());
        assert!(history.lag_history("g").is_empty(), "a group no longer listed is forgotten");
    }
}
