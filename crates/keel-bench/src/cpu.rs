//! CPU time of this process and, optionally, of the broker, read from /proc, so a run can say
//! whether the client or the broker used the cores (client and broker share one machine).

use std::time::Instant;

/// Linux reports /proc/<pid>/stat times in USER_HZ ticks, which is 100 on every mainstream build.
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of a process, or `None` where /proc is unavailable.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Busy CPU seconds of the whole machine (all cores, everything but idle and iowait), from
/// the first line of /proc/stat.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0.0);
    Some((total - idle) / TICKS_PER_SEC)
}

/// CPU use of the harness, the broker and the whole machine between `start` and `finish`.
/// Client and broker share the machine, so the machine figure shows how much other work
/// (builds, tests) competed with the run.
pub struct CpuMeter {
    broker_pid: Option<u32>,
    started: Instant,
    client_secs: Option<f64>,
    broker_secs: Option<f64>,
    machine_secs: Option<f64>,
}

impl CpuMeter {
    pub fn start(broker_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            broker_pid,
            started: Instant::now(),
            client_secs: cpu_secs("self"),
            broker_secs: broker_pid.and_then(|pid| cpu_secs(&pid.to_string())),
            machine_secs: machine_busy_secs(),
        }
    }

    /// `(name, percent of one core)` pairs for the report, e.g. `("client cpu %", 140)`; the
    /// machine figure goes up to 100 times the number of cores.
    pub fn finish(&self) -> Vec<(&'static str, serde_json::Value)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut out = Vec::new();
        let percent = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => Some(((a - b) / wall * 100.0).round()),
            _ => None,
        };
        if let Some(p) = percent(self.client_secs, cpu_secs("self")) {
            out.push(("client cpu %", serde_json::json!(p)));
        }
        if let Some(pid) = self.broker_pid {
            if let Some(p) = percent(self.broker_secs, cpu_secs(&pid.to_string())) {
                out.push(("broker cpu %", serde_json::json!(p)));
            }
        }
        if let Some(p) = percent(self.machine_secs, machine_busy_secs()) {
            out.push(("machine cpu %", serde_json::json!(p)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_time_is_readable() {
        assert!(super::cpu_secs("self").is_some());
        assert!(super::machine_busy_secs().is_some());
    }
}
