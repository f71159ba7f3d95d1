//! `Log`: one partition replica's segments, with appends, reads, group-commit flushes,
//! recovery, truncation, the leader-epoch cache and the producer state.
//!
//! Locking: `append_lock` serializes everything that writes (append, truncate, delete records,
//! retention) and every change of the producer state; `producers` and `state` are held only
//! briefly (never one inside the other), so a reader never waits for an append's write. Lock
//! order: `append_lock` → `flush` → `state`, and `append_lock` → `producers`. `cleaner` (the
//! compaction bookkeeping) is never held with another lock. A cleaning pass reads and writes
//! files without any of them and takes `append_lock` only to swap its segments in.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::RwLockWriteGuard;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use crate::batch::{batch_headers, patch_base_offset, patch_leader_epoch, read_marker, BatchError, BatchHeader};
use crate::checkpoint::{format_checkpoint, read_checkpoint, sync_dir, write_atomic};
use crate::cleaner::CompactionPolicy;
use crate::error::{IoContext, LogError};
use crate::producer::{AbortedTxn, Marker, Origin, ProducerBatch, ProducerStates};
use crate::retention::{
    deletable_segments, remove_files, rename_to_deleted, DeletionReason, PendingDeletion, RetentionPolicy, SegmentInfo,
    DELETED_SUFFIX,
};
use crate::segment::{
    encode_offset_entries, encode_time_entries, find_batch, read_bytes_at, segment_path, Segment, NO_TIMESTAMP,
    OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES,
};
use crate::storage::{remove_if_exists, OsStorage, Storage, StorageFile};

pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

#[path = "log_clean.rs"]
mod clean;
pub use clean::CleanReport;

/// Per-log settings, named after Kafka's topic configs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll before a segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment this long after its first append.
    pub segment_ms: i64,
    /// `index.interval.bytes`: log bytes between offset index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: roll before either index file would exceed this.
    pub segment_index_bytes: u64,
    /// `flush.messages`: `maybe_flush` fsyncs once this many offsets are unflushed.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: `maybe_flush` fsyncs when the last flush is this old.
    pub flush_ms: Option<i64>,
    /// `cleanup.policy`, `retention.ms`, `retention.bytes`: what `delete_old_segments` deletes.
    pub retention: RetentionPolicy,
    /// `file.delete.delay.ms`: how long a deleted segment's files stay as `.deleted`.
    pub file_delete_delay_ms: i64,
    /// `cleanup.policy` (compact), `min.cleanable.dirty.ratio`, the compaction lags and
    /// `delete.retention.ms`: what `clean` does.
    pub compaction: CompactionPolicy,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            flush_messages: None,
            flush_ms: None,
            retention: RetentionPolicy::default(),
            file_delete_delay_ms: 60_000,
            compaction: CompactionPolicy::default(),
        }
    }
}

/// What `append` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub record_count: u32,
    /// Log end offset after the append.
    pub log_end_offset: i64,
    /// The append repeated a producer's recent batch: nothing was written, and the offsets are
    /// the original batch's.
    pub duplicate: bool,
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from torn or corrupt segment tails, plus bytes of deleted later segments.
    pub truncated_bytes: u64,
    /// Segments re-validated batch by batch.
    pub segments_recovered: usize,
    /// Segments deleted because they followed a cut.
    pub segments_deleted: usize,
    /// Segments whose index files were found invalid and rebuilt.
    pub indexes_rebuilt: usize,
    /// A segment trusted below the recovery point was found corrupt, and the whole log was
    /// re-validated.
    pub reopened_after_corruption: bool,
}

/// A range of whole batches in one segment file, for copying or `sendfile`.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    /// `None` for an empty read.
    pub file: Option<Arc<dyn StorageFile>>,
    pub position: u64,
    pub len: usize,
    /// Base offset of the first batch (the start offset for an empty read).
    pub first_offset: i64,
    /// Last offset of the last batch (`first_offset - 1` for an empty read).
    pub last_offset: i64,
}

impl ReadSlice {
    fn empty(start_offset: i64) -> ReadSlice {
        ReadSlice { file: None, position: 0, len: 0, first_offset: start_offset, last_offset: start_offset - 1 }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the slice's bytes to `out`.
    pub fn read_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let start = out.len();
        out.resize(start + self.len, 0);
        let result = file.read_exact_at(&mut out[start..], self.position);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

struct State {
    /// Sorted by base offset, contiguous; the last one is the active segment. Never empty.
    segments: Vec<Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// (epoch, start offset), both strictly increasing.
    epochs: Vec<(i32, i64)>,
    /// A segment file was created or deleted since the last directory fsync.
    dir_unsynced: bool,
    /// First offset of the earliest open transaction (the last stable offset bound).
    first_unstable_offset: Option<i64>,
    /// Files of deleted segments, renamed to `.deleted`, waiting for `file.delete.delay.ms`.
    pending_deletions: Vec<PendingDeletion>,
}

/// The producer state an append makes part of the log once its bytes are written.
enum Committed {
    /// Batches that complete no transaction: committed in place.
    Staged(crate::producer::Staged),
    /// The whole state after the append, computed ahead to write the aborted-transaction index.
    Replace(ProducerStates),
}

/// The cleaner's bookkeeping for one log.
#[derive(Debug, Default)]
struct CleanerState {
    /// The first offset not yet cleaned (Kafka's `cleaner-offset-checkpoint` entry).
    checkpoint: Option<i64>,
    /// When tombstones or markers kept by the last pass for `delete.retention.ms` may go.
    deletes_due_ms: Option<i64>,
    /// A cleaner thread is working on the log.
    in_progress: bool,
    /// A pass failed: the log is skipped until the broker restarts (Kafka's uncleanable
    /// partitions).
    uncleanable: bool,
}

/// One partition replica. `Send + Sync`; share it as `Arc<Log>`.
pub struct Log {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    topic_id: String,
    append_lock: Mutex<()>,
    /// Changed only under `append_lock`; its own lock lets readers look.
    producers: Mutex<ProducerStates>,
    state: RwLock<State>,
    config: RwLock<LogConfig>,
    /// True while some thread is the flusher (or truncating, which excludes flushes).
    flush_running: Mutex<bool>,
    flush_done: Condvar,
    durable_offset: AtomicI64,
    last_flush_ms: AtomicI64,
    fsync_rounds: AtomicU64,
    failed: AtomicBool,
    recovery: RecoveryReport,
    /// Changed only by a cleaning pass (one at a time per log) and at startup.
    cleaner: Mutex<CleanerState>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn into a panic here; the data is still consistent because
    // every mutation publishes in one step.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn epochs_text(epochs: &[(i32, i64)]) -> String {
    let lines: Vec<String> = epochs.iter().map(|(e, o)| format!("{e} {o}")).collect();
    format_checkpoint(&lines)
}

/// Kafka's `truncateFromStart` of the leader-epoch cache for a new log start offset: epochs that
/// ended before it go, the one in force there now starts there. Returns the entries if changed.
fn truncate_epochs_from_start(epochs: &mut Vec<(i32, i64)>, offset: i64) -> Option<Vec<(i32, i64)>> {
    let before = epochs.clone();
    let keep_from = epochs.iter().rposition(|&(_, start)| start <= offset).unwrap_or(0);
    epochs.drain(..keep_from);
    if let Some(first) = epochs.first_mut() {
        first.1 = first.1.max(offset);
    }
    (*epochs != before).then(|| epochs.clone())
}

/// Reads `partition.metadata`, writing it when missing. An empty `topic_id` accepts whatever is
/// on disk (the manager opening existing logs does not know the id).
fn ensure_partition_metadata(fs: &dyn Storage, dir: &Path, topic_id: &str) -> Result<String, LogError> {
    let path = dir.join(PARTITION_METADATA_FILE);
    match fs.read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let found = text
                .lines()
                .find_map(|l| l.strip_prefix("topic_id:"))
                .map(|id| id.trim().to_string())
                .ok_or_else(|| LogError::Corrupt { path: path.clone(), reason: "no topic_id line".to_string() })?;
            if !topic_id.is_empty() && found != topic_id {
                return Err(LogError::TopicIdMismatch { path, expected: topic_id.to_string(), found });
            }
            Ok(found)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !topic_id.is_empty() {
                let text = format!("version: 0\ntopic_id: {topic_id}\n");
                write_atomic(fs, &path, text.as_bytes())?;
            }
            Ok(topic_id.to_string())
        }
        Err(e) => Err(e).ctx(&path),
    }
}

fn read_epochs(fs: &dyn Storage, dir: &Path) -> Result<Vec<(i32, i64)>, LogError> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
    let Some(lines) = read_checkpoint(fs, &path)? else {
        return Ok(Vec::new());
    };
    let mut epochs = Vec::with_capacity(lines.len());
    for line in &lines {
        let mut parts = line.split_whitespace();
        let entry = (|| {
            let epoch: i32 = parts.next()?.parse().ok()?;
            let offset: i64 = parts.next()?.parse().ok()?;
            parts.next().is_none().then_some((epoch, offset))
        })();
        match entry {
            Some((epoch, offset)) if epochs.last().is_none_or(|&(e, o): &(i32, i64)| epoch > e && offset >= o) => {
                epochs.push((epoch, offset));
            }
            _ => return Err(LogError::Corrupt { path, reason: format!("bad leader epoch line {line:?}") }),
        }
    }
    Ok(epochs)
}

/// Segment bases of the `.log` files in `dir`; removes leftover `.tmp` files, orphan indexes and
/// the `.deleted` files of segments whose deletion was pending when the node stopped.
fn scan_segment_files(fs: &dyn Storage, dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let mut deleted_base_max: Option<i64> = None;
    for (name, _) in fs.list_dir(dir).ctx(dir)? {
        let path = dir.join(&name);
        let parse_base = |stem: &str| {
            (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse::<i64>().ok()).flatten()
        };
        if let Some(deleted) = name.strip_suffix(DELETED_SUFFIX) {
            let base = [".log", ".index", ".timeindex", ".txnindex"]
                .iter()
                .find_map(|ext| deleted.strip_suffix(ext))
                .and_then(parse_base);
            deleted_base_max = deleted_base_max.max(base);
            fs.remove_file(&path).ctx(&path)?;
        } else if name.ends_with(".tmp") {
            fs.remove_file(&path).ctx(&path)?;
        } else if let Some(base) = name.strip_suffix(".log").and_then(parse_base) {
            bases.push(base);
        } else if let Some(base) = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"))
            .or_else(|| name.strip_suffix(".txnindex"))
            .and_then(parse_base)
        {
            index_files.push((base, path));
        }
    }
    // Retention deletes a prefix of the segments, renaming them oldest first; if a crash kept a
    // later rename but lost an earlier one, the segment left behind was going too (its index
    // files go below, as orphans).
    if let Some(deleted) = deleted_base_max {
        for base in bases.iter().filter(|&&base| base < deleted) {
            let path = segment_path(dir, *base, "log");
            fs.remove_file(&path).ctx(&path)?;
        }
        bases.retain(|&base| base >= deleted);
    }
    for (base, path) in index_files {
        if !bases.contains(&base) {
            fs.remove_file(&path).ctx(&path)?;
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

const SNAPSHOT_EXTENSION: &str = "snapshot";
/// Producer snapshots kept after a new one is written.
const SNAPSHOTS_KEPT: usize = 3;

/// Offsets of the `<offset>.snapshot` files in `dir`.
fn snapshot_offsets(fs: &dyn Storage, dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut offsets = Vec::new();
    for (name, _) in fs.list_dir(dir).ctx(dir)? {
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(offset) = stem.parse() {
                    offsets.push(offset);
                }
            }
        }
    }
    Ok(offsets)
}

fn delete_snapshots(fs: &dyn Storage, dir: &Path, doomed: impl Fn(i64) -> bool) -> Result<(), LogError> {
    for offset in snapshot_offsets(fs, dir)? {
        if doomed(offset) {
            let path = segment_path(dir, offset, SNAPSHOT_EXTENSION);
            remove_if_exists(fs, &path).ctx(&path)?;
        }
    }
    Ok(())
}

/// The producer state of a log ending at `log_end_offset`: the newest readable snapshot at or
/// below the end (later ones describe data that is gone and are deleted), then every batch
/// after it replayed. Aborted-transaction entries at or after the snapshot are rebuilt by the
/// replay.
fn rebuild_producer_state(
    fs: &dyn Storage,
    dir: &Path,
    segments: &mut [Segment],
    log_end_offset: i64,
) -> Result<ProducerStates, LogError> {
    delete_snapshots(fs, dir, |offset| offset > log_end_offset)?;
    let mut offsets = snapshot_offsets(fs, dir)?;
    offsets.sort_unstable();
    let mut loaded = None;
    for &offset in offsets.iter().rev() {
        let path = segment_path(dir, offset, SNAPSHOT_EXTENSION);
        let bytes = fs.read(&path).ctx(&path)?;
        match ProducerStates::decode_snapshot(&bytes) {
            Ok(states) => {
                loaded = Some((offset, states));
                break;
            }
            // An unreadable snapshot (a torn write that escaped the atomic rename, a bit flip)
            // goes; an older one, or the full replay, takes its place.
            Err(_) => fs.remove_file(&path).ctx(&path)?,
        }
    }
    let first_base = segments.first().map_or(0, |s| s.base_offset);
    let (start, mut producers) = loaded.unwrap_or((first_base, ProducerStates::new()));
    for segment in segments.iter_mut() {
        segment.txn_index.truncate_from(start)?;
    }
    let mut buf = Vec::new();
    for segment in segments.iter_mut().filter(|s| s.next_offset > start) {
        let mut position = segment.lookup_position(start);
        while position < segment.size_bytes {
            let header: BatchHeader = crate::segment::read_header_at(
                segment.log_file.as_ref(),
                &segment.log_path,
                position,
                segment.size_bytes,
            )?;
            position += header.size() as u64;
            if header.base_offset < start || header.producer_id < 0 {
                continue;
            }
            let marker = if header.is_control() {
                buf.resize(header.size(), 0);
                segment.log_file.read_exact_at(&mut buf, position - header.size() as u64).ctx(&segment.log_path)?;
                read_marker(&buf)
            } else {
                None
            };
            for entry in producers.replay(&ProducerBatch::from_header(&header, marker)) {
                segment.txn_index.append(entry)?;
            }
        }
    }
    Ok(producers)
}

impl Log {
    /// Opens (creating if missing) the log in `dir`, recovering every segment at or after the one
    /// holding `recovery_point` (pass `i64::MAX` after a clean shutdown).
    pub fn open(
        dir: &Path,
        topic_id: &str,
        config: LogConfig,
        recovery_point: i64,
        log_start_offset: i64,
        now_ms: i64,
    ) -> Result<Log, LogError> {
        Log::open_in(OsStorage::shared(), dir, topic_id, config, recovery_point, log_start_offset, now_ms)
    }

    /// `open` on `storage` instead of the operating system's file system.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        dir: &Path,
        topic_id: &str,
        config: LogConfig,
        recovery_point: i64,
        log_start_offset: i64,
        now_ms: i64,
    ) -> Result<Log, LogError> {
        let open = |recovery_point| {
            Log::open_from(Arc::clone(&storage), dir, topic_id, config, recovery_point, log_start_offset, now_ms)
        };
        match open(recovery_point) {
            // Segments below the recovery point are trusted after a light check; if replaying
            // the producer state finds one corrupt (a disk that lost or changed fsynced data),
            // everything is re-validated instead, as after a crash with no checkpoint: the log
            // is cut at the first bad batch rather than refusing to open.
            Err(LogError::Corrupt { path, .. })
                if recovery_point > 0 && path.extension().is_some_and(|extension| extension == "log") =>
            {
                let mut log = open(0)?;
                log.recovery.reopened_after_corruption = true;
                Ok(log)
            }
            result => result,
        }
    }

    fn open_from(
        storage: Arc<dyn Storage>,
        dir: &Path,
        topic_id: &str,
        config: LogConfig,
        recovery_point: i64,
        log_start_offset: i64,
        now_ms: i64,
    ) -> Result<Log, LogError> {
        let fs = storage.as_ref();
        fs.create_dir_all(dir).ctx(dir)?;
        let topic_id = ensure_partition_metadata(fs, dir, topic_id)?;
        clean::complete_swaps(fs, dir)?;
        let bases = scan_segment_files(fs, dir)?;
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::new();
        let mut revalidate = false;
        let mut cut = false;
        // The names in the directory may not be durable: the previous process can have died
        // (or failed an fsync) between creating a segment and fsyncing the directory. The
        // first flush syncs the directory once, so that batches acknowledged from now on
        // never sit in a file whose name a power loss would take.
        let mut dir_unsynced = true;
        for base in bases {
            let expected_base = segments.last().map(|s| s.next_offset).unwrap_or(base);
            if cut || base < expected_base {
                // After a cut (or an overlap) later segments hold offsets that no longer follow
                // the log; they go. A gap is fine: compaction leaves them.
                let path = segment_path(dir, base, "log");
                report.truncated_bytes += fs.open(&path, false).and_then(|file| file.size()).unwrap_or(0);
                report.segments_deleted += 1;
                for extension in ["log", "index", "timeindex", "txnindex"] {
                    let path = segment_path(dir, base, extension);
                    remove_if_exists(fs, &path).ctx(&path)?;
                }
                cut = true;
                dir_unsynced = true;
                continue;
            }
            let mut segment = Segment::open(&storage, dir, base, false)?;
            let mut recover_this = revalidate;
            if !revalidate {
                if !segment.load_trusted()? {
                    report.indexes_rebuilt += 1;
                    recover_this = true;
                } else if segment.next_offset > recovery_point {
                    revalidate = true;
                    recover_this = true;
                }
            }
            if recover_this {
                let truncated = segment.recover(config.index_interval_bytes, recovery_point)?;
                report.segments_recovered += 1;
                report.truncated_bytes += truncated;
                cut |= truncated > 0;
            }
            if segment.size_bytes > 0 {
                segment.created_ms = Some(now_ms);
            }
            segments.push(segment);
        }
        if segments.is_empty() {
            segments.push(Segment::open(&storage, dir, log_start_offset.max(0), true)?);
            dir_unsynced = true;
        }
        let first_base = segments.first().map_or(0, |s| s.base_offset);
        let log_end_offset = segments.last().map_or(0, |s| s.next_offset);
        let producers = rebuild_producer_state(fs, dir, &mut segments, log_end_offset)?;
        let first_unstable_offset = producers.first_unstable_offset();
        let log_start_offset = log_start_offset.max(first_base).min(log_end_offset);
        let mut epochs = read_epochs(fs, dir)?;
        let epoch_count = epochs.len();
        epochs.retain(|&(_, start)| start < log_end_offset);
        if epochs.len() != epoch_count {
            write_atomic(fs, &dir.join(LEADER_EPOCH_CHECKPOINT_FILE), epochs_text(&epochs).as_bytes())?;
        }
        Ok(Log {
            storage,
            dir: dir.to_path_buf(),
            topic_id,
            append_lock: Mutex::new(()),
            producers: Mutex::new(producers),
            state: RwLock::new(State {
                segments,
                log_start_offset,
                log_end_offset,
                epochs,
                dir_unsynced,
                first_unstable_offset,
                pending_deletions: Vec::new(),
            }),
            config: RwLock::new(config),
            flush_running: Mutex::new(false),
            flush_done: Condvar::new(),
            durable_offset: AtomicI64::new(recovery_point.min(log_end_offset)),
            last_flush_ms: AtomicI64::new(now_ms),
            fsync_rounds: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            recovery: report,
            cleaner: Mutex::new(CleanerState::default()),
        })
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses every later write: the log's directory is being deleted, and a handle still
    /// held elsewhere (a slow request, a group coordinator) must not append to unlinked files.
    pub fn mark_deleted(&self) {
        self.failed.store(true, Ordering::Release);
    }

    fn check_failed(&self) -> Result<(), LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed { path: self.dir.clone() });
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn topic_id(&self) -> &str {
        &self.topic_id
    }

    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    pub fn log_start_offset(&self) -> i64 {
        self.read_state().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.read_state().log_end_offset
    }

    /// Every offset below this was fsynced.
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.read_state().segments.iter().map(|s| s.size_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.read_state().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.read_state().segments.iter().map(|s| s.base_offset).collect()
    }

    /// How many group-commit rounds (sets of fsyncs) ran; for metrics and tests.
    pub fn fsync_rounds(&self) -> u64 {
        self.fsync_rounds.load(Ordering::Relaxed)
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    pub fn config(&self) -> LogConfig {
        *self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.read_state().epochs.last().map(|&(epoch, _)| epoch)
    }

    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.read_state().epochs.clone()
    }

    /// Appends already-validated batches from a producer: assigns offsets from the log end,
    /// patches `baseOffset` and `partitionLeaderEpoch` in `batches`, checks batches that carry a
    /// producer id against the producer state, and writes them to the page cache. A retried
    /// batch is answered with its original offsets and not written again.
    pub fn append(&self, batches: &mut [u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_from(batches, leader_epoch, now_ms, Origin::Client)
    }

    /// Writes a transaction marker for `producer_id` (the broker's own control batch).
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut batch = crate::builder::build_marker_batch(producer_id, producer_epoch, marker, now_ms);
        self.append_from(&mut batch, leader_epoch, now_ms, Origin::Coordinator)
    }

    /// Appends batches with the producer checks `origin` calls for.
    pub fn append_from(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: Origin,
    ) -> Result<AppendInfo, LogError> {
        self.check_failed()?;
        let mut headers = Vec::new();
        for item in batch_headers(batches) {
            headers.push(item?);
        }
        if headers.is_empty() {
            return Err(BatchError::InvalidRecord { position: 0, reason: "no record batches" }.into());
        }
        let total_bytes = batches.len() as u64;
        let _append = lock(&self.append_lock);
        let config = self.config();

        let (log_end_offset, latest_epoch) = {
            let state = self.read_state();
            (state.log_end_offset, state.epochs.last().map(|&(e, _)| e))
        };
        let mut next_offset = log_end_offset;
        let mut max_timestamp = NO_TIMESTAMP;
        let mut record_count = 0u32;
        let mut producer_batches = Vec::new();
        for (position, header) in headers.iter_mut() {
            patch_base_offset(&mut batches[*position..], next_offset);
            patch_leader_epoch(&mut batches[*position..], leader_epoch);
            header.base_offset = next_offset;
            header.partition_leader_epoch = leader_epoch;
            next_offset = header.last_offset() + 1;
            max_timestamp = max_timestamp.max(header.max_timestamp);
            record_count = record_count.saturating_add(header.records_count.max(0) as u32);
            if header.producer_id >= 0 {
                let marker = if header.is_control() { read_marker(&batches[*position..]) } else { None };
                producer_batches.push(ProducerBatch::from_header(header, marker));
            }
        }
        let span_offsets = next_offset - 1 - log_end_offset;
        if total_bytes > u64::from(u32::MAX) || span_offsets > i64::from(u32::MAX) {
            return Err(
                BatchError::TooLarge { position: 0, size_bytes: batches.len(), max_bytes: u32::MAX as usize }.into()
            );
        }
        let staged = if producer_batches.is_empty() {
            None
        } else {
            let staged = lock(&self.producers).stage(&producer_batches, origin)?;
            if let Some(original) = staged.duplicate {
                return Ok(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    max_timestamp: original.timestamp,
                    record_count: (original.last_offset - original.first_offset + 1) as u32,
                    log_end_offset,
                    duplicate: true,
                });
            }
            Some(staged)
        };

        self.maybe_roll(&config, total_bytes, next_offset, headers.len(), now_ms)?;

        // Leader epoch first: if its checkpoint cannot be written, nothing was appended.
        let new_epochs = match latest_epoch {
            Some(latest) if latest >= leader_epoch => None,
            _ if leader_epoch < 0 => None,
            _ => {
                let mut epochs = self.read_state().epochs.clone();
                epochs.push((leader_epoch, log_end_offset));
                write_atomic(
                    self.storage.as_ref(),
                    &self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
                    epochs_text(&epochs).as_bytes(),
                )?;
                Some(epochs)
            }
        };

        let (base, position, tail, index_len, time_len, files) = {
            let state = self.read_state();
            let active = state.segments.last().ok_or_else(|| LogError::Corrupt {
                path: self.dir.clone(),
                reason: "log has no segments".to_string(),
            })?;
            (
                active.base_offset,
                active.size_bytes,
                active.tail,
                active.offset_index.len() as u64,
                active.time_index.len() as u64,
                (
                    Arc::clone(&active.log_file),
                    active.log_path.clone(),
                    Arc::clone(&active.index_file),
                    active.index_path.clone(),
                    Arc::clone(&active.timeindex_file),
                    active.timeindex_path.clone(),
                ),
            )
        };
        let (log_file, log_path, index_file, index_path, time_file, time_path) = files;
        let mut new_tail = tail;
        let mut offset_entries = Vec::new();
        let mut time_entries = Vec::new();
        for (relative_position, header) in &headers {
            new_tail.observe(
                base,
                position + *relative_position as u64,
                header,
                config.index_interval_bytes,
                &mut offset_entries,
                &mut time_entries,
            );
        }

        let written = log_file
            .write_all_at(batches, position)
            .ctx(&log_path)
            .and_then(|()| {
                index_file
                    .write_all_at(&encode_offset_entries(&offset_entries), index_len * OFFSET_ENTRY_BYTES)
                    .ctx(&index_path)
            })
            .and_then(|()| {
                time_file.write_all_at(&encode_time_entries(&time_entries), time_len * TIME_ENTRY_BYTES).ctx(&time_path)
            });
        // Undoes a failed append (a full disk, an I/O error) so that the files end where the
        // published state says: the next append does not leave garbage behind the cut, and
        // the log end offset and the producer state never count the lost batches. Shrinking
        // needs no free space; if it fails anyway, recovery cuts the tail at the next open.
        let undo = || {
            let _ = log_file.set_len(position);
            let _ = index_file.set_len(index_len * OFFSET_ENTRY_BYTES);
            let _ = time_file.set_len(time_len * TIME_ENTRY_BYTES);
        };
        if let Err(e) = written {
            undo();
            return Err(e);
        }

        // The batches are written: they become part of the producer state, and the
        // transactions their markers aborted go to the active segment's index. The index is
        // written before anything is published, against a copy of the producer state when a
        // marker completes a transaction, so that a failed index write undoes the append.
        let (committed, aborted) = match staged {
            Some(staged) if staged.completes_transaction() => {
                let mut next = lock(&self.producers).clone();
                let aborted = next.commit(staged);
                (Some(Committed::Replace(next)), aborted)
            }
            Some(staged) => (Some(Committed::Staged(staged)), Vec::new()),
            None => (None, Vec::new()),
        };
        if !aborted.is_empty() {
            let mut state = self.write_state();
            if let Some(active) = state.segments.last_mut() {
                for entry in aborted {
                    if let Err(e) = active.txn_index.append(entry) {
                        let _ = active.txn_index.truncate_from(log_end_offset);
                        drop(state);
                        undo();
                        return Err(e);
                    }
                }
            }
        }
        let first_unstable_offset = committed.map(|committed| {
            let mut producers = lock(&self.producers);
            match committed {
                Committed::Replace(next) => *producers = next,
                Committed::Staged(staged) => {
                    producers.commit(staged);
                }
            }
            producers.first_unstable_offset()
        });
        let mut state = self.write_state();
        if let Some(active) = state.segments.last_mut() {
            active.size_bytes += total_bytes;
            active.next_offset = next_offset;
            active.index_unsynced |= !offset_entries.is_empty();
            active.offset_index.extend(offset_entries);
            active.time_index.extend(time_entries);
            active.tail = new_tail;
            active.created_ms.get_or_insert(now_ms);
            active.log_unsynced = true;
        }
        state.log_end_offset = next_offset;
        if let Some(first_unstable_offset) = first_unstable_offset {
            state.first_unstable_offset = first_unstable_offset;
        }
        if let Some(epochs) = new_epochs {
            state.epochs = epochs;
        }
        Ok(AppendInfo {
            base_offset: log_end_offset,
            last_offset: next_offset - 1,
            max_timestamp,
            record_count,
            log_end_offset: next_offset,
            duplicate: false,
        })
    }

    /// Starts a new active segment at the log end when the append would not fit the current one.
    fn maybe_roll(
        &self,
        config: &LogConfig,
        append_bytes: u64,
        next_offset_after: i64,
        batch_count: usize,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let (needs_roll, log_end_offset) = {
            let state = self.read_state();
            let Some(active) = state.segments.last() else {
                return Ok(());
            };
            let new_size = active.size_bytes + append_bytes;
            // Each batch can add at most one entry to each index.
            let batches = batch_count as u64;
            let needs_roll = active.size_bytes > 0
                && (new_size > config.segment_bytes
                    || new_size > u64::from(u32::MAX)
                    || next_offset_after - 1 - active.base_offset > i64::from(u32::MAX)
                    || active.created_ms.is_some_and(|created| now_ms - created > config.segment_ms)
                    || (active.offset_index.len() as u64 + batches) * OFFSET_ENTRY_BYTES > config.segment_index_bytes
                    || (active.time_index.len() as u64 + batches) * TIME_ENTRY_BYTES > config.segment_index_bytes);
            (needs_roll, state.log_end_offset)
        };
        if needs_roll {
            let segment = self.new_active_segment(log_end_offset)?;
            let mut state = self.write_state();
            state.segments.push(segment);
            state.dir_unsynced = true;
        }
        Ok(())
    }

    /// Reads whole batches from the one holding `start_offset`, in one segment, with Kafka's
    /// fetch semantics (KIP-74 for `min_one_batch`).
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadSlice, LogError> {
        // The base offset of the segment searched last, when the offset fell in a gap that
        // compaction left at its end: the next batch is in a later segment. Kept as an offset,
        // not an index, because retention may drop segments from the front between two looks.
        let mut searched: Option<i64> = None;
        let (file, path, limit_bytes, first_position, first) = loop {
            let (file, path, start_position, limit_bytes) = {
                let state = self.read_state();
                if start_offset < state.log_start_offset || start_offset > state.log_end_offset {
                    return Err(LogError::OffsetOutOfRange {
                        offset: start_offset,
                        log_start_offset: state.log_start_offset,
                        log_end_offset: state.log_end_offset,
                    });
                }
                if start_offset == state.log_end_offset || start_offset >= upper_bound_offset {
                    return Ok(ReadSlice::empty(start_offset));
                }
                let i = match searched {
                    Some(base) => state.segments.partition_point(|s| s.base_offset <= base),
                    None => state.segments.partition_point(|s| s.base_offset <= start_offset).saturating_sub(1),
                };
                let Some(segment) = state.segments.get(i) else {
                    return Ok(ReadSlice::empty(start_offset));
                };
                searched = Some(segment.base_offset);
                (
                    Arc::clone(&segment.log_file),
                    segment.log_path.clone(),
                    segment.lookup_position(start_offset),
                    segment.size_bytes,
                )
            };
            if let Some((first_position, first)) =
                find_batch(file.as_ref(), &path, start_position, limit_bytes, start_offset)?
            {
                break (file, path, limit_bytes, first_position, first);
            }
        };
        if first.base_offset >= upper_bound_offset || (first.size() > max_bytes && !min_one_batch) {
            return Ok(ReadSlice::empty(start_offset));
        }
        let mut end = first_position + first.size() as u64;
        let mut last_offset = first.last_offset();
        while end < limit_bytes {
            let header = crate::segment::read_header_at(file.as_ref(), &path, end, limit_bytes)?;
            let len = (end - first_position) as usize + header.size();
            if header.base_offset >= upper_bound_offset || len > max_bytes {
                break;
            }
            end += header.size() as u64;
            last_offset = header.last_offset();
        }
        Ok(ReadSlice {
            file: Some(file),
            position: first_position,
            len: (end - first_position) as usize,
            first_offset: first.base_offset,
            last_offset,
        })
    }

    /// Group commit: returns once every offset below `min(offset, log end)` is fsynced.
    pub fn flush_to(&self, offset: i64) -> Result<i64, LogError> {
        let mut running = lock(&self.flush_running);
        loop {
            self.check_failed()?;
            let target = offset.min(self.log_end_offset());
            let durable = self.durable_offset();
            if durable >= target {
                return Ok(durable);
            }
            if *running {
                running = self.flush_done.wait(running).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            *running = true;
            drop(running);
            let result = self.flush_round();
            running = lock(&self.flush_running);
            *running = false;
            self.flush_done.notify_all();
            result?;
        }
    }

    /// Waits to be the only flusher, runs `work`, and lets the others go.
    fn exclusive_flush<T>(&self, work: impl FnOnce() -> T) -> T {
        let mut running = lock(&self.flush_running);
        while *running {
            running = self.flush_done.wait(running).unwrap_or_else(PoisonError::into_inner);
        }
        *running = true;
        drop(running);
        let result = work();
        *lock(&self.flush_running) = false;
        self.flush_done.notify_all();
        result
    }

    /// One fsync round; the caller is the only flusher.
    fn flush_round(&self) -> Result<(), LogError> {
        let (log_end_offset, files, sync_directory) = {
            let mut state = self.write_state();
            let mut files = Vec::new();
            for segment in &mut state.segments {
                if segment.log_unsynced {
                    files.push((Arc::clone(&segment.log_file), segment.log_path.clone()));
                    segment.log_unsynced = false;
                }
                // Index files are a cache, but the recovery of trusted segments relies on them
                // being as durable as the data they describe.
                if segment.index_unsynced {
                    files.push((Arc::clone(&segment.index_file), segment.index_path.clone()));
                    files.push((Arc::clone(&segment.timeindex_file), segment.timeindex_path.clone()));
                    segment.index_unsynced = false;
                }
                files.extend(segment.txn_index.take_unsynced());
            }
            let sync_directory = std::mem::take(&mut state.dir_unsynced);
            (state.log_end_offset, files, sync_directory)
        };
        let started = std::time::Instant::now();
        let mut synced = files.iter().try_for_each(|(file, path)| file.sync_data().ctx(path));
        if synced.is_ok() && sync_directory {
            synced = sync_dir(self.storage.as_ref(), &self.dir);
        }
        if !files.is_empty() || sync_directory {
            crate::stats::FSYNC_DURATION.observe(started.elapsed());
        }
        if let Err(e) = synced {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        self.durable_offset.fetch_max(log_end_offset, Ordering::AcqRel);
        self.fsync_rounds.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Applies `flush.messages` / `flush.ms`; returns whether it flushed.
    pub fn maybe_flush(&self, now_ms: i64) -> Result<bool, LogError> {
        let config = self.config();
        let log_end_offset = self.log_end_offset();
        let unflushed = log_end_offset - self.durable_offset();
        if unflushed <= 0 {
            self.last_flush_ms.store(now_ms, Ordering::Relaxed);
            return Ok(false);
        }
        let by_count = config.flush_messages.is_some_and(|n| unflushed as u64 >= n);
        let by_age = config.flush_ms.is_some_and(|ms| now_ms - self.last_flush_ms.load(Ordering::Relaxed) >= ms);
        if !(by_count || by_age) {
            return Ok(false);
        }
        self.flush_to(log_end_offset)?;
        self.last_flush_ms.store(now_ms, Ordering::Relaxed);
        Ok(true)
    }

    /// Reads the whole batch holding `offset`, from the segment that holds it.
    fn batch_containing(&self, offset: i64) -> Result<Option<(i64, Vec<u8>)>, LogError> {
        let (file, path, position, limit_bytes) = {
            let state = self.read_state();
            let index = state.segments.partition_point(|s| s.base_offset <= offset);
            let Some(segment) = index.checked_sub(1).and_then(|i| state.segments.get(i)) else {
                return Ok(None);
            };
            (
                Arc::clone(&segment.log_file),
                segment.log_path.clone(),
                segment.lookup_position(offset),
                segment.size_bytes,
            )
        };
        match find_batch(file.as_ref(), &path, position, limit_bytes, offset)? {
            Some((position, header)) => {
                Ok(Some((header.base_offset, read_bytes_at(file.as_ref(), &path, position, header.size())?)))
            }
            None => Ok(None),
        }
    }

    /// The first batch from the log start whose maxTimestamp is ≥ `timestamp_ms` (ListOffsets by
    /// time); the caller finds the record inside.
    pub fn find_batch_by_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, Vec<u8>)>, LogError> {
        let (log_start_offset, candidates) = {
            let state = self.read_state();
            let candidates: Vec<_> = state
                .segments
                .iter()
                .filter(|s| s.next_offset > state.log_start_offset && s.tail.max_timestamp >= timestamp_ms)
                .map(|s| {
                    let start_offset = s.time_lookup_offset(timestamp_ms);
                    (Arc::clone(&s.log_file), s.log_path.clone(), s.lookup_position(start_offset), s.size_bytes)
                })
                .collect();
            (state.log_start_offset, candidates)
        };
        for (file, path, mut position, limit_bytes) in candidates {
            while position < limit_bytes {
                let header = crate::segment::read_header_at(file.as_ref(), &path, position, limit_bytes)?;
                if header.last_offset() >= log_start_offset && header.max_timestamp >= timestamp_ms {
                    let bytes = read_bytes_at(file.as_ref(), &path, position, header.size())?;
                    return Ok(Some((header.base_offset, bytes)));
                }
                position += header.size() as u64;
            }
        }
        Ok(None)
    }

    /// The batch holding the greatest maxTimestamp (the earliest such batch on ties).
    pub fn max_timestamp_batch(&self) -> Result<Option<(i64, Vec<u8>)>, LogError> {
        let offset = {
            let state = self.read_state();
            let mut best: Option<(i64, i64)> = None;
            for segment in &state.segments {
                let tail = segment.tail;
                if segment.next_offset <= state.log_start_offset || tail.max_timestamp == NO_TIMESTAMP {
                    continue;
                }
                if best.is_none_or(|(ts, _)| tail.max_timestamp > ts) {
                    best = Some((tail.max_timestamp, tail.max_timestamp_offset));
                }
            }
            match best {
                Some((_, offset)) => offset,
                None => return Ok(None),
            }
        };
        self.batch_containing(offset)
    }

    /// DeleteRecords: raises the log start offset to `offset` (never lowers it). Returns the new
    /// log start offset. As in Kafka, the segments wholly below it are left to the next
    /// `delete_old_segments`, which deletes them through `.deleted` files.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        self.check_failed()?;
        let _append = lock(&self.append_lock);
        let (epochs, log_start_offset) = {
            let mut state = self.write_state();
            if offset > state.log_end_offset || offset < 0 {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.log_end_offset,
                });
            }
            if offset <= state.log_start_offset {
                return Ok(state.log_start_offset);
            }
            state.log_start_offset = offset;
            (truncate_epochs_from_start(&mut state.epochs, offset), state.log_start_offset)
        };
        if let Some(epochs) = epochs {
            write_atomic(
                self.storage.as_ref(),
                &self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
                epochs_text(&epochs).as_bytes(),
            )?;
        }
        lock(&self.producers).remove_below(log_start_offset);
        if let Some(first_base) = self.read_state().segments.first().map(|s| s.base_offset) {
            delete_snapshots(self.storage.as_ref(), &self.dir, |offset| offset < first_base)?;
        }
        Ok(log_start_offset)
    }

    /// Retention: deletes the old segments that `retention::deletable_segments` selects under
    /// the log's config, rolling the active segment first when it goes too, and raises the log
    /// start offset to the new first segment. The files are renamed to `.deleted` and removed by
    /// `remove_deleted_files` after `file.delete.delay.ms`. Returns how many segments went and
    /// why the last of them did.
    pub fn delete_old_segments(&self, now_ms: i64) -> Result<(usize, Option<DeletionReason>), LogError> {
        self.check_failed()?;
        let _append = lock(&self.append_lock);
        let config = self.config();
        let (count, reason, log_end_offset, segment_count) = {
            let state = self.read_state();
            let infos = state.segments.iter().map(Segment::retention_info).collect::<Result<Vec<SegmentInfo>, _>>()?;
            // One node: the high watermark is the log end offset.
            let (count, reason) =
                deletable_segments(&infos, state.log_start_offset, state.log_end_offset, &config.retention, now_ms);
            (count, reason, state.log_end_offset, state.segments.len())
        };
        if count == 0 {
            return Ok((0, None));
        }
        // The log always keeps an active segment: when everything goes, roll a new one first
        // (Kafka's rule; `deletable_segments` never selects an empty active segment).
        let rolled = if count == segment_count { Some(self.new_active_segment(log_end_offset)?) } else { None };
        let (removed, epochs) = {
            let mut state = self.write_state();
            if let Some(segment) = rolled {
                state.segments.push(segment);
            }
            let removed: Vec<Segment> = state.segments.drain(..count).collect();
            let first_base = state.segments.first().map_or(log_end_offset, |s| s.base_offset);
            // Never lowers: DeleteRecords may already have set it inside the first kept segment.
            state.log_start_offset = state.log_start_offset.max(first_base);
            state.dir_unsynced = true;
            let log_start_offset = state.log_start_offset;
            (removed, truncate_epochs_from_start(&mut state.epochs, log_start_offset))
        };
        // Oldest first, so that a crash leaves a prefix renamed (see `scan_segment_files`).
        let mut renamed = Vec::new();
        for segment in &removed {
            let paths: [&Path; 4] =
                [&segment.log_path, &segment.index_path, &segment.timeindex_path, &segment.txn_index.path];
            renamed.extend(rename_to_deleted(self.storage.as_ref(), &paths)?);
        }
        self.write_state()
            .pending_deletions
            .push(PendingDeletion { paths: renamed, due_ms: now_ms.saturating_add(config.file_delete_delay_ms) });
        if let Some(epochs) = epochs {
            write_atomic(
                self.storage.as_ref(),
                &self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
                epochs_text(&epochs).as_bytes(),
            )?;
        }
        // Producers whose every write is gone are forgotten, as are their older snapshots.
        let (log_start_offset, first_base) = {
            let state = self.read_state();
            (state.log_start_offset, state.segments.first().map_or(log_end_offset, |s| s.base_offset))
        };
        lock(&self.producers).remove_below(log_start_offset);
        delete_snapshots(self.storage.as_ref(), &self.dir, |offset| offset < first_base)?;
        self.remove_deleted_files(now_ms)?;
        Ok((removed.len(), reason))
    }

    /// Removes the `.deleted` files whose `file.delete.delay.ms` has passed; returns how many
    /// segments' files went. A fetch still sending from one keeps its open descriptor.
    pub fn remove_deleted_files(&self, now_ms: i64) -> Result<usize, LogError> {
        let due: Vec<PendingDeletion> = {
            let mut state = self.write_state();
            let (due, waiting) =
                std::mem::take(&mut state.pending_deletions).into_iter().partition(|p| p.due_ms <= now_ms);
            state.pending_deletions = waiting;
            due
        };
        for (i, pending) in due.iter().enumerate() {
            if let Err(error) = remove_files(self.storage.as_ref(), &pending.paths) {
                // Try again at the next sweep.
                self.write_state().pending_deletions.extend(due[i..].iter().cloned());
                return Err(error);
            }
        }
        Ok(due.len())
    }

    /// Segments whose files wait as `.deleted`.
    pub fn pending_deletions(&self) -> usize {
        self.read_state().pending_deletions.len()
    }

    /// Drops every offset at and after `offset` (cut at the start of the batch holding it), for
    /// replica truncation. A no-op at or beyond the log end.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        self.check_failed()?;
        let _append = lock(&self.append_lock);
        // Excluding flushes keeps a flush that snapshotted the old log end from publishing a
        // durable offset past the cut. The cut is fsynced before returning: after a power loss
        // the truncated batches must not come back under offsets that new batches now hold.
        self.exclusive_flush(|| self.truncate_locked(offset).and_then(|()| self.flush_round()))?;
        // Producer state after the cut: from the newest snapshot at or below it, replayed.
        let mut state = self.write_state();
        let log_end_offset = state.log_end_offset;
        let producers = rebuild_producer_state(self.storage.as_ref(), &self.dir, &mut state.segments, log_end_offset)?;
        state.first_unstable_offset = producers.first_unstable_offset();
        drop(state);
        *lock(&self.producers) = producers;
        Ok(())
    }

    fn truncate_locked(&self, offset: i64) -> Result<(), LogError> {
        let mut state = self.write_state();
        if offset >= state.log_end_offset {
            return Ok(());
        }
        let index = state.segments.partition_point(|s| s.base_offset <= offset);
        let removed: Vec<Segment> = if index == 0 {
            // Before the first segment: start over empty at `offset`.
            let fresh = Segment::open(&self.storage, &self.dir, offset.max(0), true)?;
            let old = std::mem::replace(&mut state.segments, vec![fresh]);
            state.log_start_offset = offset.max(0);
            // Pending `.deleted` files may be of segments above the fresh one, which `open` would
            // take for a deletion in progress: they go now.
            for pending in std::mem::take(&mut state.pending_deletions) {
                remove_files(self.storage.as_ref(), &pending.paths)?;
            }
            old
        } else {
            let removed = state.segments.split_off(index);
            if let Some(segment) = state.segments.last_mut() {
                let position = segment.lookup_position(offset);
                let found =
                    find_batch(segment.log_file.as_ref(), &segment.log_path, position, segment.size_bytes, offset)?;
                if let Some((position, _)) = found {
                    segment.truncate_at(position)?;
                }
                // A rolled-away segment becomes active again; its age restarts.
                segment.created_ms = None;
            }
            removed
        };
        state.dir_unsynced |= !removed.is_empty();
        state.log_end_offset = state.segments.last().map_or(0, |s| s.next_offset);
        state.log_start_offset = state.log_start_offset.min(state.log_end_offset);
        let log_end_offset = state.log_end_offset;
        self.durable_offset.fetch_min(log_end_offset, Ordering::AcqRel);
        let epoch_count = state.epochs.len();
        state.epochs.retain(|&(_, start)| start < log_end_offset);
        let epochs = (state.epochs.len() != epoch_count).then(|| state.epochs.clone());
        drop(state);
        for segment in &removed {
            segment.delete_files()?;
        }
        if let Some(epochs) = epochs {
            write_atomic(
                self.storage.as_ref(),
                &self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
                epochs_text(&epochs).as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Flushes everything (segments, indexes, directory), e.g. before a clean shutdown.
    pub fn close(&self) -> Result<(), LogError> {
        self.check_failed()?;
        let _append = lock(&self.append_lock);
        self.flush_and_snapshot(self.log_end_offset())
    }

    /// Fsyncs the whole log, then writes the producer snapshot at `log_end_offset`: what a roll
    /// and a clean close do. The snapshot relies on the aborted-transaction entries before it
    /// being on disk. Called under `append_lock`.
    fn flush_and_snapshot(&self, log_end_offset: i64) -> Result<(), LogError> {
        self.exclusive_flush(|| self.flush_round())?;
        self.write_producer_snapshot(log_end_offset)
    }

    /// A roll: a new empty segment at `log_end_offset`, for the caller to make active. Everything
    /// before it is fsynced first (Kafka schedules the same flush at a roll), so a segment's name
    /// never survives a power loss that its predecessors' data did not, which would leave a hole
    /// below the log end. Called under `append_lock`.
    fn new_active_segment(&self, log_end_offset: i64) -> Result<Segment, LogError> {
        self.flush_and_snapshot(log_end_offset)?;
        Segment::open(&self.storage, &self.dir, log_end_offset, true)
    }

    /// Writes the producer state, which describes every offset below `offset`, to
    /// `<offset>.snapshot`, keeping the newest few snapshots. Called under `append_lock`.
    fn write_producer_snapshot(&self, offset: i64) -> Result<(), LogError> {
        let bytes = lock(&self.producers).encode_snapshot();
        write_atomic(self.storage.as_ref(), &segment_path(&self.dir, offset, SNAPSHOT_EXTENSION), &bytes)?;
        let mut offsets = snapshot_offsets(self.storage.as_ref(), &self.dir)?;
        offsets.sort_unstable();
        let keep_from = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
        let oldest_kept = offsets.get(keep_from).copied().unwrap_or(i64::MIN);
        delete_snapshots(self.storage.as_ref(), &self.dir, |o| o < oldest_kept)
    }

    /// The last stable offset: the first offset of the earliest open transaction, or the log
    /// end when none is open, and never below the log start (DeleteRecords may pass an open
    /// transaction's first offset; Kafka's `maybeIncrementFirstUnstableOffset`). Consumers
    /// reading committed data stop here.
    pub fn last_stable_offset(&self) -> i64 {
        let state = self.read_state();
        let first_unstable = state.first_unstable_offset.unwrap_or(state.log_end_offset).max(state.log_start_offset);
        first_unstable.min(state.log_end_offset)
    }

    /// The aborted transactions a `read_committed` fetch of `[start_offset, upper_bound)` must
    /// return: those whose marker is at or after `start_offset` and that began before
    /// `upper_bound` (Kafka's `collectAbortedTransactions`).
    ///
    /// An aborted transaction is indexed in the segment of its abort marker, which can lie any
    /// number of segments past `upper_bound`, so the scan cannot stop at the fetched range. It
    /// walks the entries in marker order from the segment holding `start_offset` and stops at
    /// the first whose last stable offset is at or past `upper_bound`: every transaction open
    /// when that marker was written began at or after its last stable offset, so no later entry
    /// can have begun before `upper_bound`. The cost is one check per segment up to that entry
    /// plus the entries before it (see docs/storage-format.md).
    pub fn aborted_transactions(&self, start_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let state = self.read_state();
        let first = state.segments.partition_point(|s| s.next_offset <= start_offset);
        let mut found = Vec::new();
        for entry in state.segments[first..].iter().flat_map(|s| s.txn_index.entries.iter()) {
            if entry.last_offset >= start_offset && entry.first_offset < upper_bound {
                found.push(*entry);
            }
            if entry.last_stable_offset >= upper_bound {
                break;
            }
        }
        found
    }

    /// A copy of the producer state (DescribeProducers, tests).
    pub fn producer_states(&self) -> ProducerStates {
        lock(&self.producers).clone()
    }

    /// Forgets idle producers (`producer.id.expiration.ms`); returns how many went.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        let _append = lock(&self.append_lock);
        lock(&self.producers).remove_expired(now_ms, expiration_ms)
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "disk_full_tests.rs"]
mod disk_full_tests;

#[cfg(test)]
#[path = "log_clean_tests.rs"]
mod clean_tests;

#[cfg(test)]
#[path = "fault_tests.rs"]
mod fault_tests;

#[cfg(test)]
#[path = "txn_tests.rs"]
mod txn_tests;

#[cfg(test)]
#[path = "boundary_tests.rs"]
mod boundary_tests;
