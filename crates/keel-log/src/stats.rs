//! Process-wide storage statistics that the server exports as metrics: how long the fsync
//! rounds of every log take. A fixed-bucket histogram of atomics, so that recording costs a
//! few relaxed additions and needs no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync histogram's buckets, in seconds (the last bucket is +Inf).
pub const FSYNC_BUCKETS_SECONDS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A histogram of durations with [`FSYNC_BUCKETS_SECONDS`] as bounds.
pub struct DurationHistogram {
    /// Non-cumulative counts; index `FSYNC_BUCKETS_SECONDS.len()` is the +Inf bucket.
    buckets: [AtomicU64; FSYNC_BUCKETS_SECONDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// What a histogram held when read: cumulative counts per bound, as Prometheus exposes them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum_seconds: f64,
    /// `(upper bound in seconds, observations at or below it)`, ending with `(+Inf, count)`.
    pub cumulative: Vec<(f64, u64)>,
}

impl DurationHistogram {
    pub const fn new() -> Self {
        DurationHistogram {
            buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS_SECONDS.len() + 1],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index =
            FSYNC_BUCKETS_SECONDS.iter().position(|&bound| seconds <= bound).unwrap_or(FSYNC_BUCKETS_SECONDS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut running = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push((FSYNC_BUCKETS_SECONDS.get(index).copied().unwrap_or(f64::INFINITY), running));
        }
        // Count is the +Inf bucket, so that the exposition is consistent even while observations
        // race with the read.
        HistogramSnapshot {
            count: running,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            cumulative,
        }
    }
}

impl Default for DurationHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Every fsync round of every log in this process (data, index and directory syncs of one
/// group commit together).
pub static FSYNC_DURATION: DurationHistogram = DurationHistogram::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let histogram = DurationHistogram::new();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.cumulative.first(), Some(&(0.0001, 1)));
        assert_eq!(snapshot.cumulative.iter().find(|(bound, _)| *bound == 0.005), Some(&(0.005, 2)));
        assert_eq!(snapshot.cumulative.iter().find(|(bound, _)| *bound == 2.5), Some(&(2.5, 2)));
        assert_eq!(snapshot.cumulative.last(), Some(&(f64::INFINITY, 3)));
        assert!((snapshot.sum_seconds - 10.00305).abs() < 1e-9);
    }
}
