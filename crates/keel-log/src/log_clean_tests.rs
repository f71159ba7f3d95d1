//! Tests of `Log::clean`: compaction keeps the latest record per key at its offset, drops
//! tombstones and aborted transactions after their horizons, keeps producer state, survives
//! crashes at every step of the swap, and matches a model under random operations.

use super::*;
use crate::builder::{build_batch, build_producer_batch, Producer};
use crate::cleaner::{parse_records, OffsetMap};
use crate::producer::{Marker, Origin};
use crate::sim_storage::{PowerLoss, SimHandle, SimStorage};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::time::SystemTime;

const DAY_MS: i64 = 86_400_000;

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn compacted(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 64,
        file_delete_delay_ms: 0,
        compaction: CompactionPolicy { compact: true, ..CompactionPolicy::default() },
        retention: RetentionPolicy { delete: false, ..RetentionPolicy::default() },
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, "topic-id", config, i64::MAX, 0, wall_ms()).expect("open")
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// Appends one batch of (key, value) records; returns its base offset.
fn put(log: &Log, records: &[(u8, Option<&[u8]>)]) -> i64 {
    let keys: Vec<Vec<u8>> = records.iter().map(|(k, _)| key(*k)).collect();
    let mut batch =
        build_batch(keys.iter().zip(records).map(|(k, (_, v))| (Some(&k[..]), *v)), wall_ms()).expect("batch");
    log.append(&mut batch, 0, wall_ms()).expect("append").base_offset
}

type Record = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record readable from the log start, with its offset, key and value.
fn records(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20, i64::MAX, true).expect("read");
        if slice.is_empty() {
            break;
        }
        let mut bytes = Vec::new();
        slice.read_into(&mut bytes).expect("read_into");
        let mut position = 0;
        while position < bytes.len() {
            let header = crate::batch::check_stored_batch(&bytes[position..], position).expect("a valid batch");
            let batch = &bytes[position..position + header.size()];
            if !header.is_control() {
                let parsed =
                    parse_records(&batch[crate::batch::HEADER_BYTES..], header.base_offset, header.records_count)
                        .expect("records");
                for r in parsed {
                    assert!(r.offset <= header.last_offset(), "a record past its batch's last offset");
                    out.push((r.offset, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
                }
            }
            position += header.size();
        }
        offset = slice.last_offset + 1;
    }
    out
}

fn clean(log: &Log, now_ms: i64) -> Option<CleanReport> {
    let mut map = OffsetMap::new(1 << 20);
    log.clean(&mut map, None, now_ms).expect("clean")
}

#[test]
fn compaction_keeps_the_latest_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compacted(400));
    let mut latest = BTreeMap::new();
    for round in 0..30u8 {
        let value = vec![round; 10];
        let offset = put(&log, &[(round % 5, Some(&value))]);
        latest.insert(round % 5, (offset, value));
    }
    assert!(log.segment_count() > 3);
    let end = log.log_end_offset();
    let before = records(&log);
    let report = clean(&log, wall_ms()).expect("a pass");
    assert!(report.records_removed > 0 && report.segments_cleaned > 1);
    assert_eq!(log.log_end_offset(), end, "offsets never renumber");
    let after = records(&log);
    let active_base = *log.segment_base_offsets().last().expect("segments");
    for (k, (offset, value)) in &latest {
        assert!(after.contains(&(*offset, Some(key(*k)), Some(value.clone()))), "latest of key {k}");
    }
    // Below the cleaned point one record per key; above it, everything as it was.
    let cleaned: Vec<_> = after.iter().filter(|r| r.0 < report.end_offset).collect();
    let mut keys: Vec<_> = cleaned.iter().map(|r| r.1.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), cleaned.len());
    assert_eq!(report.end_offset, active_base);
    let uncleaned = |rs: &[Record]| rs.iter().filter(|r| r.0 >= report.end_offset).cloned().collect::<Vec<_>>();
    assert_eq!(uncleaned(&after), uncleaned(&before));
    assert_eq!(log.cleaner_checkpoint(), Some(report.end_offset));
    // Nothing left to do until more is written.
    assert_eq!(clean(&log, wall_ms()), None);
    // Every read offset works, gaps included.
    for offset in 0..end {
        let slice = log.read(offset, 1 << 20, i64::MAX, true).expect("read");
        assert!(slice.is_empty() || slice.last_offset >= offset);
    }
    // And after a reopen.
    drop(log);
    let log = open(dir.path(), compacted(400));
    assert_eq!(records(&log), after);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn tombstones_go_after_delete_retention_and_take_older_values_with_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compacted(300));
    put(&log, &[(1, Some(b"one")), (2, Some(b"two"))]);
    let tombstone = put(&log, &[(1, None)]);
    for i in 0..20u8 {
        put(&log, &[(3, Some(&[i; 20]))]);
    }
    clean(&log, wall_ms()).expect("a pass");
    let after = records(&log);
    assert!(after.contains(&(tombstone, Some(key(1)), None)), "kept within delete.retention.ms");
    assert!(!after.iter().any(|r| r.1 == Some(key(1)) && r.2.is_some()), "the older value of 1 is gone");
    // A day later the tombstone may go: the pass runs for it although nothing is dirty.
    assert_eq!(log.cleaning_priority(wall_ms()).expect("priority"), None);
    let later = wall_ms() + DAY_MS + 1_000;
    assert!(log.cleaning_priority(later).expect("priority").is_some());
    clean(&log, later).expect("a pass for the tombstone");
    let after = records(&log);
    assert!(!after.iter().any(|r| r.1 == Some(key(1))), "tombstone removed: {after:?}");
    assert!(after.iter().any(|r| r.1 == Some(key(2))));
}

#[test]
fn aborted_transactions_vanish_and_their_markers_go_a_pass_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compacted(100_000));
    let txn = |pid: i64, seq: i32, k: u8, v: &[u8]| {
        let keyed = key(k);
        let mut batch = build_producer_batch(
            [(Some(&keyed[..]), Some(v))],
            wall_ms(),
            Producer { id: pid, epoch: 0, base_sequence: seq },
            true,
        )
        .expect("batch");
        log.append(&mut batch, 0, wall_ms()).expect("append").base_offset
    };
    let committed = txn(7, 0, 1, b"committed");
    let aborted = txn(8, 0, 2, b"aborted");
    let aborted_too = txn(8, 1, 1, b"aborted");
    log.append_marker(8, 0, Marker { commit: false, coordinator_epoch: 0 }, 0, wall_ms()).expect("abort");
    log.append_marker(7, 0, Marker { commit: true, coordinator_epoch: 0 }, 0, wall_ms()).expect("commit");
    // Producer 8 writes on, so its aborted batches are not its last (those stay, emptied, for
    // its state, and with them the marker, as in Kafka).
    let mut later = build_producer_batch(
        [(Some(&key(5)[..]), Some(&b"later"[..]))],
        wall_ms(),
        Producer { id: 8, epoch: 0, base_sequence: 2 },
        false,
    )
    .expect("batch");
    log.append(&mut later, 0, wall_ms()).expect("append");
    let end = log.log_end_offset();
    // Roll so that everything is below the active segment.
    let roll = |log: &Log| {
        log.set_config(LogConfig { segment_ms: -1, ..compacted(100_000) });
        put(log, &[(9, Some(b"x"))]);
        log.set_config(compacted(100_000));
    };
    roll(&log);
    assert_eq!(log.aborted_transactions(0, end).len(), 1);
    clean(&log, wall_ms()).expect("a pass");
    let after = records(&log);
    assert!(after.contains(&(committed, Some(key(1)), Some(b"committed".to_vec()))), "{after:?}");
    assert!(!after.iter().any(|r| r.0 == aborted || r.0 == aborted_too), "aborted data removed");
    // The abort marker stays this pass (its data was removed now) and stays indexed.
    assert_eq!(log.aborted_transactions(0, end).len(), 1);
    let markers = |log: &Log| {
        let slice = log.read(0, 1 << 20, end, true).expect("read");
        let mut bytes = Vec::new();
        slice.read_into(&mut bytes).expect("bytes");
        batch_headers(&bytes).filter_map(Result::ok).filter(|(_, h)| h.is_control()).count()
    };
    assert_eq!(markers(&log), 2);
    // Past delete.retention.ms, with the data gone: the abort marker goes; the commit marker
    // stays while its transaction's (empty, producer-state) batch is still traversed.
    roll(&log);
    clean(&log, wall_ms() + DAY_MS + 1_000).expect("a second pass");
    assert!(markers(&log) < 2, "the abort marker is removed");
    assert!(log.aborted_transactions(0, end).is_empty());
    assert!(records(&log).contains(&(committed, Some(key(1)), Some(b"committed".to_vec()))));
}

#[test]
fn the_last_batch_of_a_producer_stays_so_its_state_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compacted(200));
    let keyed = key(1);
    let mut batch = build_producer_batch(
        [(Some(&keyed[..]), Some(&b"old"[..])), (Some(&keyed[..]), Some(&b"older"[..]))],
        wall_ms(),
        Producer { id: 42, epoch: 3, base_sequence: 10 },
        false,
    )
    .expect("batch");
    let producer_batch = log.append(&mut batch, 0, wall_ms()).expect("append");
    for i in 0..10u8 {
        put(&log, &[(1, Some(&[i; 30]))]);
    }
    clean(&log, wall_ms()).expect("a pass");
    assert!(!records(&log).iter().any(|r| r.0 <= producer_batch.last_offset), "its records are superseded");
    // The empty batch header is still there, with the producer's fields and last offset.
    let slice = log.read(0, 1 << 20, i64::MAX, true).expect("read");
    let mut bytes = Vec::new();
    slice.read_into(&mut bytes).expect("bytes");
    let header = crate::batch::check_stored_batch(&bytes, 0).expect("header");
    assert_eq!((header.producer_id, header.records_count), (42, 0));
    assert_eq!(header.last_offset(), producer_batch.last_offset);
    drop(log);
    // Without snapshots the state comes from replaying the log.
    for entry in fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            fs::remove_file(path).expect("remove");
        }
    }
    let log = open(dir.path(), compacted(200));
    let entry = log.producer_states().entry(42).cloned().expect("producer 42 is remembered");
    assert_eq!((entry.epoch, entry.last_seq(), entry.last_offset()), (3, 11, producer_batch.last_offset));
    // Its next sequence is accepted, a gap is not.
    let next = |seq| {
        build_producer_batch(
            [(Some(&keyed[..]), Some(&b"n"[..]))],
            wall_ms(),
            Producer { id: 42, epoch: 3, base_sequence: seq },
            false,
        )
        .expect("batch")
    };
    assert!(log.append_from(&mut next(13), 0, wall_ms(), Origin::Client).is_err());
    log.append_from(&mut next(12), 0, wall_ms(), Origin::Client).expect("in sequence");
}

#[test]
fn a_read_in_progress_survives_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig { file_delete_delay_ms: 60_000, ..compacted(300) });
    for i in 0..20u8 {
        put(&log, &[(i % 2, Some(&[i; 20]))]);
    }
    let slice = log.read(0, 1 << 20, i64::MAX, true).expect("read");
    let before = {
        let mut bytes = Vec::new();
        slice.read_into(&mut bytes).expect("bytes");
        bytes
    };
    clean(&log, wall_ms()).expect("a pass");
    let replaced = fs::read_dir(dir.path())
        .expect("dir")
        .filter(|e| e.as_ref().expect("entry").file_name().to_string_lossy().ends_with(".replaced.deleted"))
        .count();
    assert!(replaced > 0, "old files wait for file.delete.delay.ms");
    let mut again = Vec::new();
    slice.read_into(&mut again).expect("the old file is still readable");
    assert_eq!(again, before);
    assert!(log.remove_deleted_files(wall_ms() + 61_000).expect("sweep") > 0);
}

/// The files of `dir` (name → bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).expect("read"))
        })
        .collect()
}

fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).expect("write");
    }
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_the_old_or_the_new_segments() {
    let source = tempfile::tempdir().expect("tempdir");
    let log = open(source.path(), LogConfig { file_delete_delay_ms: 3_600_000, ..compacted(300) });
    for i in 0..40u8 {
        put(&log, &[(i % 3, Some(&[i; 16]))]);
    }
    log.close().expect("close");
    let old_files = files(source.path());
    let old_records = records(&log);
    // One group: the cleaned segment may be as large as all the old ones.
    log.set_config(LogConfig { file_delete_delay_ms: 3_600_000, ..compacted(100_000) });
    let report = clean(&log, wall_ms()).expect("a pass");
    assert_eq!(report.segments_written, 1, "one group: {report:?}");
    log.close().expect("close");
    let new_records = records(&log);
    assert_ne!(old_records, new_records);
    drop(log);
    let after = files(source.path());
    let base = format!("{:020}", 0);
    let new_segment: BTreeMap<String, Vec<u8>> = ["log", "index", "timeindex"]
        .iter()
        .map(|ext| (ext.to_string(), after[&format!("{base}.{ext}")].clone()))
        .collect();
    let replaces = format!("{}\n", report.end_offset).into_bytes();
    let old_bases: Vec<String> = old_files
        .keys()
        .filter_map(|n| n.strip_suffix(".log"))
        .filter(|b| b.parse::<i64>().expect("base") < report.end_offset)
        .map(str::to_string)
        .collect();
    assert!(old_bases.len() > 1);

    // (name of the case, suffix of the new files, whether replaces survives, old segments
    // renamed away, expected records)
    let cases: Vec<(&str, &str, bool, usize, &Vec<Record>)> = vec![
        ("cleaned files only", ".cleaned", true, 0, &old_records),
        ("swap committed", ".swap", true, 0, &new_records),
        ("swap committed, replaces lost", ".swap", false, 0, &new_records),
        ("some old segments renamed", ".swap", true, 1, &new_records),
        ("every old segment renamed", ".swap", true, old_bases.len(), &new_records),
    ];
    for (name, suffix, with_replaces, renamed, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        write_files(dir.path(), &old_files);
        for (ext, bytes) in &new_segment {
            fs::write(dir.path().join(format!("{base}.{ext}{suffix}")), bytes).expect("write");
        }
        if with_replaces {
            fs::write(dir.path().join(format!("{base}.replaces{suffix}")), &replaces).expect("write");
        }
        for old in old_bases.iter().take(renamed) {
            for ext in ["log", "index", "timeindex"] {
                let path = dir.path().join(format!("{old}.{ext}"));
                fs::rename(&path, dir.path().join(format!("{old}.{ext}.replaced.deleted"))).expect("rename");
            }
        }
        // An unclean open: everything is revalidated.
        let log = Log::open(dir.path(), "topic-id", compacted(300), 0, 0, wall_ms()).expect("open");
        assert_eq!(&records(&log), expected, "{name}");
        let leftovers: Vec<String> = files(dir.path())
            .into_keys()
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Records (key, value or tombstone) in one batch.
    Append(Vec<(u8, Option<u8>)>),
    Clean {
        days_later: bool,
    },
    Reopen {
        keep_checkpoint: bool,
    },
    /// Replica truncation to `back` offsets before the end (never below what was cleaned: a
    /// cleaned key's older values are gone for good, in Kafka too).
    Truncate {
        back: u8,
    },
    /// DeleteRecords to `ahead` offsets above the log start, then a retention pass, which
    /// deletes the segments wholly below the new log start.
    DeleteBefore {
        ahead: u8,
    },
    /// An `acks=all` wait: everything appended is fsynced.
    Flush,
    /// The machine loses power (what was not fsynced goes, or with `torn` a random prefix of
    /// it stays) and the log reopens from its checkpoints.
    PowerLoss {
        torn: bool,
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..6, proptest::option::weighted(0.8, any::<u8>())), 1..4).prop_map(Op::Append),
        2 => any::<bool>().prop_map(|days_later| Op::Clean { days_later }),
        1 => any::<bool>().prop_map(|keep_checkpoint| Op::Reopen { keep_checkpoint }),
        1 => (0u8..8).prop_map(|back| Op::Truncate { back }),
        1 => (0u8..8).prop_map(|ahead| Op::DeleteBefore { ahead }),
        1 => Just(Op::Flush),
        1 => (any::<bool>(), any::<u64>()).prop_map(|(torn, seed)| Op::PowerLoss { torn, seed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        ..ProptestConfig::default()
    })]

    /// The log against a model (every record ever appended, by offset) under random appends,
    /// rolls (small segments), compaction passes, reopens, truncations, DeleteRecords with
    /// retention, flushes and power losses (on the simulated file system): a power loss keeps
    /// at least everything flushed, and the model loses what the log lost past that; reads
    /// from the log start return only appended records at their offsets;
    /// above the cleaner checkpoint everything; below it, at most one record per key, the
    /// key's last below the checkpoint (a tombstone only while `delete.retention.ms` lasts);
    /// every key's latest value always; the log end is the model's.
    #[test]
    fn compaction_matches_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let sim = SimStorage::new();
        let storage = SimHandle::shared(&sim);
        let dir = Path::new("/data/t-0");
        let config = compacted(250);
        let open_at = |recovery_point: i64, log_start: i64| {
            Log::open_in(Arc::clone(&storage), dir, "topic-id", config, recovery_point, log_start, wall_ms())
                .expect("open")
        };
        let mut log = open_at(i64::MAX, 0);
        let mut model: Vec<Record> = Vec::new();
        let mut tombstones_may_go = false;
        let mut cleaned_upto = 0;
        for op in ops {
            match op {
                Op::Append(records) => {
                    let owned: Vec<(u8, Option<Vec<u8>>)> =
                        records.iter().map(|(k, v)| (*k, v.map(|v| vec![v; 8]))).collect();
                    let borrowed: Vec<(u8, Option<&[u8]>)> = owned.iter().map(|(k, v)| (*k, v.as_deref())).collect();
                    let base = put(&log, &borrowed);
                    for (i, (k, v)) in owned.into_iter().enumerate() {
                        model.push((base + i as i64, Some(key(k)), v));
                    }
                }
                Op::Clean { days_later } => {
                    let now = if days_later { wall_ms() + 2 * DAY_MS } else { wall_ms() };
                    tombstones_may_go |= days_later;
                    clean(&log, now);
                }
                Op::Reopen { keep_checkpoint } => {
                    let checkpoint = log.cleaner_checkpoint();
                    // The log start offset comes from its checkpoint file, as LogManager keeps it.
                    let log_start = log.log_start_offset();
                    log.close().expect("close");
                    drop(log);
                    log = open_at(i64::MAX, log_start);
                    if keep_checkpoint {
                        log.set_cleaner_checkpoint(checkpoint);
                    }
                }
                Op::Flush => {
                    log.flush_to(i64::MAX).expect("flush");
                }
                Op::PowerLoss { torn, seed } => {
                    // The checkpoints as LogManager would have written them just before.
                    let durable = log.durable_offset();
                    let log_start = log.log_start_offset();
                    let checkpoint = log.cleaner_checkpoint();
                    drop(log);
                    sim.power_loss(if torn { PowerLoss::Torn(seed) } else { PowerLoss::DropUnsynced });
                    log = open_at(durable, log_start);
                    let end = log.log_end_offset();
                    prop_assert!(end >= durable, "a power loss took fsynced offsets: end {} < durable {}", end, durable);
                    log.set_cleaner_checkpoint(checkpoint.filter(|&c| c <= end));
                    model.retain(|r| r.0 < end);
                    cleaned_upto = cleaned_upto.min(end);
                }
                Op::Truncate { back } => {
                    let floor = cleaned_upto.max(log.cleaner_checkpoint().unwrap_or(0));
                    let target = (log.log_end_offset() - i64::from(back)).max(floor);
                    // The cleaner's checkpoint may sit inside a batch (it follows the log start):
                    // skip a cut that would land below it.
                    // (Also below the log start, where reads are refused.)
                    let cut = match log.batch_containing(target).expect("batch") {
                        Some((base_offset, _)) => base_offset.min(target),
                        None => target,
                    };
                    if cut < floor {
                        continue;
                    }
                    log.truncate_to(target).expect("truncate");
                    let end = log.log_end_offset();
                    // Cut at the start of the batch holding the target; the cleaned range ends
                    // at a segment boundary, so the cut is never inside it. Below the log start,
                    // the log start comes down with the end (as Kafka's truncateTo).
                    prop_assert!(end <= target && end >= floor, "cut at the batch holding {}: end {}", target, end);
                    prop_assert!(log.log_start_offset() <= end);
                    model.retain(|r| r.0 < end);
                }
                Op::DeleteBefore { ahead } => {
                    let target = (log.log_start_offset() + i64::from(ahead)).min(log.log_end_offset());
                    let start = log.delete_records_before(target).expect("delete records");
                    prop_assert_eq!(start, target.max(log.log_start_offset()));
                    log.delete_old_segments(wall_ms()).expect("retention");
                    log.remove_deleted_files(i64::MAX).expect("remove deleted files");
                    prop_assert_eq!(log.log_start_offset(), start, "retention never moves the log start back");
                }
            }
            // Reads start at the log start offset: compare from there (the first batch may
            // begin below it, as in Kafka, where consumers skip those records).
            let log_start = log.log_start_offset();
            let visible: Vec<&Record> = model.iter().filter(|r| r.0 >= log_start).collect();
            let read: Vec<Record> = records(&log).into_iter().filter(|r| r.0 >= log_start).collect();
            let by_offset: BTreeMap<i64, &Record> = visible.iter().map(|r| (r.0, *r)).collect();
            for record in &read {
                prop_assert_eq!(Some(&record), by_offset.get(&record.0), "only appended records, at their offsets");
            }
            cleaned_upto = cleaned_upto.max(log.cleaner_checkpoint().unwrap_or(0));
            let checkpoint = cleaned_upto;
            let above: Vec<&Record> = visible.iter().copied().filter(|r| r.0 >= checkpoint).collect();
            let read_above: Vec<&Record> = read.iter().filter(|r| r.0 >= checkpoint).collect();
            prop_assert_eq!(above, read_above, "nothing at or above the checkpoint is cleaned");
            let mut last_below: BTreeMap<&Option<Vec<u8>>, &Record> = BTreeMap::new();
            for record in visible.iter().copied().filter(|r| r.0 < checkpoint) {
                last_below.insert(&record.1, record);
            }
            for record in read.iter().filter(|r| r.0 < checkpoint) {
                prop_assert_eq!(Some(&record), last_below.get(&record.1), "below the checkpoint only a key's last record");
            }
            for (key, last) in &last_below {
                let present = read.iter().any(|r| r == *last);
                prop_assert!(present || (last.2.is_none() && tombstones_may_go), "key {:?}'s last record {:?} is missing", key, last);
            }
            prop_assert_eq!(log.log_end_offset(), model.len() as i64, "offsets never renumber");
        }
    }
}

/// A truncation to the active segment's base leaves it empty: a pass cleans the segments below
/// it, records its checkpoint, and never counts the empty active segment in.
#[test]
fn a_pass_after_a_truncation_to_the_active_segments_base_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), compacted(250));
    let v: &[u8] = &[0u8; 8];
    for records in [
        vec![(0u8, Some(v))],
        vec![(0, Some(v))],
        vec![(0, Some(v)), (0, None)],
        vec![(0, Some(v))],
        vec![(0, Some(v))],
        vec![(0, Some(v))],
        vec![(0, None), (0, Some(v))],
    ] {
        put(&log, &records);
    }
    let bases = log.segment_base_offsets();
    let last_base = *bases.last().expect("segments");
    log.truncate_to(last_base).expect("truncate");
    assert_eq!(log.log_end_offset(), last_base);
    let report = clean(&log, wall_ms()).expect("a pass");
    assert!(!report.abandoned, "{report:?}");
    assert_eq!(report.end_offset, last_base);
    assert_eq!(log.cleaner_checkpoint(), Some(last_base));
    let offsets: Vec<i64> = records(&log).iter().map(|r| r.0).collect();
    assert_eq!(offsets, [last_base - 1], "only the key's latest record");
}
