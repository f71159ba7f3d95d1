//! Retention: which old segments a log may delete, by Kafka's rules
//! (`UnifiedLog.deleteOldSegments`), and the `.deleted` files that deletion goes through.
//!
//! Three passes, each extending a prefix of the segments, in Kafka's order: segments wholly below
//! the log start offset (DeleteRecords), then `retention.bytes`, then `retention.ms`. The last
//! two apply only when `cleanup.policy` contains `delete`. A segment is never deleted past the
//! high watermark, and an empty active segment is never deleted; a non-empty active segment
//! that qualifies is rolled first by the caller, so the log always keeps an active segment.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError};
use crate::storage::{remove_if_exists, Storage};

/// Kafka's suffix for a segment file waiting for `file.delete.delay.ms`.
pub const DELETED_SUFFIX: &str = ".deleted";

/// What retention needs to know of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    /// Last offset + 1, or `base_offset` when empty.
    pub next_offset: i64,
    pub size_bytes: u64,
    /// The greatest record timestamp in the segment, or the `.log` file's modification time
    /// when no record has a timestamp ≥ 0 (Kafka's `LogSegment.largestTimestamp`).
    pub largest_timestamp_ms: i64,
}

/// The retention settings of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `cleanup.policy` contains `delete`.
    pub delete: bool,
    /// `retention.ms`; `None` is unlimited (-1).
    pub retention_ms: Option<i64>,
    /// `retention.bytes`; `None` is unlimited (-1).
    pub retention_bytes: Option<u64>,
}

impl Default for RetentionPolicy {
    fn default() -> RetentionPolicy {
        RetentionPolicy { delete: true, retention_ms: Some(7 * 24 * 60 * 60 * 1000), retention_bytes: None }
    }
}

/// Why the last segment of a deletable prefix goes, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionReason {
    LogStartOffset,
    RetentionBytes,
    RetentionMs,
}

/// How many of `segments` (oldest first, the last one active), from the front, retention
/// deletes, and why the last of them goes. `high_watermark` bounds what may go: a segment is
/// deleted only if every offset in it is below the high watermark.
pub fn deletable_segments(
    segments: &[SegmentInfo],
    log_start_offset: i64,
    high_watermark: i64,
    policy: &RetentionPolicy,
    now_ms: i64,
) -> (usize, Option<DeletionReason>) {
    let mut count = 0;
    let mut reason = None;
    let mut pass = |count: &mut usize, why, predicate: &mut dyn FnMut(&SegmentInfo, Option<&SegmentInfo>) -> bool| {
        let before = *count;
        while let Some(segment) = segments.get(*count) {
            let next = segments.get(*count + 1);
            let upper_bound_offset = next.map_or(segment.next_offset, |n| n.base_offset);
            let last_and_empty = next.is_none() && segment.size_bytes == 0;
            if last_and_empty || high_watermark < upper_bound_offset || !predicate(segment, next) {
                break;
            }
            *count += 1;
        }
        if *count > before {
            reason = Some(why);
        }
    };
    pass(&mut count, DeletionReason::LogStartOffset, &mut |_, next| {
        next.is_some_and(|n| n.base_offset <= log_start_offset)
    });
    if !policy.delete {
        return (count, reason);
    }
    if let Some(retention_bytes) = policy.retention_bytes {
        let size_bytes: u64 = segments[count..].iter().map(|s| s.size_bytes).sum();
        if size_bytes >= retention_bytes {
            // Delete while what stays is still at least `retention.bytes`.
            let mut excess = size_bytes - retention_bytes;
            pass(&mut count, DeletionReason::RetentionBytes, &mut |segment, _| {
                let goes = excess >= segment.size_bytes;
                if goes {
                    excess -= segment.size_bytes;
                }
                goes
            });
        }
    }
    if let Some(retention_ms) = policy.retention_ms {
        pass(&mut count, DeletionReason::RetentionMs, &mut |segment, _| {
            now_ms.saturating_sub(segment.largest_timestamp_ms) > retention_ms
        });
    }
    (count, reason)
}

/// A segment's files renamed with [`DELETED_SUFFIX`], removed once `due_ms` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingDeletion {
    pub paths: Vec<PathBuf>,
    pub due_ms: i64,
}

/// Renames each existing file of `paths` to `<name>.deleted`; returns the new paths. A reader
/// holding the file open keeps reading it; the name is what goes.
pub(crate) fn rename_to_deleted(storage: &dyn Storage, paths: &[&Path]) -> Result<Vec<PathBuf>, LogError> {
    let mut renamed = Vec::with_capacity(paths.len());
    for path in paths {
        let mut target = path.as_os_str().to_owned();
        target.push(DELETED_SUFFIX);
        let target = PathBuf::from(target);
        match storage.rename(path, &target) {
            Ok(()) => renamed.push(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx(path),
        }
    }
    Ok(renamed)
}

/// Removes the files of `pending`; a file already gone is fine.
pub(crate) fn remove_files(storage: &dyn Storage, paths: &[PathBuf]) -> Result<(), LogError> {
    for path in paths {
        remove_if_exists(storage, path).ctx(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::storage::OsStorage;

    /// Segments of `sizes` bytes, 10 offsets each, the i-th with largest timestamp `times[i]`.
    fn segments(sizes: &[u64], times: &[i64]) -> Vec<SegmentInfo> {
        sizes
            .iter()
            .zip(times)
            .enumerate()
            .map(|(i, (&size_bytes, &largest_timestamp_ms))| SegmentInfo {
                base_offset: i as i64 * 10,
                next_offset: if size_bytes == 0 { i as i64 * 10 } else { i as i64 * 10 + 10 },
                size_bytes,
                largest_timestamp_ms,
            })
            .collect()
    }

    fn policy(retention_ms: Option<i64>, retention_bytes: Option<u64>) -> RetentionPolicy {
        RetentionPolicy { delete: true, retention_ms, retention_bytes }
    }

    const END: i64 = i64::MAX;

    #[test]
    fn time_deletes_segments_whose_newest_record_is_older_than_retention() {
        let segs = segments(&[100, 100, 100, 100], &[1_000, 2_000, 3_000, 4_000]);
        let by_time = |now| deletable_segments(&segs, 0, END, &policy(Some(1_000), None), now);
        assert_eq!(by_time(1_999), (0, None), "1000 ms old is not older than 1000 ms");
        assert_eq!(by_time(2_001), (1, Some(DeletionReason::RetentionMs)));
        assert_eq!(by_time(3_500), (2, Some(DeletionReason::RetentionMs)));
        // Every record expired: the active segment qualifies too (the caller rolls first).
        assert_eq!(by_time(10_000), (4, Some(DeletionReason::RetentionMs)));
    }

    #[test]
    fn time_stops_at_the_first_segment_that_stays() {
        // A newer timestamp in an old segment keeps it, and with it every later one.
        let segs = segments(&[100, 100, 100], &[1_000, 9_000, 1_000]);
        assert_eq!(deletable_segments(&segs, 0, END, &policy(Some(1_000), None), 5_000).0, 1);
    }

    #[test]
    fn size_deletes_while_what_stays_is_at_least_retention_bytes() {
        let segs = segments(&[100, 100, 100, 50], &[0; 4]);
        let by_size = |bytes| deletable_segments(&segs, 0, END, &policy(None, Some(bytes)), 0);
        assert_eq!(by_size(350), (0, None));
        assert_eq!(by_size(351), (0, None));
        assert_eq!(by_size(250), (1, Some(DeletionReason::RetentionBytes)));
        assert_eq!(by_size(249), (1, Some(DeletionReason::RetentionBytes)), "150 would stay, below 249");
        assert_eq!(by_size(150), (2, Some(DeletionReason::RetentionBytes)));
        assert_eq!(by_size(50), (3, Some(DeletionReason::RetentionBytes)));
        assert_eq!(by_size(0), (4, Some(DeletionReason::RetentionBytes)));
    }

    #[test]
    fn time_and_size_together_take_the_longer_prefix() {
        let segs = segments(&[100, 100, 100, 100], &[1_000, 2_000, 3_000, 4_000]);
        let both = |ms, bytes| deletable_segments(&segs, 0, END, &policy(Some(ms), Some(bytes)), 4_500);
        assert_eq!(both(2_000, 300), (2, Some(DeletionReason::RetentionMs)));
        assert_eq!(both(3_000, 100), (3, Some(DeletionReason::RetentionBytes)));
    }

    #[test]
    fn segments_below_the_log_start_go_whatever_the_policy() {
        let segs = segments(&[100, 100, 100], &[0; 3]);
        let compact_only = RetentionPolicy { delete: false, retention_ms: Some(0), retention_bytes: Some(0) };
        assert_eq!(
            deletable_segments(&segs, 15, END, &compact_only, i64::MAX),
            (1, Some(DeletionReason::LogStartOffset))
        );
        assert_eq!(deletable_segments(&segs, 20, END, &compact_only, i64::MAX).0, 2);
        // The active segment is never below the log start by this rule: nothing follows it.
        assert_eq!(deletable_segments(&segs, 30, END, &compact_only, i64::MAX).0, 2);
        assert_eq!(deletable_segments(&segs, 9, END, &compact_only, i64::MAX), (0, None));
    }

    #[test]
    fn compact_only_keeps_everything_else() {
        let segs = segments(&[100, 100], &[0, 0]);
        let compact_only = RetentionPolicy { delete: false, retention_ms: Some(1), retention_bytes: Some(1) };
        assert_eq!(deletable_segments(&segs, 0, END, &compact_only, 1_000_000), (0, None));
    }

    #[test]
    fn unlimited_retention_deletes_nothing() {
        let segs = segments(&[100, 100], &[0, 0]);
        assert_eq!(deletable_segments(&segs, 0, END, &policy(None, None), i64::MAX), (0, None));
    }

    #[test]
    fn an_empty_active_segment_is_never_deleted() {
        let segs = segments(&[100, 100, 0], &[0, 0, 0]);
        assert_eq!(deletable_segments(&segs, 0, END, &policy(Some(0), None), 1_000).0, 2);
        assert_eq!(deletable_segments(&segs, 0, END, &policy(None, Some(0)), 1_000).0, 2);
        let empty_log = segments(&[0], &[0]);
        assert_eq!(deletable_segments(&empty_log, 0, END, &policy(Some(0), Some(0)), 1_000), (0, None));
        assert_eq!(deletable_segments(&[], 0, END, &policy(Some(0), Some(0)), 1_000), (0, None));
    }

    #[test]
    fn nothing_at_or_above_the_high_watermark_goes() {
        let segs = segments(&[100, 100, 100], &[0, 0, 0]);
        let p = policy(Some(0), None);
        assert_eq!(deletable_segments(&segs, 0, 19, &p, 1_000).0, 1);
        assert_eq!(deletable_segments(&segs, 0, 20, &p, 1_000).0, 2);
        assert_eq!(deletable_segments(&segs, 0, 30, &p, 1_000).0, 3);
    }

    #[test]
    fn a_size_check_that_stops_at_the_high_watermark_does_not_count_the_segment() {
        // Kafka evaluates the high watermark first, so the excess is not spent on a segment
        // that stays.
        let segs = segments(&[100, 100, 100], &[0, 0, 0]);
        assert_eq!(deletable_segments(&segs, 0, 10, &policy(None, Some(0)), 0).0, 1);
    }

    #[test]
    fn renamed_files_can_be_removed_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("00000000000000000000.log");
        let b = dir.path().join("00000000000000000000.index");
        fs::write(&a, b"data").expect("write");
        let renamed = rename_to_deleted(&OsStorage, &[&a, &b]).expect("rename");
        assert_eq!(renamed, vec![dir.path().join("00000000000000000000.log.deleted")]);
        assert!(!a.exists() && renamed[0].exists());
        remove_files(&OsStorage, &renamed).expect("remove");
        remove_files(&OsStorage, &renamed).expect("removing again is fine");
        assert!(!renamed[0].exists());
    }
}
