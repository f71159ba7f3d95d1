//! Every path that reads or derives state across segments, tested where a segment ends: fetches,
//! ListOffsets by timestamp, producer snapshots at rolls, the last stable offset, retention and
//! DeleteRecords, recovery and the cleaner's ranges.

use super::txn_tests::read_committed;
use super::*;
use crate::builder::{build_batch, build_producer_batch, Producer};
use crate::cleaner::OffsetMap;
use crate::producer::{AbortedTxn, Marker};
use crate::testing::test_batch;

const ABORT: Marker = Marker { commit: false, coordinator_epoch: 0 };

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, index_interval_bytes: 100, file_delete_delay_ms: 0, ..LogConfig::default() }
}

fn open(dir: &Path, config: LogConfig, recovery_point: i64) -> Log {
    Log::open(dir, "t", config, recovery_point, 0, 0).expect("open")
}

/// One batch per append, `timestamp(i)` for the i-th; returns each batch's (base, last) offsets.
fn fill(log: &Log, batches: usize, timestamp: impl Fn(usize) -> i64) -> Vec<(i64, i64)> {
    (0..batches)
        .map(|i| {
            let info = log.append(&mut test_batch(1 + (i % 3) as u32, timestamp(i), 40), 0, 0).expect("append");
            (info.base_offset, info.last_offset)
        })
        .collect()
}

fn bases(log: &Log) -> Vec<i64> {
    log.segment_base_offsets()
}

fn txn_batch(producer_id: i64, sequence: i32, key: &[u8], records: usize) -> Vec<u8> {
    let value = [7u8; 40];
    let producer = Producer { id: producer_id, epoch: 0, base_sequence: sequence };
    build_producer_batch((0..records).map(|_| (Some(key), Some(&value[..]))), 1000, producer, true).expect("batch")
}

#[test]
fn a_fetch_never_crosses_a_segment_end_and_resumes_in_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(400), 0);
    let offsets = fill(&log, 40, |_| 1000);
    let bases = bases(&log);
    assert!(bases.len() > 5);
    for pair in bases.windows(2) {
        let (base, next) = (pair[0], pair[1]);
        // From the start of a segment: its batches only, up to its last offset.
        let slice = log.read(base, 1 << 20, i64::MAX, true).expect("read");
        assert_eq!((slice.first_offset, slice.last_offset), (base, next - 1));
        // From the last offset of a segment: that batch only.
        let last = offsets.iter().find(|(_, last)| *last == next - 1).copied().expect("a batch ends there");
        let slice = log.read(next - 1, 1 << 20, i64::MAX, true).expect("read");
        assert_eq!((slice.first_offset, slice.last_offset), last);
        // An upper bound at the next segment's base ends the read there; at the segment's own
        // last batch, before it.
        assert_eq!(log.read(base, 1 << 20, next, true).expect("read").last_offset, next - 1);
        let before_last = log.read(base, 1 << 20, last.0, true).expect("read");
        assert!(before_last.is_empty() || before_last.last_offset < last.0);
        // The next fetch starts in the next segment.
        assert_eq!(log.read(next, 1 << 20, i64::MAX, true).expect("read").first_offset, next);
    }
    // At the log end: empty, not out of range.
    assert!(log.read(log.log_end_offset(), 1 << 20, i64::MAX, true).expect("read").is_empty());
}

#[test]
fn list_offsets_by_timestamp_finds_the_first_and_last_batches_of_every_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One index entry per segment (its first batch): a segment's greatest timestamp after a
    // reopen comes from walking the batches after that entry.
    let sparse = LogConfig { index_interval_bytes: 1 << 20, ..config(400) };
    let log = open(dir.path(), sparse, 0);
    let mut batches = fill(&log, 13, |i| 1000 + 10 * i as i64);
    let mut timestamps: Vec<i64> = (0..13).map(|i| 1000 + 10 * i).collect();
    // The log's greatest timestamp, in the last batch of a middle segment.
    batches.extend(fill(&log, 1, |_| 99_999));
    timestamps.push(99_999);
    log.set_config(LogConfig { segment_ms: -1, ..sparse });
    for i in 13..40 {
        batches.extend(fill(&log, 1, |_| 1000 + 10 * i as i64));
        timestamps.push(1000 + 10 * i as i64);
        log.set_config(sparse);
    }
    let peak_base = batches[13].0;
    assert!(bases(&log).contains(&(batches[13].1 + 1)), "the peak ends its segment");
    assert!(bases(&log).len() > 5);
    let check = |log: &Log| {
        // The first batch, in offset order, whose timestamp reaches the target (Kafka's rule).
        for target in timestamps.iter().flat_map(|&ts| [ts, ts - 9, ts + 1]) {
            let expected = batches.iter().zip(&timestamps).find(|(_, &ts)| ts >= target).map(|((base, _), _)| *base);
            let found = log.find_batch_by_timestamp(target).expect("lookup").map(|(base, _)| base);
            assert_eq!(found, expected, "timestamp {target}");
        }
        assert_eq!(log.max_timestamp_batch().expect("max").map(|(base, _)| base), Some(peak_base));
        assert_eq!(log.find_batch_by_timestamp(100_000).expect("lookup"), None);
    };
    check(&log);
    // The same from the index files after a clean close (segments loaded as trusted), and after
    // a crash (every segment re-validated).
    log.close().expect("close");
    drop(log);
    check(&open(dir.path(), sparse, i64::MAX));
    check(&open(dir.path(), sparse, 0));
}

#[test]
fn a_retry_of_the_last_batch_before_a_roll_is_a_duplicate_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(500), 0);
    let batch = |seq: i32| {
        let value = [1u8; 60];
        let producer = Producer { id: 3, epoch: 0, base_sequence: seq };
        build_producer_batch([(None, Some(&value[..])), (None, Some(&value[..]))], 1000, producer, false)
            .expect("batch")
    };
    // Two records a batch; write until the newest batch opens a third segment: the batch before
    // it is the second segment's last.
    let mut seq = 0;
    while log.segment_count() < 3 {
        log.append(&mut batch(seq), 0, 0).expect("append");
        seq += 2;
    }
    let roll = *bases(&log).last().expect("segments");
    let retried = log.append(&mut batch(seq - 4), 0, 0).expect("retry");
    assert!(retried.duplicate);
    assert_eq!(retried.last_offset, roll - 1, "the original is the last batch before the roll");
    // A crash with the recovery point at the roll: the state comes from the snapshot written
    // there and a replay of the last segment.
    drop(log);
    let log = open(dir.path(), config(500), roll);
    let again = log.append(&mut batch(seq - 4), 0, 0).expect("retry");
    assert!(again.duplicate && again.base_offset == retried.base_offset);
    assert!(log.append(&mut batch(seq - 2), 0, 0).expect("retry of the newest").duplicate);
    assert!(!log.append(&mut batch(seq), 0, 0).expect("next").duplicate);
}

#[test]
fn the_last_stable_offset_never_falls_below_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(400), 0);
    log.append(&mut txn_batch(5, 0, b"k", 1), 0, 0).expect("append"); // 0: opens a transaction
    fill(&log, 20, |_| 1000);
    assert_eq!(log.last_stable_offset(), 0);
    let start = bases(&log)[2];
    log.delete_records_before(start).expect("delete records");
    assert_eq!(log.last_stable_offset(), start, "Kafka's first unstable offset is at least the log start");
    log.delete_old_segments(0).expect("retention");
    assert_eq!(bases(&log)[0], start);
    log.append_marker(5, 0, ABORT, 0, 0).expect("abort");
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
    assert_eq!(log.aborted_transactions(start, start + 1).len(), 1, "the abort is still indexed");
}

#[test]
fn retention_can_take_an_aborted_transactions_data_and_keep_its_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(400), 0);
    let mut seq = 0;
    for _ in 0..12 {
        log.append(&mut txn_batch(5, seq, b"k", 2), 0, 0).expect("append");
        seq += 2;
    }
    let abort = log.append_marker(5, 0, ABORT, 0, 0).expect("abort").base_offset;
    let committed = fill(&log, 3, |_| 1000);
    assert!(bases(&log).len() > 3);
    // Retention takes every segment before the marker's.
    let marker_segment = *bases(&log).iter().rev().find(|&&b| b <= abort).expect("segment");
    log.delete_records_before(marker_segment).expect("delete records");
    log.delete_old_segments(0).expect("retention");
    assert_eq!(log.log_start_offset(), marker_segment);
    let expected: Vec<i64> = committed.iter().flat_map(|&(b, l)| b..=l).collect();
    assert_eq!(read_committed(&log, marker_segment, log.last_stable_offset(), 1 << 20), expected);
    // DeleteRecords into the middle of the data of the transaction, on a fresh log.
    drop(log);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(400), 0);
    for i in 0..12 {
        log.append(&mut txn_batch(5, i * 2, b"k", 2), 0, 0).expect("append");
    }
    log.append_marker(5, 0, ABORT, 0, 0).expect("abort");
    let tail = fill(&log, 2, |_| 1000);
    let start = bases(&log)[1] + 1;
    log.delete_records_before(start).expect("delete records");
    log.delete_old_segments(0).expect("retention");
    let expected: Vec<i64> = tail.iter().flat_map(|&(b, l)| b..=l).collect();
    assert_eq!(read_committed(&log, start, log.last_stable_offset(), 300), expected);
}

#[test]
fn delete_records_at_a_segment_base_drops_exactly_the_segments_below() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(400), 0);
    fill(&log, 30, |_| 1000);
    let before = bases(&log);
    let start = before[3];
    assert_eq!(log.delete_records_before(start).expect("delete records"), start);
    let (deleted, _) = log.delete_old_segments(0).expect("retention");
    assert_eq!(deleted, 3);
    assert_eq!(bases(&log), before[3..].to_vec());
    assert_eq!(log.read(start, 1 << 20, i64::MAX, true).expect("read").first_offset, start);
    assert!(matches!(log.read(start - 1, 1 << 20, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    // One past a segment's base keeps that segment (its first batch is below the log start).
    assert_eq!(log.delete_records_before(before[4] + 1).expect("delete records"), before[4] + 1);
    log.delete_old_segments(0).expect("retention");
    assert_eq!(bases(&log)[0], before[4]);
    assert_eq!(log.read(before[4] + 1, 1 << 20, i64::MAX, true).expect("read").first_offset, before[4]);
}

#[test]
fn recovery_from_a_segment_boundary_rebuilds_what_follows_and_trusts_what_precedes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), config(400), 0);
    // An aborted transaction in the early segments, an open one in the last.
    for i in 0..6 {
        log.append(&mut txn_batch(5, i * 2, b"k", 2), 0, 0).expect("append");
    }
    log.append_marker(5, 0, ABORT, 0, 0).expect("abort");
    fill(&log, 10, |_| 1000);
    let open_txn = log.append(&mut txn_batch(6, 0, b"k", 1), 0, 0).expect("append").base_offset;
    fill(&log, 10, |_| 1000);
    let segments = bases(&log);
    let entries = log.aborted_transactions(0, i64::MAX);
    let end = log.log_end_offset();
    log.flush_to(end).expect("flush");
    drop(log);
    // Recovery from each segment boundary: the same log, index, and last stable offset.
    for &recovery_point in &segments {
        let log = open(dir.path(), config(400), recovery_point);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(bases(&log), segments);
        assert_eq!(log.aborted_transactions(0, i64::MAX), entries, "from {recovery_point}");
        assert_eq!(log.last_stable_offset(), open_txn);
    }
}

#[test]
fn the_cleaner_removes_an_aborted_transaction_from_every_segment_it_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compacted = LogConfig {
        compaction: CompactionPolicy { compact: true, ..CompactionPolicy::default() },
        retention: crate::retention::RetentionPolicy { delete: false, ..Default::default() },
        ..config(400)
    };
    let log = open(dir.path(), compacted, 0);
    let keyed = |key: &[u8]| {
        let mut batch = build_batch([(Some(key), Some(&b"kept"[..]))], 1000).expect("batch");
        log.append(&mut batch, 0, 0).expect("append").base_offset
    };
    let kept = keyed(b"a");
    for i in 0..12 {
        log.append(&mut txn_batch(5, i * 2, format!("t{i}").as_bytes(), 2), 0, 0).expect("append");
    }
    let abort = log.append_marker(5, 0, ABORT, 0, 0).expect("abort").base_offset;
    let after = keyed(b"b");
    // Roll so that the marker is below the active segment, then clean.
    log.set_config(LogConfig { segment_ms: -1, ..compacted });
    keyed(b"c");
    log.set_config(compacted);
    assert!(bases(&log).len() > 4, "the transaction spans segments");
    let entry =
        AbortedTxn { producer_id: 5, first_offset: kept + 1, last_offset: abort, last_stable_offset: abort + 1 };
    assert_eq!(log.aborted_transactions(0, kept + 2), vec![entry]);
    let mut map = OffsetMap::new(1 << 20);
    log.clean(&mut map, None, 0).expect("clean").expect("a pass");
    // The data is gone from every segment; the marker and its index entry stay this pass.
    let mut offsets = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20, i64::MAX, true).expect("read");
        let mut bytes = Vec::new();
        slice.read_into(&mut bytes).expect("read_into");
        for item in crate::batch::batch_headers(&bytes) {
            let (_, header) = item.expect("header");
            if header.records_count > 0 {
                offsets.push(header.base_offset);
            }
        }
        offset = slice.last_offset + 1;
    }
    assert!(offsets.iter().all(|&o| o == kept || o >= abort), "aborted data left: {offsets:?}");
    assert!(offsets.contains(&after));
    assert_eq!(log.aborted_transactions(0, i64::MAX), vec![entry]);
    assert_eq!(read_committed(&log, 0, log.last_stable_offset(), 300), vec![kept, after, after + 1]);
}
