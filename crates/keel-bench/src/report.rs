//! What a run measured and how it is printed: one human-readable line or one JSON object.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency a histogram records, in microseconds (one hour); larger values are clamped.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds with three significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

/// Records one latency sample, clamping it into the histogram's range.
pub fn record_latency_us(histogram: &mut Histogram<u64>, latency_us: u64) {
    histogram.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        })
    }

    fn to_json(self) -> Value {
        json!({
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "p99_9_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
        })
    }
}

/// The outcome of one benchmark run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Short name such as `produce acks=1` or `e2e`.
    pub name: String,
    /// Records counted in the measurement window (warm-up excluded).
    pub records: u64,
    /// Payload bytes counted in the measurement window.
    pub payload_bytes: u64,
    /// Length of the measurement window.
    pub elapsed_secs: f64,
    pub latency: Option<Latency>,
    /// What `latency` measures, e.g. `send to ack`.
    pub latency_kind: &'static str,
    /// Records that failed (delivery errors, or e2e records never seen by the consumer).
    pub errors: u64,
    /// Run-specific figures (time to first record, first error, settings).
    pub extra: Vec<(&'static str, Value)>,
}

impl Report {
    pub fn records_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.records as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// Payload throughput in MiB/s (Kafka's perf tools call this MB/s).
    pub fn mib_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.payload_bytes as f64 / (1024.0 * 1024.0) / self.elapsed_secs
        } else {
            0.0
        }
    }

    pub fn line(&self) -> String {
        let mut line = format!(
            "{}: {} records in {:.2} s, {:.0} records/s, {:.1} MB/s",
            self.name,
            self.records,
            self.elapsed_secs,
            self.records_per_sec(),
            self.mib_per_sec()
        );
        if let Some(l) = self.latency {
            line.push_str(&format!(
                ", latency ms ({}) p50 {:.2} p95 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
                self.latency_kind, l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
            ));
        }
        if self.errors > 0 {
            line.push_str(&format!(", {} errors", self.errors));
        }
        for (key, value) in &self.extra {
            match value {
                Value::String(s) => line.push_str(&format!(", {key} {s}")),
                other => line.push_str(&format!(", {key} {other}")),
            }
        }
        line
    }

    pub fn to_json(&self) -> Value {
        let mut object = json!({
            "name": self.name,
            "records": self.records,
            "payload_bytes": self.payload_bytes,
            "elapsed_secs": self.elapsed_secs,
            "records_per_sec": self.records_per_sec(),
            "mb_per_sec": self.mib_per_sec(),
            "errors": self.errors,
        });
        let map = object.as_object_mut().expect("json! of an object is an object");
        if let Some(latency) = self.latency {
            map.insert("latency_kind".into(), json!(self.latency_kind));
            map.insert("latency".into(), latency.to_json());
        }
        for (key, value) in &self.extra {
            map.insert(key.replace(' ', "_"), value.clone());
        }
        object
    }

    /// Prints the report the way the user asked for.
    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
        } else {
            println!("{}", self.line());
        }
    }
}

/// A payload of `size` bytes of pseudo-random upper-case letters, like Kafka's ProducerPerformance:
/// compressible about as much as text, so `--compression` numbers mean something.
pub fn letters_payload(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            // xorshift64: enough randomness for a benchmark payload, no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'A' + (state % 26) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            record_latency_us(&mut h, us * 10);
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
    }

    #[test]
    fn payload_is_letters_of_the_asked_size() {
        let p = letters_payload(1024);
        assert_eq!(p.len(), 1024);
        assert!(p.iter().all(u8::is_ascii_uppercase));
    }

    #[test]
    fn throughput_is_payload_mib_per_second() {
        let r = Report {
            name: "t".into(),
            records: 2048,
            payload_bytes: 2048 * 1024,
            elapsed_secs: 2.0,
            latency: None,
            latency_kind: "",
            errors: 0,
            extra: vec![],
        };
        assert_eq!(r.records_per_sec(), 1024.0);
        assert_eq!(r.mib_per_sec(), 1.0);
    }
}
