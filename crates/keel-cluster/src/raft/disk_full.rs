//! Riding out a full disk: a metadata log write that fails because the disk (or the quota) is
//! full is undone by the write itself and retried here, with a bounded backoff, until space frees
//! or the store stops.
//!
//! openraft stops its core for good on any storage error, so handing it ENOSPC would leave the
//! metadata log dead until a restart. Retrying instead stalls the one write (and so every later
//! proposal) while the disk is full; proposers bound their own wait. Only disk-full errors are
//! retried: any other I/O error is returned as before.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::file::FileError;

/// The first wait before retrying a write the full disk refused.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two retries: the backoff doubles up to it.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Tells a stalled retry loop to give up: set when the metadata store shuts down, so a write that
/// waits for space never holds up shutdown (or the runtime's exit) for more than one wake-up.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl StopSignal {
    /// Stops every current and later retry loop watching this signal. Idempotent.
    pub fn stop(&self) {
        let (stopped, wake) = &*self.inner;
        *stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        wake.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sleeps for `duration` or until stopped, whichever comes first; true when stopped.
    fn wait(&self, duration: Duration) -> bool {
        let (stopped, wake) = &*self.inner;
        let guard = stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (guard, _) = wake
            .wait_timeout_while(guard, duration, |stopped| !*stopped)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard
    }
}

/// True for the errors a full disk or an exhausted quota gives (ENOSPC, EDQUOT).
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl FileError {
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if is_disk_full(source))
    }
}

/// The backoff of [`retry_while_disk_full`]: starts at `first`, doubles up to `max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

pub(crate) const BACKOFF: Backoff = Backoff { first: RETRY_BACKOFF_FIRST, max: RETRY_BACKOFF_MAX };

/// Runs `write` until it succeeds, fails with an error other than a full disk, or `stop` is set
/// while it waits for space (then the disk-full error is returned).
///
/// `write` must leave no partial effect behind when it fails (cut the file back, remove its tmp
/// file) and must redo the whole write when called again: after a failed fsync the state of the
/// page cache is unknown, so fsyncing again proves nothing. Blocks the calling thread: call it
/// from a blocking context only.
pub(crate) fn retry_while_disk_full<T>(
    stop: &StopSignal,
    backoff: Backoff,
    what: &str,
    mut write: impl FnMut() -> Result<T, FileError>,
) -> Result<T, FileError> {
    let mut delay = backoff.first;
    let mut stalled_since: Option<Instant> = None;
    loop {
        match write() {
            Ok(value) => {
                if let Some(since) = stalled_since {
                    tracing::info!(
                        write = what,
                        stalled_ms = since.elapsed().as_millis() as u64,
                        "metadata log: disk space is back, the stalled write succeeded"
                    );
                }
                return Ok(value);
            }
            Err(error) if error.is_disk_full() => {
                if stalled_since.is_none() {
                    tracing::warn!(
                        write = what,
                        %error,
                        "metadata log: disk full, retrying until space frees; metadata changes wait meanwhile"
                    );
                    stalled_since = Some(Instant::now());
                }
                if stop.wait(delay) {
                    tracing::warn!(write = what, "metadata log: stopped while waiting for disk space");
                    return Err(error);
                }
                delay = (delay * 2).min(backoff.max);
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::thread;

    use super::*;

    const FAST: Backoff = Backoff { first: Duration::from_millis(1), max: Duration::from_millis(4) };

    fn full() -> FileError {
        FileError::io(Path::new("log"), io::Error::from(io::ErrorKind::StorageFull))
    }

    #[test]
    fn disk_full_and_quota_errors_are_recognised_by_errno_too() {
        assert!(is_disk_full(&io::Error::from_raw_os_error(28))); // ENOSPC
        assert!(is_disk_full(&io::Error::from(io::ErrorKind::QuotaExceeded)));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(5))); // EIO
        assert!(!is_disk_full(&io::Error::from(io::ErrorKind::PermissionDenied)));
        assert!(!FileError::corrupt(Path::new("log"), "bad").is_disk_full());
    }

    #[test]
    fn a_full_disk_is_retried_until_the_write_succeeds() {
        let stop = StopSignal::default();
        let mut calls = 0;
        let result = retry_while_disk_full(&stop, FAST, "append", || {
            calls += 1;
            if calls <= 5 {
                Err(full())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.expect("succeeds once space frees"), 6);
    }

    #[test]
    fn other_errors_are_returned_at_once() {
        let stop = StopSignal::default();
        let mut calls = 0;
        let result: Result<(), _> = retry_while_disk_full(&stop, FAST, "append", || {
            calls += 1;
            Err(FileError::io(Path::new("log"), io::Error::from_raw_os_error(5)))
        });
        assert!(matches!(result, Err(FileError::Io { .. })));
        assert_eq!(calls, 1);
    }

    #[test]
    fn stopping_ends_a_stalled_retry_with_the_disk_full_error() {
        let stop = StopSignal::default();
        let stopper = {
            let stop = stop.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                stop.stop();
            })
        };
        // A backoff far longer than the test: only the stop signal can end the wait.
        let slow = Backoff { first: Duration::from_secs(3600), max: Duration::from_secs(3600) };
        let result: Result<(), _> = retry_while_disk_full(&stop, slow, "save vote", || Err(full()));
        stopper.join().expect("stopper");
        assert!(result.expect_err("gives up when stopped").is_disk_full());
        assert!(stop.is_stopped());
    }
}
