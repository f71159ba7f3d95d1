//! Fault injection: the log on the simulated file system (`sim_storage.rs`), with each fault
//! the file layer can have: the Nth write failing (cleanly or torn at a byte), the Nth fsync
//! failing, the disk filling up, and power lost at any point, with what was not fsynced
//! dropped or a random prefix of it kept.
//!
//! Every test checks the same promises: no acknowledged record is lost (an `acks=all`
//! acknowledgement is an append followed by a successful `flush_to`), nothing torn or corrupt
//! is ever returned by a read, the log reopens cleanly after a crash (kill -9 keeps the page
//! cache; a power loss does not), and the reopened log takes new appends and still knows the
//! producers (a retried batch is a duplicate).

use std::collections::BTreeMap;

use super::*;
use crate::batch::check_stored_batch;
use crate::builder::{build_marker_batch, build_producer_batch, Producer};
use crate::manager::LogManager;
use crate::producer::Marker;
use crate::sim_storage::{PowerLoss, SimHandle, SimStorage};

const DIR: &str = "/data/t-0";
/// Operations of the full workload: enough for several rolls, snapshots, transactions and a
/// leader epoch change.
const STEPS: usize = 36;
/// Where the leader epoch goes from 0 to 1 (a leader-epoch checkpoint write).
const EPOCH_CHANGE_STEP: usize = 12;

fn config() -> LogConfig {
    // Small segments and a dense index: rolls, snapshots and index writes happen often.
    LogConfig { segment_bytes: 2048, index_interval_bytes: 200, ..LogConfig::default() }
}

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

/// What step `step` of the workload writes: mostly idempotent batches of producer 9, and a
/// transaction of producer 7 every six steps, committed or aborted in turn.
enum Op {
    Idempotent { seq: i32 },
    Transactional { seq: i32 },
    Marker { commit: bool },
}

fn op(step: usize) -> Op {
    let round = (step / 6) as i32;
    match step % 6 {
        2 => Op::Transactional { seq: round },
        4 => Op::Marker { commit: round % 2 == 0 },
        // Two records a batch; steps 0, 1, 3 and 5 of each round are producer 9's.
        r => Op::Idempotent { seq: 2 * (4 * round + [0, 1, 0, 2, 0, 3][r]) },
    }
}

fn idempotent_batch(seq: i32) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..2).map(|i| vec![(seq + i) as u8; 150]).collect();
    let producer = Producer { id: 9, epoch: 0, base_sequence: seq };
    build_producer_batch(values.iter().map(|v| (Some(&b"k"[..]), Some(&v[..]))), 1000, producer, false).expect("batch")
}

fn batch_for(op: &Op, now_ms: i64) -> (Vec<u8>, Origin) {
    match *op {
        Op::Idempotent { seq } => (idempotent_batch(seq), Origin::Client),
        Op::Transactional { seq } => {
            let producer = Producer { id: 7, epoch: 0, base_sequence: seq };
            let value = [seq as u8; 80];
            let batch = build_producer_batch([(None, Some(&value[..]))], now_ms, producer, true).expect("batch");
            (batch, Origin::Client)
        }
        Op::Marker { commit } => {
            (build_marker_batch(7, 0, Marker { commit, coordinator_epoch: 0 }, now_ms), Origin::Coordinator)
        }
    }
}

/// The workload's log and what it acknowledged.
struct Workload {
    log: Log,
    step: usize,
    /// (base offset, bytes as stored) of every acknowledged batch.
    acked: Vec<(i64, Vec<u8>)>,
    /// The sequence of producer 9's last acknowledged batch.
    last_acked_seq: Option<i32>,
}

impl Workload {
    fn open(storage: &Arc<dyn Storage>) -> Result<Workload, LogError> {
        let log = Log::open_in(Arc::clone(storage), &dir(), "topic-id", config(), 0, 0, 0)?;
        Ok(Workload { log, step: 0, acked: Vec::new(), last_acked_seq: None })
    }

    /// Tries the next operation as an `acks=all` producer would: append, then wait for the
    /// fsync. On an error the same operation is tried again by the next call.
    fn attempt(&mut self) -> Result<(), LogError> {
        let now_ms = 1000 + self.step as i64;
        let leader_epoch = i32::from(self.step >= EPOCH_CHANGE_STEP);
        let op = op(self.step);
        let (mut batch, origin) = batch_for(&op, now_ms);
        let info = self.log.append_from(&mut batch, leader_epoch, now_ms, origin)?;
        assert!(!info.duplicate, "step {}: nothing acknowledged is ever retried", self.step);
        self.log.flush_to(info.log_end_offset)?;
        self.acked.push((info.base_offset, batch));
        if let Op::Idempotent { seq } = op {
            self.last_acked_seq = Some(seq);
        }
        self.step += 1;
        Ok(())
    }

    /// The process dies: what it acknowledged, and the durable offset its last checkpoint
    /// could have recorded.
    fn finish(self) -> RunResult {
        let recovery_point = self.log.durable_offset();
        RunResult { acked: self.acked, last_acked_seq: self.last_acked_seq, recovery_point }
    }

    /// Runs up to `steps` operations, retrying a failed one twice; stops at the first
    /// operation that fails three times or when the log has failed. Returns that error.
    fn run(&mut self, steps: usize) -> Option<LogError> {
        let mut failures = 0;
        while self.step < steps {
            match self.attempt() {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    if failures == 3 || matches!(error, LogError::Failed { .. }) {
                        return Some(error);
                    }
                }
            }
        }
        None
    }
}

/// Every batch a reader gets from the log, checked whole (header, CRC, counts), keyed by base
/// offset. Offsets increase from batch to batch.
fn read_checked(log: &Log) -> BTreeMap<i64, Vec<u8>> {
    let mut batches = BTreeMap::new();
    let mut offset = log.log_start_offset();
    let mut next_expected = offset;
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20, i64::MAX, true).expect("read");
        assert!(!slice.is_empty(), "an empty read below the log end at {offset}");
        let mut bytes = Vec::new();
        slice.read_into(&mut bytes).expect("read_into");
        let mut position = 0;
        while position < bytes.len() {
            let header = check_stored_batch(&bytes[position..], position).expect("every batch read is whole and valid");
            assert!(header.base_offset >= next_expected, "offsets go backwards at {}", header.base_offset);
            next_expected = header.last_offset() + 1;
            batches.insert(header.base_offset, bytes[position..position + header.size()].to_vec());
            position += header.size();
        }
        offset = slice.last_offset + 1;
    }
    batches
}

fn assert_acked_present(log: &Log, acked: &[(i64, Vec<u8>)], context: &str) {
    let batches = read_checked(log);
    for (base_offset, bytes) in acked {
        match batches.get(base_offset) {
            Some(found) => assert_eq!(found, bytes, "{context}: acknowledged batch at {base_offset} changed"),
            None => panic!("{context}: acknowledged batch at {base_offset} lost (log end {})", log.log_end_offset()),
        }
    }
}

/// Reopens the log as a restarted broker would (from `recovery_point`, the last checkpointed
/// durable offset), and checks the promises. The batch it acknowledges on the reopened log
/// joins `acked`, for the next crash to check. Returns the reopened log.
fn reopen_and_check(
    storage: &Arc<dyn Storage>,
    recovery_point: i64,
    acked: &mut Vec<(i64, Vec<u8>)>,
    last_acked_seq: Option<i32>,
    context: &str,
) -> Log {
    let log = Log::open_in(Arc::clone(storage), &dir(), "topic-id", config(), recovery_point, 0, 0)
        .unwrap_or_else(|e| panic!("{context}: the log does not reopen: {e}"));
    assert_acked_present(&log, acked, context);
    // The producer state survived: the last acknowledged batch, retried, is a duplicate.
    if let (Some(seq), Some((base_offset, _))) =
        (last_acked_seq, acked.iter().rev().find(|(_, b)| BatchHeader::parse(b).is_ok_and(|h| h.producer_id == 9)))
    {
        let info = log.append(&mut idempotent_batch(seq), 1, 0).expect("retry");
        assert!(info.duplicate, "{context}: the retried batch {seq} was written again");
        assert_eq!(info.base_offset, *base_offset, "{context}");
    }
    // The log takes new writes, durably.
    let mut fresh = crate::testing::test_batch(2, 5000, 40);
    let info = log.append(&mut fresh, 1, 0).unwrap_or_else(|e| panic!("{context}: append after reopen: {e}"));
    log.flush_to(info.log_end_offset).unwrap_or_else(|e| panic!("{context}: flush after reopen: {e}"));
    acked.push((info.base_offset, fresh));
    read_checked(&log);
    log
}

/// What is left after a run: the acknowledged batches and the durable offset a checkpoint
/// could have recorded.
struct RunResult {
    acked: Vec<(i64, Vec<u8>)>,
    last_acked_seq: Option<i32>,
    recovery_point: i64,
}

/// Opens and runs the workload on `sim`; the live log (if it opened and has not failed) must
/// still hold every acknowledged batch, and a clean close is attempted at the end.
fn run_workload(sim: &Arc<SimStorage>, steps: usize, close: bool, context: &str) -> RunResult {
    let storage = SimHandle::shared(sim);
    let Ok(mut workload) = Workload::open(&storage) else {
        return RunResult { acked: Vec::new(), last_acked_seq: None, recovery_point: 0 };
    };
    let error = workload.run(steps);
    if !matches!(error, Some(LogError::Failed { .. })) {
        // Reads go on after a failed write.
        assert_acked_present(&workload.log, &workload.acked, context);
    }
    if close {
        let _ = workload.log.close();
    }
    workload.finish()
}

/// After a run: kill -9 (the page cache survives), then a power loss; both reopen cleanly with
/// every acknowledged batch.
fn crash_then_power_loss(sim: &Arc<SimStorage>, run: &RunResult, context: &str) {
    let storage = SimHandle::shared(sim);
    let mut acked = run.acked.clone();
    let log =
        reopen_and_check(&storage, run.recovery_point, &mut acked, run.last_acked_seq, &format!("{context}, kill -9"));
    let recovery_point = log.durable_offset();
    drop(log);
    sim.power_loss(PowerLoss::DropUnsynced);
    reopen_and_check(&storage, recovery_point, &mut acked, run.last_acked_seq, &format!("{context}, power loss"));
}

/// Counts the writes and fsyncs of the whole workload without faults.
fn clean_run_counts() -> (u64, u64) {
    let sim = SimStorage::new();
    let run = run_workload(&sim, STEPS, true, "clean run");
    assert_eq!(run.acked.len(), STEPS, "the clean run acknowledges everything");
    (sim.writes(), sim.syncs())
}

#[test]
fn the_clean_workload_survives_crash_and_power_loss() {
    let sim = SimStorage::new();
    let run = run_workload(&sim, STEPS, true, "clean");
    assert!(sim.writes() > 100 && sim.syncs() > 30, "the workload writes and syncs a lot");
    let log = Log::open_in(SimHandle::shared(&sim), &dir(), "topic-id", config(), 0, 0, 0).expect("open");
    assert!(log.segment_count() > 3, "the workload rolls segments");
    assert!(!log.aborted_transactions(0, i64::MAX).is_empty(), "and aborts transactions");
    drop(log);
    crash_then_power_loss(&sim, &run, "clean");
}

/// Runs the workload once per write it makes, failing that write after `keep_bytes(n)` of its
/// bytes, and checks the promises after each.
fn fail_every_write(keep_bytes: impl Fn(u64) -> usize) {
    let (writes, _) = clean_run_counts();
    for n in 0..writes {
        let sim = SimStorage::new();
        let keep = keep_bytes(n);
        sim.fail_write(n, keep);
        let context = format!("write {n} failed after {keep} bytes");
        let run = run_workload(&sim, STEPS, true, &context);
        crash_then_power_loss(&sim, &run, &context);
    }
}

#[test]
fn a_failed_write_anywhere_loses_nothing_acknowledged() {
    fail_every_write(|_| 0);
}

#[test]
fn a_torn_write_anywhere_loses_nothing_acknowledged() {
    // Torn at a byte that moves around: inside headers, records and index entries.
    fail_every_write(|n| 1 + (n as usize * 37) % 300);
}

#[test]
fn a_failed_fsync_anywhere_fails_the_log_and_loses_nothing_acknowledged() {
    let (_, syncs) = clean_run_counts();
    let mut failed_logs = 0;
    for n in 0..syncs {
        let sim = SimStorage::new();
        sim.fail_sync(n);
        let context = format!("fsync {n} failed");
        let storage = SimHandle::shared(&sim);
        let Ok(mut workload) = Workload::open(&storage) else {
            crash_then_power_loss(
                &sim,
                &RunResult { acked: Vec::new(), last_acked_seq: None, recovery_point: 0 },
                &context,
            );
            continue;
        };
        let error = workload.run(STEPS);
        if let Some(LogError::Failed { .. }) = error {
            // After a failed fsync the log refuses everything until it is reopened.
            failed_logs += 1;
            assert!(matches!(workload.log.append(&mut idempotent_batch(0), 1, 0), Err(LogError::Failed { .. })));
            assert!(matches!(workload.log.flush_to(i64::MAX), Err(LogError::Failed { .. })));
        } else {
            assert_acked_present(&workload.log, &workload.acked, &context);
            let _ = workload.log.close();
        }
        let run = workload.finish();
        crash_then_power_loss(&sim, &run, &context);
    }
    assert!(failed_logs > 20, "most fsync faults hit a data flush ({failed_logs} of {syncs})");
}

#[test]
fn power_loss_at_any_point_loses_nothing_acknowledged() {
    for seed in 0..300u64 {
        let sim = SimStorage::new();
        let steps = 1 + (seed as usize * 7) % STEPS;
        let mode = if seed % 3 == 0 { PowerLoss::DropUnsynced } else { PowerLoss::Torn(seed) };
        let context = format!("power loss ({mode:?}) after {steps} steps");
        // Also a fault in the middle, now and then: a failed write the run recovers from.
        if seed % 4 == 1 {
            sim.fail_write(seed % 90, (seed % 120) as usize);
        }
        let run = run_workload(&sim, steps, seed % 5 == 0, &context);
        sim.power_loss(mode);
        let storage = SimHandle::shared(&sim);
        let mut acked = run.acked.clone();
        let log = reopen_and_check(&storage, run.recovery_point, &mut acked, run.last_acked_seq, &context);
        // And a second power loss right after recovery, before anything new is synced.
        let recovery_point = log.durable_offset();
        drop(log);
        sim.power_loss(PowerLoss::Torn(seed + 1));
        reopen_and_check(&storage, recovery_point, &mut acked, run.last_acked_seq, &format!("{context}, twice"));
    }
}

#[test]
fn a_full_disk_fails_appends_keeps_reads_and_recovers_when_space_frees() {
    // The space the workload has used after each step, from a clean run.
    let sim = SimStorage::new();
    let storage = SimHandle::shared(&sim);
    let mut workload = Workload::open(&storage).expect("open");
    let mut used = Vec::new();
    while workload.step < STEPS {
        workload.attempt().expect("clean step");
        used.push(sim.used_bytes());
    }
    let mut full_disks = 0;
    for (step, &used_bytes) in used.iter().enumerate() {
        for slack in [0, 50, 400] {
            let sim = SimStorage::new();
            let storage = SimHandle::shared(&sim);
            let context = format!("disk full at step {step} (+{slack} bytes)");
            sim.set_capacity(Some(used_bytes + slack));
            let Ok(mut workload) = Workload::open(&storage) else {
                panic!("{context}: the log opens with room for its first step");
            };
            let mut freed = false;
            while workload.step < STEPS {
                match workload.attempt() {
                    Ok(()) => {}
                    Err(error) if !freed => {
                        assert!(
                            matches!(&error, LogError::Io { source, .. } if source.raw_os_error() == Some(28)),
                            "{context}: expected ENOSPC, got {error}"
                        );
                        full_disks += 1;
                        // Reads go on, with everything acknowledged, and the disk is still full.
                        assert_acked_present(&workload.log, &workload.acked, &context);
                        assert!(workload.attempt().is_err(), "{context}: still full");
                        // Space frees: the same operation now succeeds, with no restart.
                        sim.set_capacity(None);
                        freed = true;
                    }
                    Err(error) => panic!("{context}: after space freed: {error}"),
                }
            }
            assert_eq!(workload.acked.len(), STEPS, "{context}");
            sim.set_capacity(None);
            let run = workload.finish();
            crash_then_power_loss(&sim, &run, &context);
        }
    }
    assert!(full_disks > STEPS, "most capacities fill the disk mid-run ({full_disks})");
}

#[test]
fn a_bit_flip_is_cut_by_recovery_and_never_served() {
    let sim = SimStorage::new();
    let run = run_workload(&sim, STEPS, false, "bit flip");
    let storage = SimHandle::shared(&sim);
    // Flip a bit in the last batch of the active segment; recovery from 0 re-validates all.
    let log = Log::open_in(Arc::clone(&storage), &dir(), "topic-id", config(), 0, 0, 0).expect("open");
    let last_base = *log.segment_base_offsets().last().expect("segments");
    let path = segment_path(&dir(), last_base, "log");
    let len = sim.contents(&path).expect("segment").len() as u64;
    drop(log);
    assert!(sim.flip_bit(&path, len - 3));
    let log = Log::open_in(Arc::clone(&storage), &dir(), "topic-id", config(), 0, 0, 0).expect("reopen");
    assert!(log.recovery_report().truncated_bytes > 0, "the flipped batch is cut");
    let kept = read_checked(&log);
    let (last_acked_base, _) = run.acked.last().expect("acked");
    assert!(!kept.contains_key(last_acked_base), "the flipped batch is not served");
    assert_acked_present(&log, &run.acked[..run.acked.len() - 1], "bit flip");
}

#[test]
fn the_manager_and_its_checkpoints_survive_power_loss() {
    let data_dir = Path::new("/data");
    for seed in 0..80u64 {
        let sim = SimStorage::new();
        let storage = SimHandle::shared(&sim);
        let manager = LogManager::open_in(Arc::clone(&storage), data_dir, config(), 0).expect("open");
        let shutdown = seed % 4 == 0;
        let context = format!("seed {seed}, clean shutdown {shutdown}");
        // Per partition: the acknowledged batches, and every appended one.
        let mut acked: [Vec<(i64, Vec<u8>)>; 2] = Default::default();
        let mut appended: [Vec<(i64, Vec<u8>)>; 2] = Default::default();
        for step in 0..(1 + seed % 40) {
            let partition = (step % 2) as usize;
            let log = manager.get_or_create("t", partition as i32, "topic-id", config()).expect("log");
            let mut batch = crate::testing::test_batch(2, 1000 + step as i64, 100 + step as usize);
            let info = log.append(&mut batch, 0, 0).expect("append");
            if step % 3 != 2 {
                log.flush_to(info.log_end_offset).expect("flush");
                acked[partition].push((info.base_offset, batch.clone()));
            }
            appended[partition].push((info.base_offset, batch));
            if step % 7 == 6 {
                manager.checkpoint().expect("checkpoint");
            }
        }
        if shutdown {
            manager.shutdown().expect("shutdown");
        }
        drop(manager);
        sim.power_loss(if seed % 2 == 0 { PowerLoss::DropUnsynced } else { PowerLoss::Torn(seed) });
        let manager = LogManager::open_in(Arc::clone(&storage), data_dir, config(), 0).expect("reopen");
        assert_eq!(manager.recovery_report().clean_shutdown, shutdown, "{context}");
        for partition in 0..2 {
            // After a clean shutdown everything appended is there, not only what was acked.
            let expected = if shutdown { &appended[partition] } else { &acked[partition] };
            match manager.get("t", partition as i32) {
                Some(log) => assert_acked_present(&log, expected, &context),
                None => assert!(expected.is_empty(), "{context}: partition {partition} lost"),
            }
        }
        // A second start after an unclean one is unclean too until a shutdown.
        drop(manager);
        let manager = LogManager::open_in(Arc::clone(&storage), data_dir, config(), 0).expect("reopen");
        assert!(!manager.recovery_report().clean_shutdown, "{context}");
    }
}

#[test]
fn a_corrupt_segment_below_the_recovery_point_is_recovered_not_refused() {
    let sim = SimStorage::new();
    let run = run_workload(&sim, STEPS, true, "corrupt trusted segment");
    let storage = SimHandle::shared(&sim);
    // Without snapshots the producer state is replayed from the first segment, whose second
    // batch gets a batch length that runs past the segment: a disk that changed fsynced data.
    for (name, _) in storage.list_dir(&dir()).expect("list") {
        if name.ends_with(".snapshot") {
            storage.remove_file(&dir().join(name)).expect("remove snapshot");
        }
    }
    let (second_base, _) = &run.acked[1];
    let first = segment_path(&dir(), 0, "log");
    let position = run.acked[0].1.len() as u64;
    assert!(sim.flip_bit(&first, position + 8), "the length field of the batch at {second_base}");
    // After a clean shutdown everything is trusted; the replay finds the bad header.
    let log = Log::open_in(Arc::clone(&storage), &dir(), "topic-id", config(), i64::MAX, 0, 0).expect("opens");
    let report = log.recovery_report();
    assert!(report.reopened_after_corruption && report.truncated_bytes > 0, "{report:?}");
    assert_eq!(log.log_end_offset(), *second_base, "cut at the corrupt batch");
    assert_acked_present(&log, &run.acked[..1], "corrupt trusted segment");
    let info = log.append(&mut crate::testing::test_batch(1, 0, 10), 1, 0).expect("append");
    assert_eq!(info.base_offset, *second_base);
}

#[test]
fn power_loss_in_the_middle_of_any_write_or_fsync_loses_nothing_acknowledged() {
    let (writes, syncs) = clean_run_counts();
    let faults = (0..writes).map(|n| (true, n)).chain((0..syncs).map(|n| (false, n)));
    for (i, (write, n)) in faults.enumerate() {
        let sim = SimStorage::new();
        // The fault marks the moment: the power goes as that write or fsync fails, with
        // whatever was not fsynced dropped or torn.
        if write {
            sim.fail_write(n, (n as usize * 13) % 200);
        } else {
            sim.fail_sync(n);
        }
        let context = format!("power loss at {} {n}", if write { "write" } else { "fsync" });
        let storage = SimHandle::shared(&sim);
        let run = match Workload::open(&storage) {
            Ok(mut workload) => {
                while workload.step < STEPS && workload.attempt().is_ok() {}
                workload.finish()
            }
            Err(_) => RunResult { acked: Vec::new(), last_acked_seq: None, recovery_point: 0 },
        };
        sim.power_loss(if i % 2 == 0 { PowerLoss::Torn(i as u64) } else { PowerLoss::DropUnsynced });
        let mut acked = run.acked.clone();
        drop(reopen_and_check(&storage, run.recovery_point, &mut acked, run.last_acked_seq, &context));
    }
}

#[test]
fn a_segment_created_before_a_kill_is_durable_once_the_next_flush_returns() {
    // A roll creates a segment; the process dies before any flush syncs the directory.
    let sim = SimStorage::new();
    let storage = SimHandle::shared(&sim);
    let log = Log::open_in(Arc::clone(&storage), &dir(), "topic-id", config(), 0, 0, 0).expect("open");
    while log.segment_count() < 2 {
        // Epoch 1, as the reopened log's appends: no epoch checkpoint (and its directory
        // fsync) after the restart.
        let mut batch = crate::testing::test_batch(2, 1000, 300);
        let info = log.append(&mut batch, 1, 0).expect("append");
        if log.segment_count() < 2 {
            log.flush_to(info.log_end_offset).expect("flush");
        }
    }
    let recovery_point = log.durable_offset();
    drop(log);
    // The restarted process acknowledges a batch in that segment, then the power goes.
    let mut acked = Vec::new();
    drop(reopen_and_check(&storage, recovery_point, &mut acked, None, "kill -9"));
    sim.power_loss(PowerLoss::DropUnsynced);
    drop(reopen_and_check(&storage, 0, &mut acked, None, "power loss"));
}
