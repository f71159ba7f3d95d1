//! Prometheus metrics, served on the HTTP port at `/metrics` in the OpenMetrics text format.
//!
//! Two kinds: counters and histograms updated where the work happens (requests, bytes and
//! records in and out, connections, fsync rounds), and gauges read from the broker's state at
//! each scrape (partitions, log sizes and offsets, consumer group lag). Names follow
//! Prometheus conventions: a `keel_` prefix, base units (seconds, bytes) in the name, `_total`
//! on counters. `docs/metrics.md` lists them all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ResponseKind};
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::broker::Broker;

/// An API as a label value (`Produce`): written at scrape time, so that counting a request
/// allocates nothing.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Api(pub ApiKey);

impl EncodeLabelValue for Api {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{:?}", self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: Api,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub api: Api,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub api: Api,
    pub phase: Phase,
}

/// Where a request's time goes, as Kafka's request metrics split it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Phase {
    /// The handler's own work (Kafka's LocalTimeMs).
    local,
    /// Waiting for something else: an fsync for `acks=all`, data for a long-polling fetch, a
    /// coordinator's write (Kafka's RemoteTimeMs).
    wait,
    /// The finished response waiting behind earlier responses of its connection
    /// (ResponseQueueTimeMs).
    response_queue,
    /// Writing the response to the socket (ResponseSendTimeMs).
    send,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

fn seconds_histogram() -> Histogram {
    // 50 µs .. ~26 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 20))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    /// Serializes scrapes: the scrape-time gauges are cleared and refilled for each.
    scrape: Mutex<()>,
    pub requests: Family<ApiLabels, Counter>,
    pub request_errors: Family<ApiErrorLabels, Counter>,
    pub request_duration: HistogramFamily<ApiLabels>,
    pub request_phase_duration: HistogramFamily<PhaseLabels>,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub records_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub records_out: Family<TopicLabels, Counter>,
    pub connections_active: Gauge,
    pub connections: Counter,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    partitions: Gauge,
    leader_partitions: Gauge,
    under_replicated_partitions: Gauge,
    offline_partitions: Gauge,
    topics: Gauge,
    log_size: Family<PartitionLabels, Gauge>,
    log_start_offset: Family<PartitionLabels, Gauge>,
    log_end_offset: Family<PartitionLabels, Gauge>,
    log_segments: Family<PartitionLabels, Gauge>,
    group_committed_offset: Family<GroupPartitionLabels, Gauge>,
    group_lag: Family<GroupPartitionLabels, Gauge>,
    pub metadata_commit_duration: Histogram,
    metadata_leader_changes: Counter,
    quorum_leader: Gauge,
    quorum_epoch: Gauge,
    active_brokers: Gauge,
    fenced_brokers: Gauge,
    metadata_high_watermark: Gauge,
    metadata_log_end_offset: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keel");
        let metrics = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            requests: Family::default(),
            request_errors: Family::default(),
            request_duration: Family::new_with_constructor(seconds_histogram),
            request_phase_duration: Family::new_with_constructor(seconds_histogram),
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            records_out: Family::default(),
            connections_active: Gauge::default(),
            connections: Counter::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            partitions: Gauge::default(),
            leader_partitions: Gauge::default(),
            under_replicated_partitions: Gauge::default(),
            offline_partitions: Gauge::default(),
            topics: Gauge::default(),
            log_size: Family::default(),
            log_start_offset: Family::default(),
            log_end_offset: Family::default(),
            log_segments: Family::default(),
            group_committed_offset: Family::default(),
            group_lag: Family::default(),
            metadata_commit_duration: seconds_histogram(),
            metadata_leader_changes: Counter::default(),
            quorum_leader: Gauge::default(),
            quorum_epoch: Gauge::default(),
            active_brokers: Gauge::default(),
            fenced_brokers: Gauge::default(),
            metadata_high_watermark: Gauge::default(),
            metadata_log_end_offset: Gauge::default(),
        };
        let r = &mut registry;
        r.register("requests", "Requests received, per API", metrics.requests.clone());
        r.register(
            "request_errors",
            "Error codes in responses, per API and error (one per partition or resource in error)",
            metrics.request_errors.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response written, per API",
            Unit::Seconds,
            metrics.request_duration.clone(),
        );
        r.register_with_unit(
            "request_phase_duration",
            "Time per phase of a request: local (handler), wait (fsync, long poll, coordinator), response_queue, send",
            Unit::Seconds,
            metrics.request_phase_duration.clone(),
        );
        r.register_with_unit(
            "produced",
            "Record batch bytes appended by producers, per topic",
            Unit::Bytes,
            metrics.bytes_in.clone(),
        );
        r.register("produced_records", "Records appended by producers, per topic", metrics.records_in.clone());
        r.register_with_unit(
            "fetched",
            "Record batch bytes sent to fetchers, per topic",
            Unit::Bytes,
            metrics.bytes_out.clone(),
        );
        r.register(
            "fetched_records",
            "Offsets covered by the batches sent to fetchers, per topic (records, counting whole batches)",
            metrics.records_out.clone(),
        );
        r.register("connections_active", "Open client connections", metrics.connections_active.clone());
        r.register("connections", "Client connections accepted", metrics.connections.clone());
        r.register("isr_shrinks", "In-sync replica set shrinks", metrics.isr_shrinks.clone());
        r.register("isr_expands", "In-sync replica set expansions", metrics.isr_expands.clone());
        r.register(
            "metadata_quorum_leader",
            "Node id of the metadata quorum's leader as this node knows it (-1: none)",
            metrics.quorum_leader.clone(),
        );
        r.register("metadata_quorum_epoch", "Epoch (raft term) of the metadata quorum", metrics.quorum_epoch.clone());
        r.register("active_brokers", "Registered brokers that are not fenced", metrics.active_brokers.clone());
        r.register(
            "fenced_brokers",
            "Registered brokers that are fenced (no heartbeat within broker.session.timeout.ms, or shut down)",
            metrics.fenced_brokers.clone(),
        );
        r.register(
            "metadata_leader_changes",
            "Times this node has seen the metadata quorum get a new leader",
            metrics.metadata_leader_changes.clone(),
        );
        r.register_with_unit(
            "metadata_commit_duration",
            "Time from proposing a metadata change to its commit and application here",
            Unit::Seconds,
            metrics.metadata_commit_duration.clone(),
        );
        r.register(
            "metadata_high_watermark",
            "One past the last metadata log entry applied here (all committed)",
            metrics.metadata_high_watermark.clone(),
        );
        r.register(
            "metadata_log_end_offset",
            "One past the last entry of this node's metadata log",
            metrics.metadata_log_end_offset.clone(),
        );
        r.register("partitions", "Partition replicas hosted by this node", metrics.partitions.clone());
        r.register("leader_partitions", "Partitions this node leads", metrics.leader_partitions.clone());
        r.register(
            "under_replicated_partitions",
            "Partitions led here whose in-sync replicas are fewer than their replicas",
            metrics.under_replicated_partitions.clone(),
        );
        r.register(
            "offline_partitions",
            "Partitions of the cluster without a leader",
            metrics.offline_partitions.clone(),
        );
        r.register("topics", "Topics in the cluster", metrics.topics.clone());
        r.register_with_unit("log_size", "Bytes of a partition's log segments", Unit::Bytes, metrics.log_size.clone());
        r.register("log_start_offset", "A partition's log start offset", metrics.log_start_offset.clone());
        r.register("log_end_offset", "A partition's log end offset", metrics.log_end_offset.clone());
        r.register("log_segments", "A partition's segment count", metrics.log_segments.clone());
        r.register(
            "consumer_group_committed_offset",
            "A consumer group's committed offset, per partition",
            metrics.group_committed_offset.clone(),
        );
        r.register(
            "consumer_group_lag",
            "Records between a group's committed offset and the partition's high watermark",
            metrics.group_lag.clone(),
        );
        r.register_with_unit(
            "log_flush_duration",
            "Time of each fsync round of a partition log (data, indexes and directory of one group commit)",
            Unit::Seconds,
            FsyncHistogram,
        );
        Metrics { registry, ..metrics }
    }

    /// A request of `api` was answered: counts it, its error codes and its phase times.
    pub fn request_done(&self, api: ApiKey, errors: &[i16], timing: RequestTiming) {
        let api = Api(api);
        self.requests.get_or_create(&ApiLabels { api }).inc();
        for &code in errors {
            let error = error_name(code);
            self.request_errors.get_or_create(&ApiErrorLabels { api, error }).inc();
        }
        let total = timing.local + timing.wait + timing.response_queue + timing.send;
        self.request_duration.get_or_create(&ApiLabels { api }).observe(total.as_secs_f64());
        for (phase, time) in [
            (Phase::local, timing.local),
            (Phase::wait, timing.wait),
            (Phase::response_queue, timing.response_queue),
            (Phase::send, timing.send),
        ] {
            self.request_phase_duration.get_or_create(&PhaseLabels { api, phase }).observe(time.as_secs_f64());
        }
    }

    pub fn produced(&self, topic: &str, bytes: u64, records: u64) {
        let labels = TopicLabels { topic: topic.to_string() };
        self.bytes_in.get_or_create(&labels).inc_by(bytes);
        self.records_in.get_or_create(&labels).inc_by(records);
    }

    /// `keel_produced_bytes_total` of `topic`.
    pub fn produced_bytes(&self, topic: &str) -> u64 {
        self.bytes_in.get(&TopicLabels { topic: topic.to_string() }).map_or(0, |counter| counter.get())
    }

    pub fn fetched(&self, topic: &str, bytes: u64, records: u64) {
        let labels = TopicLabels { topic: topic.to_string() };
        self.bytes_out.get_or_create(&labels).inc_by(bytes);
        self.records_out.get_or_create(&labels).inc_by(records);
    }

    /// Reads the scrape-time gauges from `broker` and encodes every metric.
    pub async fn scrape(&self, broker: &Broker) -> String {
        let lag = group_offsets(broker).await;
        let _scrape = self.scrape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refresh(broker, &lag);
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        out
    }

    fn refresh(&self, broker: &Broker, committed: &[(String, String, i32, i64)]) {
        let quorum = broker.metadata.quorum();
        let changes = broker.metadata.leader_changes();
        let counted = self.metadata_leader_changes.get();
        if changes > counted {
            self.metadata_leader_changes.inc_by(changes - counted);
        }
        self.quorum_leader.set(quorum.leader.map_or(-1, i64::from));
        self.quorum_epoch.set(i64::from(quorum.epoch()));
        self.metadata_high_watermark.set(quorum.high_watermark());
        self.metadata_log_end_offset.set(quorum.log_end_offset());
        let image = broker.image();
        let fenced = image.brokers.values().filter(|b| b.fenced).count() as i64;
        self.fenced_brokers.set(fenced);
        self.active_brokers.set(image.brokers.len() as i64 - fenced);
        let hosted = broker.partitions.all();
        self.topics.set(image.topics.len() as i64);
        self.partitions.set(hosted.len() as i64);
        let mut leading = 0;
        let mut under_replicated = 0;
        let mut offline = 0;
        for topic in image.topics.values() {
            for assignment in topic.partitions.values() {
                if assignment.leader < 0 {
                    offline += 1;
                }
                if assignment.leader == broker.node_id {
                    leading += 1;
                    if assignment.isr.len() < assignment.replicas.len() {
                        under_replicated += 1;
                    }
                }
            }
        }
        self.leader_partitions.set(leading);
        self.under_replicated_partitions.set(under_replicated);
        self.offline_partitions.set(offline);

        for family in [&self.log_size, &self.log_start_offset, &self.log_end_offset, &self.log_segments] {
            family.clear();
        }
        for partition in &hosted {
            let labels = PartitionLabels { topic: partition.topic.clone(), partition: partition.index };
            let log = &partition.log;
            self.log_size.get_or_create(&labels).set(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX));
            self.log_start_offset.get_or_create(&labels).set(log.log_start_offset());
            self.log_end_offset.get_or_create(&labels).set(log.log_end_offset());
            self.log_segments.get_or_create(&labels).set(log.segment_count() as i64);
        }

        self.group_committed_offset.clear();
        self.group_lag.clear();
        for (group, topic, partition, offset) in committed {
            let labels = GroupPartitionLabels { group: group.clone(), topic: topic.clone(), partition: *partition };
            self.group_committed_offset.get_or_create(&labels).set(*offset);
            if let Some(hosted) = broker.replica(topic, *partition) {
                self.group_lag.get_or_create(&labels).set((hosted.high_watermark() - offset).max(0));
            }
        }
    }
}

/// Every committed offset of every group whose coordinator runs here: (group, topic,
/// partition, offset).
async fn group_offsets(broker: &Broker) -> Vec<(String, String, i32, i64)> {
    let mut all = Vec::new();
    for coordinator in broker.groups.all() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if coordinator.send(crate::groups::Command::CommittedOffsets(tx)).await.is_err() {
            continue;
        }
        if let Ok(Ok(offsets)) = tokio::time::timeout(Duration::from_secs(5), rx).await {
            all.extend(offsets);
        }
    }
    all
}

/// How long a request spent in each phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTiming {
    pub local: Duration,
    pub wait: Duration,
    pub response_queue: Duration,
    pub send: Duration,
}

/// Kafka's name for an error code, as the `error` label (e.g. `NOT_LEADER_OR_FOLLOWER`).
fn error_name(code: i16) -> String {
    keel_protocol::error_name(code).unwrap_or_else(|| format!("UNKNOWN_{code}"))
}

/// The error codes of a response, one per partition, resource or member in error, as Kafka's
/// `errorCounts` gathers them for its `ErrorsPerSec` metric.
pub fn response_errors(response: &ResponseKind) -> Vec<i16> {
    let mut codes = Vec::new();
    let mut push = |code: i16| {
        if code != 0 {
            codes.push(code);
        }
    };
    match response {
        ResponseKind::Produce(r) => {
            r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| push(p.error_code))
        }
        ResponseKind::Fetch(r) => fetch_errors(r).into_iter().for_each(&mut push),
        ResponseKind::ListOffsets(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code)),
        ResponseKind::Metadata(r) => {
            for topic in &r.topics {
                push(topic.error_code);
                topic.partitions.iter().for_each(|p| push(p.error_code));
            }
        }
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| push(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| push(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| push(t.error_code)),
        ResponseKind::DeleteRecords(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|t| push(t.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|t| push(t.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|t| push(t.error_code)),
        ResponseKind::DescribeCluster(r) => push(r.error_code),
        ResponseKind::DescribeQuorum(r) => {
            push(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code));
        }
        ResponseKind::DescribeLogDirs(r) => {
            push(r.error_code);
            r.results.iter().for_each(|d| push(d.error_code));
        }
        ResponseKind::ApiVersions(r) => push(r.error_code),
        ResponseKind::FindCoordinator(r) => {
            push(r.error_code);
            r.coordinators.iter().for_each(|c| push(c.error_code));
        }
        ResponseKind::JoinGroup(r) => push(r.error_code),
        ResponseKind::SyncGroup(r) => push(r.error_code),
        ResponseKind::Heartbeat(r) => push(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            push(r.error_code);
            r.members.iter().for_each(|m| push(m.error_code));
        }
        ResponseKind::OffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            push(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code));
            for group in &r.groups {
                push(group.error_code);
                group.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code));
            }
        }
        ResponseKind::ListGroups(r) => push(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| push(g.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| push(g.error_code)),
        ResponseKind::OffsetDelete(r) => {
            push(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code));
        }
        ResponseKind::ConsumerGroupHeartbeat(r) => push(r.error_code),
        ResponseKind::ConsumerGroupDescribe(r) => r.groups.iter().for_each(|g| push(g.error_code)),
        ResponseKind::InitProducerId(r) => push(r.error_code),
        ResponseKind::AddPartitionsToTxn(r) => {
            push(r.error_code);
            for topic in &r.results_by_topic_v3_and_below {
                topic.results_by_partition.iter().for_each(|p| push(p.partition_error_code));
            }
            for txn in &r.results_by_transaction {
                for topic in &txn.topic_results {
                    topic.results_by_partition.iter().for_each(|p| push(p.partition_error_code));
                }
            }
        }
        ResponseKind::AddOffsetsToTxn(r) => push(r.error_code),
        ResponseKind::EndTxn(r) => push(r.error_code),
        ResponseKind::TxnOffsetCommit(r) => {
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code))
        }
        ResponseKind::DescribeProducers(r) => {
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| push(p.error_code))
        }
        ResponseKind::DescribeTransactions(r) => r.transaction_states.iter().for_each(|t| push(t.error_code)),
        ResponseKind::ListTransactions(r) => push(r.error_code),
        _ => {}
    }
    codes
}

pub fn fetch_errors(response: &kafka_protocol::messages::FetchResponse) -> Vec<i16> {
    let mut codes: Vec<i16> = response.responses.iter().flat_map(|t| &t.partitions).map(|p| p.error_code).collect();
    codes.push(response.error_code);
    codes.retain(|&code| code != 0);
    codes
}

/// `keel_log_flush_duration_seconds`, read from the storage engine's process-wide histogram.
#[derive(Debug)]
struct FsyncHistogram;

impl TypedMetric for FsyncHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for FsyncHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = keel_log::stats::FSYNC_DURATION.snapshot();
        // The encoder wants per-bucket counts and f64::MAX for +Inf.
        let mut previous = 0;
        let buckets: Vec<(f64, u64)> = snapshot
            .cumulative
            .iter()
            .map(|&(bound, cumulative)| {
                let count = cumulative - previous;
                previous = cumulative;
                (if bound.is_finite() { bound } else { f64::MAX }, count)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Counts an open connection for as long as it lives.
pub struct ConnectionGuard(Arc<Broker>);

impl ConnectionGuard {
    pub fn new(broker: Arc<Broker>) -> ConnectionGuard {
        broker.metrics.connections.inc();
        broker.metrics.connections_active.inc();
        ConnectionGuard(broker)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.metrics.connections_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_labels_are_kafka_names() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(-999), "UNKNOWN_-999");
    }

    #[test]
    fn a_request_is_counted_with_its_errors_and_phases() {
        let metrics = Metrics::new();
        let timing = RequestTiming {
            local: Duration::from_micros(100),
            wait: Duration::from_millis(2),
            response_queue: Duration::ZERO,
            send: Duration::from_micros(10),
        };
        metrics.request_done(ApiKey::Produce, &[3, 3], timing);
        metrics.produced("t", 1000, 10);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
        assert!(out.contains("keel_requests_total{api=\"Produce\"} 1\n"), "{out}");
        assert!(
            out.contains("keel_request_errors_total{api=\"Produce\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("keel_request_duration_seconds_count{api=\"Produce\"} 1\n"), "{out}");
        assert!(out.contains("keel_request_phase_duration_seconds_count{api=\"Produce\",phase=\"wait\"} 1\n"), "{out}");
        assert!(out.contains("keel_produced_bytes_total{topic=\"t\"} 1000\n"), "{out}");
        assert!(out.contains("keel_produced_records_total{topic=\"t\"} 10\n"), "{out}");
        assert!(out.contains("# TYPE keel_log_flush_duration_seconds histogram\n"), "{out}");
    }
}
