//! Tests of `Log` on a full disk: a small tmpfs mounted for the test (root only; the tests say
//! why and pass without checking anything when the mount is refused). A failed append must
//! leave the files, the log end offset and the producer state as they were, keep reads
//! working, and succeed again once space frees, with nothing for recovery to cut.

use super::tests::read_all;
use super::*;
use crate::builder::{build_producer_batch, Producer};
use crate::producer::Marker;
use std::fs;
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn producer_batch(seq: i32, records: usize, payload: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records).map(|i| vec![(seq as usize + i) as u8; payload]).collect();
    let producer = Producer { id: 9, epoch: 0, base_sequence: seq };
    build_producer_batch(values.iter().map(|v| (None, Some(&v[..]))), 1000, producer, false).expect("batch")
}

fn is_no_space(error: &LogError) -> bool {
    matches!(error, LogError::Io { source, .. } if source.raw_os_error() == Some(28))
}

fn segment_files_total(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| fs::metadata(p).expect("metadata").len())
        .sum()
}

/// Appends producer batches of `payload`-byte records until the disk is full; returns the
/// appended bytes (as written, patched) and the sequence of the batch that failed.
fn fill(log: &Log, payload: usize) -> (Vec<u8>, i32) {
    let mut written = Vec::new();
    let mut seq = 0;
    for _ in 0..100_000 {
        let mut batch = producer_batch(seq, 4, payload);
        match log.append(&mut batch, 0, 0) {
            Ok(info) => {
                assert!(!info.duplicate);
                written.extend_from_slice(&batch);
                seq += 4;
            }
            Err(error) => {
                assert!(is_no_space(&error), "expected ENOSPC, got {error}");
                return (written, seq);
            }
        }
    }
    panic!("the disk never filled");
}

fn check_failed_append_left_no_trace(root: &Path, dir: &Path, config: LogConfig, payload: usize) {
    // The filler takes most of the space so that the log fills it quickly, and freeing it
    // later makes room again.
    let filler = root.join("filler");
    fs::write(&filler, vec![0u8; 160 << 10]).expect("filler");
    let log = Log::open(dir, "topic-id", config, 0, 0, 0).expect("open");
    let (written, failed_seq) = fill(&log, payload);
    assert!(!written.is_empty());
    let end = log.log_end_offset();

    // Nothing of the failed append is counted or left in the files.
    assert_eq!(log.producer_states().entry(9).expect("producer").last_seq(), failed_seq - 1);
    assert_eq!(segment_files_total(dir), log.size_bytes());
    assert_eq!(read_all(&log), written);
    assert_eq!(log.flush_to(end).expect("flush of what was written"), end);
    let again = log.append(&mut producer_batch(failed_seq, 4, payload), 0, 0).expect_err("still full");
    assert!(is_no_space(&again));
    assert_eq!(log.log_end_offset(), end);
    assert!(files_named(dir, ".tmp").is_empty(), "no half-written snapshot or checkpoint stays");

    // Space frees: the same batch (the producer's retry) goes in at the old end, no restart.
    fs::remove_file(&filler).expect("free space");
    let mut retry = producer_batch(failed_seq, 4, payload);
    let info = log.append(&mut retry, 0, 0).expect("append after space freed");
    assert_eq!((info.base_offset, info.duplicate), (end, false));
    let mut expected = written;
    expected.extend_from_slice(&retry);
    assert_eq!(read_all(&log), expected);
    log.flush_to(log.log_end_offset()).expect("flush");

    // A crash now: recovery re-validates everything and has nothing to cut.
    drop(log);
    let log = Log::open(dir, "topic-id", config, 0, 0, 0).expect("reopen");
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.producer_states().entry(9).expect("producer").last_seq(), failed_seq + 3);
}

fn files_named(dir: &Path, suffix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .collect()
}

#[test]
fn a_failed_append_on_a_full_disk_is_undone_and_retried_once_space_frees() {
    let Some(tmpfs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = tmpfs.path().join("t-0");
    // One segment: the failure is in the write of the batch itself.
    check_failed_append_left_no_trace(tmpfs.path(), &dir, LogConfig::default(), 700);
}

#[test]
fn a_full_disk_during_rolls_and_snapshots_leaves_a_consistent_log() {
    let Some(tmpfs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = tmpfs.path().join("t-0");
    // Small segments with dense indexes: rolls (producer snapshots, new files) and index
    // writes run into the full disk too.
    let config = LogConfig { segment_bytes: 4096, index_interval_bytes: 1, ..LogConfig::default() };
    check_failed_append_left_no_trace(tmpfs.path(), &dir, config, 300);
    for offset in snapshot_offsets(&OsStorage, &dir).expect("snapshots") {
        let bytes = fs::read(segment_path(&dir, offset, SNAPSHOT_EXTENSION)).expect("snapshot");
        assert!(ProducerStates::decode_snapshot(&bytes).is_ok(), "snapshot {offset} is whole");
    }
}

#[test]
fn a_marker_that_cannot_be_written_changes_no_transaction() {
    let Some(tmpfs) = Tmpfs::mount("128k") else {
        return;
    };
    let dir = tmpfs.path().join("t-0");
    let log = Log::open(&dir, "topic-id", LogConfig::default(), 0, 0, 0).expect("open");
    let values = [vec![1u8; 100]];
    let producer = Producer { id: 5, epoch: 0, base_sequence: 0 };
    let mut txn = build_producer_batch(values.iter().map(|v| (None, Some(&v[..]))), 1000, producer, true).expect("txn");
    log.append(&mut txn, 0, 0).expect("transactional batch");
    assert_eq!(log.last_stable_offset(), 0);
    let filler = tmpfs.path().join("filler");
    // Fill every byte left: the marker's write fails.
    let mut block = vec![0u8; 4096];
    let mut file = fs::File::create(&filler).expect("filler");
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    block.truncate(1);
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    let abort = log.append_marker(5, 0, Marker { commit: false, coordinator_epoch: 0 }, 0, 0).expect_err("disk full");
    assert!(is_no_space(&abort));
    assert_eq!((log.log_end_offset(), log.last_stable_offset()), (1, 0));
    assert!(log.aborted_transactions(0, i64::MAX).is_empty());
    assert!(log.producer_states().entry(5).expect("producer").current_txn_first_offset.is_some());
    drop(file);
    fs::remove_file(&filler).expect("free space");
    log.append_marker(5, 0, Marker { commit: false, coordinator_epoch: 0 }, 0, 0).expect("marker after space freed");
    assert_eq!(log.last_stable_offset(), 2);
    assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 1);
}

#[test]
fn a_checkpoint_that_cannot_be_written_leaves_the_old_one_and_no_tmp_file() {
    let Some(tmpfs) = Tmpfs::mount("64k") else {
        return;
    };
    let path = tmpfs.path().join("recovery-point-offset-checkpoint");
    write_atomic(&OsStorage, &path, b"0\n1\nt 0 42\n").expect("first checkpoint");
    let filler = tmpfs.path().join("filler");
    let mut file = fs::File::create(&filler).expect("filler");
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    let error = write_atomic(&OsStorage, &path, &vec![b'x'; 16 << 10]).expect_err("disk full");
    assert!(is_no_space(&error), "{error}");
    assert_eq!(fs::read(&path).expect("old checkpoint"), b"0\n1\nt 0 42\n");
    assert!(files_named(tmpfs.path(), ".tmp").is_empty(), "the half-written copy is gone");
}

/// Fills every byte left on the file system holding `path`; the file keeps the space.
fn fill_up(path: &Path) -> fs::File {
    let mut file = fs::File::create(path).expect("filler");
    let mut block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    block.truncate(1);
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    file
}

#[test]
fn a_shutdown_on_a_full_disk_flushes_every_log_and_leaves_no_clean_marker() {
    use crate::manager::{LogManager, CLEAN_SHUTDOWN_FILE};
    use crate::testing::test_batch;
    let Some(tmpfs) = Tmpfs::mount("256k") else {
        return;
    };
    let data_dir = tmpfs.path().join("data");
    let manager = LogManager::open(&data_dir, LogConfig::default(), 0).expect("open");
    let logs: Vec<Arc<Log>> = ["a", "b", "c"]
        .iter()
        .map(|topic| manager.get_or_create(topic, 0, "id", LogConfig::default()).expect("create"))
        .collect();
    for log in &logs {
        log.append(&mut test_batch(3, 10, 100), 0, 0).expect("append");
    }
    let filler = fill_up(&tmpfs.path().join("filler"));
    // Every close fails to write its producer snapshot; each log is flushed all the same.
    let error = manager.shutdown().expect_err("snapshots cannot be written");
    assert!(is_no_space(&error), "{error}");
    for log in &logs {
        assert_eq!(log.durable_offset(), 3, "log {} flushed", log.dir().display());
    }
    assert!(!data_dir.join(CLEAN_SHUTDOWN_FILE).exists());
    drop((filler, logs, manager));
    fs::remove_file(tmpfs.path().join("filler")).expect("free space");
    let manager = LogManager::open(&data_dir, LogConfig::default(), 0).expect("reopen");
    assert!(!manager.recovery_report().clean_shutdown);
    for topic in ["a", "b", "c"] {
        assert_eq!(manager.get(topic, 0).expect("log").log_end_offset(), 3);
    }
}
