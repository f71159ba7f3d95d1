//! Tests of `Log`: appends, reads, rolling, recovery from torn writes, group commit, truncation,
//! and a model-based property test.

use super::*;
use crate::batch::BatchHeader;
use crate::testing::test_batch;
use proptest::prelude::*;
use std::fs::{self, OpenOptions};
use std::sync::Barrier;

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 1000, index_interval_bytes: 200, ..LogConfig::default() }
}

fn open(dir: &Path, config: LogConfig, recovery_point: i64) -> Log {
    Log::open(dir, "topic-id", config, recovery_point, 0, 0).expect("open")
}

fn bytes_of(slice: &ReadSlice) -> Vec<u8> {
    let mut out = Vec::new();
    slice.read_into(&mut out).expect("read_into");
    out
}

/// Every batch from the log start, read through `read`.
pub(super) fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20, i64::MAX, true).expect("read");
        assert!(!slice.is_empty());
        slice.read_into(&mut out).expect("read_into");
        offset = slice.last_offset + 1;
    }
    out
}

/// Appends `count` batches of `records` records; returns the patched bytes of each.
fn append_n(log: &Log, count: usize, records: u32, payload: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut batch = test_batch(records, 1000 + i as i64, payload);
            log.append(&mut batch, 0, 0).expect("append");
            batch
        })
        .collect()
}

fn last_segment_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

#[test]
fn append_assigns_offsets_and_patches_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default(), 0);
    let mut two = test_batch(3, 50, 4);
    two.extend(test_batch(2, 70, 4));
    let info = log.append(&mut two, 5, 0).expect("append");
    assert_eq!(
        info,
        AppendInfo {
            base_offset: 0,
            last_offset: 4,
            max_timestamp: 70,
            record_count: 5,
            log_end_offset: 5,
            duplicate: false
        }
    );
    let second = BatchHeader::parse(&two[test_batch(3, 50, 4).len()..]).expect("header");
    assert_eq!(second.base_offset, 3);
    assert_eq!(second.partition_leader_epoch, 5);
    let info = log.append(&mut test_batch(1, 0, 0), 5, 0).expect("append");
    assert_eq!((info.base_offset, info.log_end_offset), (5, 6));
    log.append(&mut test_batch(1, 0, 0), 7, 0).expect("append");
    log.append(&mut test_batch(1, 0, 0), 6, 0).expect("lower epoch is recorded in batch only");
    assert_eq!(log.epoch_entries(), vec![(5, 0), (7, 6)]);
    assert_eq!(log.latest_epoch(), Some(7));
    assert_eq!(log.log_end_offset(), 8);
    assert!(log.append(&mut [1, 2, 3], 0, 0).is_err());
    assert!(log.append(&mut [], 0, 0).is_err());
}

#[test]
fn read_follows_kafka_fetch_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default(), 0);
    let batches = append_n(&log, 3, 5, 20); // offsets 0-4, 5-9, 10-14
    let size = batches[0].len();

    // Inside a batch: the whole batch from its base, never the next one.
    let slice = log.read(7, 1 << 20, i64::MAX, false).expect("read");
    assert_eq!((slice.first_offset, slice.last_offset), (5, 14));
    assert_eq!(bytes_of(&slice), [batches[1].clone(), batches[2].clone()].concat());

    // Upper bound stops before a batch starting at or after it, but keeps a straddling batch.
    let slice = log.read(0, 1 << 20, 6, false).expect("read");
    assert_eq!((slice.first_offset, slice.last_offset), (0, 9));
    assert_eq!(log.read(6, 1 << 20, 6, false).expect("read").len, 0);

    // max_bytes in whole batches; KIP-74 min_one_batch.
    let slice = log.read(0, 2 * size + 1, i64::MAX, false).expect("read");
    assert_eq!(slice.len, 2 * size);
    assert!(log.read(0, size - 1, i64::MAX, false).expect("read").is_empty());
    let slice = log.read(0, 1, i64::MAX, true).expect("read");
    assert_eq!(bytes_of(&slice), batches[0]);

    // The log end is an empty read; beyond it or below the start is out of range.
    let end = log.read(15, 100, i64::MAX, true).expect("read");
    assert!(end.is_empty() && end.file.is_none());
    assert!(matches!(
        log.read(16, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { offset: 16, log_start_offset: 0, log_end_offset: 15 })
    ));
    assert!(matches!(log.read(-1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn rolls_by_segment_bytes_and_reads_one_segment_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_config(), 0);
    let batches = append_n(&log, 10, 2, 200); // ~480 bytes each: two per 1000-byte segment
    assert_eq!(log.segment_count(), 5);
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8, 12, 16]);
    let slice = log.read(0, 1 << 20, i64::MAX, false).expect("read");
    assert_eq!((slice.first_offset, slice.last_offset), (0, 3));
    assert_eq!(bytes_of(&slice), batches[..2].concat());
    assert_eq!(read_all(&log), batches.concat());
    assert_eq!(log.size_bytes(), batches.concat().len() as u64);
    assert!(dir.path().join("00000000000000000004.log").exists());
    assert!(dir.path().join("00000000000000000004.index").exists());
    assert!(dir.path().join("00000000000000000004.timeindex").exists());
}

#[test]
fn rolls_by_segment_age_from_first_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { segment_ms: 1000, ..LogConfig::default() };
    let log = open(dir.path(), config, 0);
    log.append(&mut test_batch(1, 0, 0), 0, 5_000).expect("append");
    log.append(&mut test_batch(1, 0, 0), 0, 6_000).expect("append");
    assert_eq!(log.segment_count(), 1);
    log.append(&mut test_batch(1, 0, 0), 0, 6_001).expect("append");
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

#[test]
fn rolls_when_the_index_would_be_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        index_interval_bytes: 1,
        segment_index_bytes: 24, // room for 2 time entries, 3 offset entries
        ..LogConfig::default()
    };
    let log = open(dir.path(), config, 0);
    for i in 0..5 {
        log.append(&mut test_batch(1, i, 0), 0, 0).expect("append");
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
}

fn torn_tail_case(damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = {
        let log = open(dir.path(), small_config(), 0);
        append_n(&log, 5, 2, 200)
    };
    damage(&last_segment_log(dir.path()));
    let log = open(dir.path(), small_config(), 0);
    let report = log.recovery_report();
    assert!(report.truncated_bytes > 0, "{report:?}");
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(read_all(&log), batches[..4].concat());
    // Offsets continue from the cut.
    let info = log.append(&mut test_batch(1, 0, 0), 0, 0).expect("append");
    assert_eq!(info.base_offset, 8);
    let reopened = {
        drop(log);
        open(dir.path(), small_config(), 0)
    };
    assert_eq!(reopened.log_end_offset(), 9);
}

#[test]
fn recovery_cuts_a_batch_torn_midway() {
    torn_tail_case(|path| {
        let file = OpenOptions::new().write(true).open(path).expect("open");
        let len = file.metadata().expect("meta").len();
        file.set_len(len - 100).expect("set_len");
    });
}

#[test]
fn recovery_cuts_garbage_after_the_last_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = {
        let log = open(dir.path(), small_config(), 0);
        append_n(&log, 3, 2, 50)
    };
    let path = last_segment_log(dir.path());
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend([0xAB; 37]);
    fs::write(&path, bytes).expect("write");
    let log = open(dir.path(), small_config(), 0);
    assert_eq!(log.recovery_report().truncated_bytes, 37);
    assert_eq!(read_all(&log), batches.concat());
}

#[test]
fn recovery_cuts_a_batch_with_a_flipped_byte() {
    torn_tail_case(|path| {
        let mut bytes = fs::read(path).expect("read");
        let at = bytes.len() - 10;
        bytes[at] ^= 0xff;
        fs::write(path, bytes).expect("write");
    });
}

#[test]
fn recovery_deletes_segments_after_a_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = {
        let log = open(dir.path(), small_config(), 0);
        append_n(&log, 6, 2, 200) // segments at 0, 4, 8
    };
    let middle = dir.path().join("00000000000000000004.log");
    let file = OpenOptions::new().write(true).open(&middle).expect("open");
    file.set_len(300).expect("set_len"); // tears the first batch of segment 4
    let log = open(dir.path(), small_config(), 0);
    let report = log.recovery_report();
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(read_all(&log), batches[..2].concat());
    assert!(!dir.path().join("00000000000000000008.log").exists());
    assert!(!dir.path().join("00000000000000000008.index").exists());
}

#[test]
fn trusted_segments_before_the_recovery_point_are_not_revalidated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), small_config(), 0);
        append_n(&log, 6, 2, 200);
        log.close().expect("close");
    }
    let log = open(dir.path(), small_config(), i64::MAX);
    assert_eq!(log.recovery_report(), RecoveryReport::default());
    assert_eq!(log.durable_offset(), 12);
    drop(log);
    let log = open(dir.path(), small_config(), 5);
    // Segments 4.. hold offsets ≥ 5: two re-validated, the first trusted.
    assert_eq!(log.recovery_report().segments_recovered, 2);
    assert_eq!(log.log_end_offset(), 12);
}

#[test]
fn bad_or_missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = {
        let log = open(dir.path(), small_config(), 0);
        let batches = append_n(&log, 6, 2, 200);
        log.close().expect("close");
        batches
    };
    let index0 = dir.path().join("00000000000000000000.index");
    let original = fs::read(&index0).expect("index");
    fs::remove_file(&index0).expect("remove");
    let mut odd = fs::read(dir.path().join("00000000000000000004.index")).expect("index");
    odd.push(1);
    fs::write(dir.path().join("00000000000000000004.index"), odd).expect("write");
    fs::write(
        dir.path().join("00000000000000000008.timeindex"),
        [0u8; 24], // two equal timestamps: not increasing
    )
    .expect("write");
    fs::write(dir.path().join("00000000000000000099.index"), [0u8; 8]).expect("orphan");
    let log = open(dir.path(), small_config(), i64::MAX);
    assert_eq!(log.recovery_report().indexes_rebuilt, 3);
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    assert_eq!(fs::read(&index0).expect("index"), original);
    assert!(!dir.path().join("00000000000000000099.index").exists());
    assert_eq!(read_all(&log), batches.concat());
    assert_eq!(log.read(5, 1, i64::MAX, true).expect("read").first_offset, 4);
}

#[test]
fn index_pointing_past_the_segment_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), LogConfig::default(), 0);
        append_n(&log, 2, 1, 10);
    }
    let mut index = fs::read(dir.path().join("00000000000000000000.index")).expect("index");
    index.extend(5u32.to_be_bytes());
    index.extend(1_000_000u32.to_be_bytes());
    fs::write(dir.path().join("00000000000000000000.index"), index).expect("write");
    let log = open(dir.path(), LogConfig::default(), i64::MAX);
    assert_eq!(log.recovery_report().indexes_rebuilt, 1);
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn delete_records_before_raises_the_start_and_drops_whole_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_config(), 0);
    let batches = append_n(&log, 6, 2, 200); // segments 0, 4, 8
    assert_eq!(log.delete_records_before(5).expect("delete"), 5);
    // The segment below the new start goes with the next retention pass, whatever the policy.
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8]);
    assert_eq!(log.delete_old_segments(0).expect("retention"), (1, Some(DeletionReason::LogStartOffset)));
    assert_eq!(log.segment_base_offsets(), vec![4, 8]);
    assert_eq!(log.delete_records_before(3).expect("never lowers"), 5);
    assert!(matches!(log.read(4, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    // Reading from the new start returns the whole batch holding it.
    assert_eq!(bytes_of(&log.read(5, 1, i64::MAX, true).expect("read")), batches[2]);
    assert!(matches!(log.delete_records_before(13), Err(LogError::OffsetOutOfRange { .. })));
    assert_eq!(log.delete_records_before(12).expect("to the end"), 12);
    log.delete_old_segments(0).expect("retention");
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    assert!(log.read(12, 100, i64::MAX, true).expect("read").is_empty());
    drop(log);
    let log = Log::open(dir.path(), "topic-id", small_config(), 0, 12, 0).expect("reopen");
    assert_eq!(log.log_start_offset(), 12);
}

#[test]
fn finds_batches_by_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_config(), 0);
    let mut stamps = Vec::new();
    for (i, ts) in [100, 300, 200, 500, 400, 900, 50].into_iter().enumerate() {
        let mut batch = test_batch(1, ts, 150);
        log.append(&mut batch, 0, 0).expect("append");
        stamps.push((i as i64, ts, batch));
    }
    assert!(log.segment_count() > 1);
    let check = |log: &Log| {
        for target in [0, 100, 101, 250, 300, 450, 500, 600, 900] {
            let expected = stamps.iter().find(|(_, ts, _)| *ts >= target);
            let found = log.find_batch_by_timestamp(target).expect("find");
            assert_eq!(found, expected.map(|(offset, _, bytes)| (*offset, bytes.clone())), "target {target}");
        }
        assert_eq!(log.find_batch_by_timestamp(901).expect("find"), None);
        assert_eq!(log.max_timestamp_batch().expect("max"), Some((5, stamps[5].2.clone())));
    };
    check(&log);
    log.close().expect("close");
    drop(log);
    check(&open(dir.path(), small_config(), i64::MAX));
    check(&open(dir.path(), small_config(), 0));
    let empty_dir = tempfile::tempdir().expect("tempdir");
    let empty = open(empty_dir.path(), small_config(), 0);
    assert_eq!(empty.max_timestamp_batch().expect("max"), None);
    assert_eq!(empty.find_batch_by_timestamp(0).expect("find"), None);
}

#[test]
fn concurrent_flushes_share_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path(), LogConfig::default(), 0));
    append_n(&log, 3, 2, 10);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let log = Arc::clone(&log);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                log.flush_to(6)
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().expect("thread").expect("flush"), 6);
    }
    assert_eq!(log.fsync_rounds(), 1);
    assert_eq!(log.durable_offset(), 6);
    // Nothing new: no fsync at all.
    assert_eq!(log.flush_to(6).expect("flush"), 6);
    assert_eq!(log.fsync_rounds(), 1);
}

#[test]
fn flushes_concurrent_with_appends_are_correct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path(), small_config(), 0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let info = log.append(&mut test_batch(2, 0, 30), 0, 0).expect("append");
                    let durable = log.flush_to(info.log_end_offset).expect("flush");
                    assert!(durable >= info.log_end_offset);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(log.durable_offset(), 200);
    assert!(log.fsync_rounds() <= 100);
}

#[test]
fn maybe_flush_honours_message_and_time_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default(), 0);
    append_n(&log, 1, 3, 0);
    assert!(!log.maybe_flush(10).expect("no policy"));
    log.set_config(LogConfig { flush_messages: Some(5), ..LogConfig::default() });
    assert!(!log.maybe_flush(10).expect("3 < 5"));
    append_n(&log, 1, 3, 0);
    assert!(log.maybe_flush(10).expect("6 >= 5"));
    assert_eq!(log.durable_offset(), 6);
    log.set_config(LogConfig { flush_ms: Some(100), ..LogConfig::default() });
    append_n(&log, 1, 1, 0);
    assert!(!log.maybe_flush(50).expect("young"));
    assert!(log.maybe_flush(110).expect("old"));
    assert_eq!(log.config().flush_ms, Some(100));
}

#[test]
fn truncate_to_cuts_at_batch_boundaries_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_config(), 0);
    let mut batches = Vec::new();
    for epoch in 0..6 {
        let mut batch = test_batch(2, 10 * epoch as i64, 200);
        log.append(&mut batch, epoch, 0).expect("append");
        batches.push(batch);
    }
    log.flush_to(12).expect("flush");
    log.truncate_to(7).expect("truncate"); // inside batch 6-7: cut to 6
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.durable_offset(), 6);
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 2), (2, 4)]);
    assert_eq!(read_all(&log), batches[..3].concat());
    assert_eq!(log.max_timestamp_batch().expect("max").map(|b| b.0), Some(4));
    log.truncate_to(100).expect("no-op");
    assert_eq!(log.log_end_offset(), 6);
    let info = log.append(&mut test_batch(1, 0, 0), 9, 0).expect("append");
    assert_eq!(info.base_offset, 6);
    log.truncate_to(4).expect("segment boundary");
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
    drop(log);
    let log = open(dir.path(), small_config(), 0);
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 2)]);
    assert_eq!(read_all(&log), batches[..2].concat());
}

#[test]
fn topic_id_is_kept_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), LogConfig::default(), 0));
    let text = fs::read_to_string(dir.path().join(PARTITION_METADATA_FILE)).expect("metadata");
    assert_eq!(text, "version: 0\ntopic_id: topic-id\n");
    assert!(matches!(
        Log::open(dir.path(), "other", LogConfig::default(), 0, 0, 0),
        Err(LogError::TopicIdMismatch { .. })
    ));
    let log = Log::open(dir.path(), "", LogConfig::default(), 0, 0, 0).expect("open");
    assert_eq!(log.topic_id(), "topic-id");
}

fn retention_config(retention_ms: Option<i64>, retention_bytes: Option<u64>, delay_ms: i64) -> LogConfig {
    LogConfig {
        retention: RetentionPolicy { delete: true, retention_ms, retention_bytes },
        file_delete_delay_ms: delay_ms,
        ..small_config()
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn retention_by_time_deletes_expired_segments_through_deleted_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(1_000), None, 500), 0);
    let batches = append_n(&log, 6, 2, 200); // segments 0, 4, 8; max timestamps 1001, 1003, 1005
    assert_eq!(log.delete_old_segments(2_001).expect("retention"), (0, None));
    assert_eq!(log.delete_old_segments(2_002).expect("retention"), (1, Some(DeletionReason::RetentionMs)));
    assert_eq!(log.segment_base_offsets(), vec![4, 8]);
    assert_eq!(log.log_start_offset(), 4);
    assert!(matches!(log.read(3, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    assert_eq!(bytes_of(&log.read(4, 1, i64::MAX, true).expect("read")), batches[2]);
    // The files wait under a `.deleted` name for file.delete.delay.ms.
    let waiting = vec![
        "00000000000000000000.index.deleted".to_string(),
        "00000000000000000000.log.deleted".to_string(),
        "00000000000000000000.timeindex.deleted".to_string(),
    ];
    assert_eq!(files_ending(dir.path(), ".deleted"), waiting);
    assert_eq!(log.remove_deleted_files(2_501).expect("sweep"), 0);
    assert_eq!(log.pending_deletions(), 1);
    assert_eq!(log.remove_deleted_files(2_502).expect("sweep"), 1);
    assert!(files_ending(dir.path(), ".deleted").is_empty());
    assert_eq!(log.pending_deletions(), 0);
}

#[test]
fn a_read_in_progress_survives_the_deletion_of_its_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(0), None, 0), 0);
    let batches = append_n(&log, 6, 2, 200);
    let slice = log.read(0, 1 << 20, i64::MAX, true).expect("read");
    assert_eq!(log.delete_old_segments(10_000).expect("retention").0, 3);
    assert!(files_ending(dir.path(), ".deleted").is_empty(), "a zero delay removes at once");
    // The slice holds the file open: its bytes are still there (as for sendfile).
    assert_eq!(bytes_of(&slice), [batches[0].clone(), batches[1].clone()].concat());
}

#[test]
fn retention_rolls_a_wholly_expired_active_segment_and_keeps_an_empty_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(1_000), None, 0), 0);
    append_n(&log, 5, 2, 200); // segments 0, 4, 8 (the active one holds one batch)
    assert_eq!(log.delete_old_segments(100_000).expect("retention"), (3, Some(DeletionReason::RetentionMs)));
    assert_eq!(log.segment_base_offsets(), vec![10]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    // An empty active segment is never deleted.
    assert_eq!(log.delete_old_segments(200_000).expect("retention"), (0, None));
    let info = log.append(&mut test_batch(1, 5, 10), 0, 0).expect("append after retention");
    assert_eq!(info.base_offset, 10);
    drop(log);
    let log = Log::open(dir.path(), "topic-id", small_config(), 0, 0, 0).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 11));
}

#[test]
fn retention_by_size_keeps_at_least_retention_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(None, None, 0), 0);
    append_n(&log, 6, 2, 200);
    let sizes: Vec<u64> = log.read_state().segments.iter().map(|s| s.size_bytes).collect();
    let total: u64 = sizes.iter().sum();
    log.set_config(retention_config(None, Some(total - sizes[0]), 0));
    assert_eq!(log.delete_old_segments(0).expect("retention"), (1, Some(DeletionReason::RetentionBytes)));
    assert_eq!(log.size_bytes(), total - sizes[0]);
    log.set_config(retention_config(None, Some(sizes[2] + 1), 0));
    assert_eq!(log.delete_old_segments(0).expect("retention").0, 0, "dropping 4 would leave less than wanted");
    log.set_config(retention_config(None, Some(sizes[2]), 0));
    assert_eq!(log.delete_old_segments(0).expect("retention").0, 1);
    assert_eq!(log.segment_base_offsets(), vec![8]);
}

#[test]
fn compact_only_logs_keep_everything_but_what_delete_records_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention: RetentionPolicy { delete: false, retention_ms: Some(0), retention_bytes: Some(0) },
        ..small_config()
    };
    let log = open(dir.path(), config, 0);
    append_n(&log, 6, 2, 200);
    assert_eq!(log.delete_old_segments(i64::MAX).expect("retention"), (0, None));
    assert_eq!(log.segment_count(), 3);
    drop(log);
    // A log start offset from the checkpoint (DeleteRecords) beyond whole segments.
    let log = Log::open(dir.path(), "topic-id", config, 0, 9, 0).expect("reopen");
    assert_eq!(log.delete_old_segments(0).expect("retention"), (2, Some(DeletionReason::LogStartOffset)));
    assert_eq!((log.segment_base_offsets(), log.log_start_offset()), (vec![8], 9));
}

#[test]
fn retention_never_lowers_a_log_start_set_by_delete_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(1_000), None, 0), 0);
    append_n(&log, 6, 2, 200);
    log.delete_records_before(6).expect("delete records");
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8]);
    // Segment 0 is below the log start, segment 4 has expired.
    assert_eq!(log.delete_old_segments(2_004).expect("retention"), (2, Some(DeletionReason::RetentionMs)));
    assert_eq!(log.log_start_offset(), 8);
    log.delete_records_before(11).expect("delete records");
    assert_eq!(log.delete_old_segments(2_010).expect("retention").0, 1);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (12, 12));
}

#[test]
fn retention_trims_the_leader_epoch_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(0), None, 0), 0);
    for epoch in 0..6 {
        log.append(&mut test_batch(2, 1_000, 200), epoch, 0).expect("append");
    }
    log.delete_old_segments(1_001 + 1).expect("retention");
    assert_eq!(log.log_start_offset(), 12);
    assert_eq!(log.epoch_entries(), vec![(5, 12)]);
}

#[test]
fn open_removes_leftover_deleted_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(1_000), None, 60_000), 0);
    append_n(&log, 6, 2, 200);
    log.delete_old_segments(2_002).expect("retention");
    assert_eq!(files_ending(dir.path(), ".deleted").len(), 3);
    drop(log); // stopped before the delay passed
    let log = Log::open(dir.path(), "topic-id", small_config(), 0, 0, 0).expect("reopen");
    assert!(files_ending(dir.path(), ".deleted").is_empty());
    assert_eq!(log.segment_base_offsets(), vec![4, 8]);
    assert_eq!(log.log_start_offset(), 4, "the first kept segment, even without a checkpoint");
}

#[test]
fn a_crash_between_rename_and_delete_finishes_the_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), small_config(), 0);
    append_n(&log, 8, 2, 200); // segments 0, 4, 8, 12
    log.close().expect("close");
    drop(log);
    // A crash kept the rename of segment 4's files but not the earlier one of segment 0, and
    // left segment 4's time index unrenamed.
    for name in ["00000000000000000004.log", "00000000000000000004.index"] {
        fs::rename(dir.path().join(name), dir.path().join(format!("{name}.deleted"))).expect("rename");
    }
    let log = Log::open(dir.path(), "topic-id", small_config(), 0, 0, 0).expect("reopen");
    assert_eq!(log.segment_base_offsets(), vec![8, 12]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (8, 16));
    assert!(files_ending(dir.path(), ".deleted").is_empty());
    for base in [0, 4] {
        for extension in ["log", "index", "timeindex"] {
            assert!(!segment_path(dir.path(), base, extension).exists(), "{base}.{extension} is gone");
        }
    }
    assert_eq!(read_all(&log).len(), log.size_bytes() as usize);
}

#[test]
fn truncating_below_the_first_segment_drops_pending_deletions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), retention_config(Some(1_000), None, 60_000), 0);
    append_n(&log, 6, 2, 200);
    log.delete_old_segments(2_002).expect("retention");
    log.truncate_to(2).expect("truncate before the start");
    assert!(files_ending(dir.path(), ".deleted").is_empty());
    log.append(&mut test_batch(1, 0, 10), 0, 0).expect("append");
    drop(log);
    let log = Log::open(dir.path(), "topic-id", small_config(), 0, 0, 0).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 3));
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: u32, timestamp: i64, payload: usize },
    Read { pick: u16, max_bytes: usize, min_one_batch: bool },
    Reopen { clean: bool },
    Truncate { pick: u16 },
    DeleteBefore { pick: u16 },
    Retention { pick: u16, by_time: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..5, 0i64..1000, 0usize..300)
            .prop_map(|(records, timestamp, payload)| Op::Append { records, timestamp, payload }),
        3 => (any::<u16>(), 1usize..2000, any::<bool>())
            .prop_map(|(pick, max_bytes, min_one_batch)| Op::Read { pick, max_bytes, min_one_batch }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
        1 => any::<u16>().prop_map(|pick| Op::DeleteBefore { pick }),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(pick, by_time)| Op::Retention { pick, by_time }),
    ]
}

/// The model: every batch ever kept (base offset, bytes) and the log start offset.
struct Model {
    batches: Vec<(i64, Vec<u8>)>,
    log_start_offset: i64,
}

impl Model {
    fn log_end_offset(&self) -> i64 {
        self.batches.last().map_or(0, |(_, bytes)| BatchHeader::parse(bytes).map_or(0, |h| h.last_offset() + 1))
    }

    fn index_holding(&self, offset: i64) -> Option<usize> {
        self.batches.iter().position(|(_, bytes)| BatchHeader::parse(bytes).is_ok_and(|h| h.last_offset() >= offset))
    }

    fn visible_bytes(&self) -> Vec<u8> {
        match self.index_holding(self.log_start_offset) {
            Some(i) => self.batches[i..].iter().flat_map(|(_, b)| b.clone()).collect(),
            None => Vec::new(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), small_config(), 0);
        let mut model = Model { batches: Vec::new(), log_start_offset: 0 };
        for op in ops {
            let end = model.log_end_offset();
            match op {
                Op::Append { records, timestamp, payload } => {
                    let mut batch = test_batch(records, timestamp, payload);
                    let info = log.append(&mut batch, 0, 0).expect("append");
                    prop_assert_eq!(info.base_offset, end);
                    model.batches.push((end, batch));
                }
                Op::Read { pick, max_bytes, min_one_batch } => {
                    let offset = i64::from(pick) % (end + 2) - 1;
                    let result = log.read(offset, max_bytes, i64::MAX, min_one_batch);
                    if offset < model.log_start_offset || offset > end {
                        prop_assert!(
                            matches!(result, Err(LogError::OffsetOutOfRange { .. })),
                            "expected out of range"
                        );
                        continue;
                    }
                    let slice = result.expect("read");
                    let bytes = bytes_of(&slice);
                    let Some(first) = model.index_holding(offset) else {
                        prop_assert!(bytes.is_empty());
                        continue;
                    };
                    // A prefix, in whole batches, of the batches from the one holding `offset`.
                    let mut expected = Vec::new();
                    let mut matched = 0;
                    for (_, batch) in &model.batches[first..] {
                        if expected.len() >= bytes.len() {
                            break;
                        }
                        expected.extend(batch);
                        matched += 1;
                    }
                    prop_assert_eq!(&bytes, &expected);
                    if min_one_batch {
                        prop_assert!(matched >= 1);
                    }
                    prop_assert!(bytes.len() <= max_bytes || matched == 1);
                    if matched > 0 {
                        prop_assert_eq!(slice.first_offset, model.batches[first].0);
                    }
                }
                Op::Reopen { clean } => {
                    let recovery_point = if clean {
                        log.close().expect("close");
                        i64::MAX
                    } else {
                        0
                    };
                    drop(log);
                    log = Log::open(dir.path(), "", small_config(), recovery_point,
                        model.log_start_offset, 0).expect("reopen");
                    prop_assert_eq!(log.recovery_report().truncated_bytes, 0);
                }
                Op::Truncate { pick } => {
                    let span = end - model.log_start_offset + 1;
                    let offset = model.log_start_offset + i64::from(pick) % span;
                    log.truncate_to(offset).expect("truncate");
                    if let Some(i) = model.index_holding(offset) {
                        model.batches.truncate(i);
                    }
                    model.log_start_offset = model.log_start_offset.min(model.log_end_offset());
                }
                Op::DeleteBefore { pick } => {
                    let offset = i64::from(pick) % (end + 1);
                    let start = log.delete_records_before(offset).expect("delete");
                    model.log_start_offset = model.log_start_offset.max(offset);
                    prop_assert_eq!(start, model.log_start_offset);
                }
                Op::Retention { pick, by_time } => {
                    // Appended timestamps are below 1000; retention runs at 1500.
                    const NOW: i64 = 1500;
                    let size = log.size_bytes();
                    let retention_bytes = u64::from(pick) % (size + 1);
                    let retention_ms = i64::from(pick) % 1200;
                    let retention = if by_time {
                        RetentionPolicy { delete: true, retention_ms: Some(retention_ms), retention_bytes: None }
                    } else {
                        RetentionPolicy { delete: true, retention_ms: None, retention_bytes: Some(retention_bytes) }
                    };
                    log.set_config(LogConfig { retention, file_delete_delay_ms: 0, ..small_config() });
                    let (_, reason) = log.delete_old_segments(NOW).expect("retention");
                    log.set_config(small_config());
                    if reason == Some(DeletionReason::RetentionBytes) {
                        prop_assert!(log.size_bytes() >= retention_bytes);
                    }
                    if by_time {
                        // What stays starts with a segment that is not expired, or an empty one.
                        let first = log.read_state().segments[0].retention_info().expect("info");
                        prop_assert!(first.size_bytes == 0 || NOW - first.largest_timestamp_ms <= retention_ms);
                    }
                    // Whole segments go: the new start is a segment base (or stays).
                    let start = log.log_start_offset();
                    prop_assert!(start >= model.log_start_offset);
                    prop_assert!(start == model.log_start_offset || log.segment_base_offsets()[0] == start);
                    model.log_start_offset = start;
                }
            }
            prop_assert_eq!(log.log_end_offset(), model.log_end_offset());
            prop_assert_eq!(log.log_start_offset(), model.log_start_offset);
        }
        prop_assert_eq!(read_all(&log), model.visible_bytes());
    }
}

mod producers {
    use super::*;
    use crate::builder::{build_producer_batch, Producer};
    use crate::producer::{AbortedTxn, Marker, ProducerError};

    fn batch(pid: i64, epoch: i16, seq: i32, records: usize, transactional: bool) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; 50]).collect();
        let producer = Producer { id: pid, epoch, base_sequence: seq };
        build_producer_batch(values.iter().map(|v| (None, Some(&v[..]))), 1000, producer, transactional).unwrap()
    }

    #[test]
    fn a_retried_batch_is_not_written_twice_even_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config(), 0);
        for seq in 0..10 {
            log.append(&mut batch(7, 0, seq * 3, 3, false), 0, 0).unwrap();
        }
        let end = log.log_end_offset();
        let retry = log.append(&mut batch(7, 0, 27, 3, false), 0, 0).unwrap();
        assert!(retry.duplicate);
        assert_eq!((retry.base_offset, retry.last_offset, log.log_end_offset()), (27, 29, end));
        let gap = log.append(&mut batch(7, 0, 31, 1, false), 0, 0);
        assert!(matches!(gap, Err(LogError::Producer(ProducerError::OutOfOrderSequence { .. }))));
        let fenced = log.append(&mut batch(7, -1, 30, 1, false), 0, 0);
        assert!(fenced.is_err());
        // A crash (no close): the state comes back from the last roll's snapshot plus a replay.
        drop(log);
        assert!(snapshot_offsets(&OsStorage, dir.path()).unwrap().len() > 1, "segments rolled and were snapshotted");
        let log = open(dir.path(), small_config(), 0);
        let retry = log.append(&mut batch(7, 0, 27, 3, false), 0, 0).unwrap();
        assert!(retry.duplicate && retry.base_offset == 27);
        assert!(!log.append(&mut batch(7, 0, 30, 1, false), 0, 0).unwrap().duplicate);
        // A clean close snapshots at the end; nothing is replayed.
        log.close().unwrap();
        let end = log.log_end_offset();
        drop(log);
        assert!(snapshot_offsets(&OsStorage, dir.path()).unwrap().contains(&end));
        let log = open(dir.path(), small_config(), i64::MAX);
        assert_eq!(log.producer_states().entry(7).unwrap().last_seq(), 30);
    }

    #[test]
    fn a_snapshot_past_the_recovered_end_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), LogConfig::default(), 0);
        log.append(&mut batch(1, 0, 0, 2, false), 0, 0).unwrap();
        log.append(&mut batch(1, 0, 2, 2, false), 0, 0).unwrap();
        log.close().unwrap();
        drop(log);
        // The second batch is lost (torn), but the snapshot at offset 4 survived.
        let segment = last_segment_log(dir.path());
        let len = fs::metadata(&segment).unwrap().len();
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 10).unwrap();
        let log = open(dir.path(), LogConfig::default(), 0);
        assert_eq!(log.log_end_offset(), 2);
        assert!(!snapshot_offsets(&OsStorage, dir.path()).unwrap().contains(&4));
        assert_eq!(log.producer_states().entry(1).unwrap().last_seq(), 1);
        // The producer's retry of the lost batch is written, not taken for a duplicate.
        let retry = log.append(&mut batch(1, 0, 2, 2, false), 0, 0).unwrap();
        assert!(!retry.duplicate);
        assert_eq!(retry.base_offset, 2);
    }

    #[test]
    fn aborted_transactions_are_indexed_and_bound_the_last_stable_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config(), 0);
        log.append(&mut test_batch(2, 0, 10), 0, 0).unwrap(); // 0-1
        log.append(&mut batch(5, 0, 0, 2, true), 0, 0).unwrap(); // 2-3: txn of 5 opens
        log.append(&mut batch(6, 0, 0, 1, true), 0, 0).unwrap(); // 4: txn of 6 opens
        assert_eq!(log.last_stable_offset(), 2);
        let abort = Marker { commit: false, coordinator_epoch: 0 };
        log.append_marker(5, 0, abort, 0, 0).unwrap(); // 5
        assert_eq!(log.last_stable_offset(), 4);
        let expected = AbortedTxn { producer_id: 5, first_offset: 2, last_offset: 5, last_stable_offset: 4 };
        assert_eq!(log.aborted_transactions(0, 6), vec![expected]);
        assert_eq!(log.aborted_transactions(6, 100), vec![]);
        assert_eq!(log.aborted_transactions(0, 2), vec![], "began at or after the upper bound");
        log.append_marker(6, 0, Marker { commit: true, coordinator_epoch: 0 }, 0, 0).unwrap(); // 6
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        // Markers from an older epoch are refused.
        log.append(&mut batch(6, 1, 0, 1, true), 0, 0).unwrap(); // 7
        assert!(log.append_marker(6, 0, abort, 0, 0).is_err());
        for _ in 0..20 {
            log.append(&mut test_batch(5, 0, 40), 0, 0).unwrap();
        }
        // A crash: the index and the open transaction come back.
        drop(log);
        let log = open(dir.path(), small_config(), 0);
        assert_eq!(log.aborted_transactions(0, 6), vec![expected]);
        assert_eq!(log.last_stable_offset(), 7);
        // A truncation below the abort marker forgets it and reopens the transaction.
        log.truncate_to(5).unwrap();
        assert_eq!(log.aborted_transactions(0, 100), vec![]);
        assert_eq!(log.last_stable_offset(), 2);
    }
}
