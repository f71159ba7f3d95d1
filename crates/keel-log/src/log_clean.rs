//! `Log::clean`: one pass of the log cleaner over one log, and the completion at open of a
//! swap that a crash interrupted. The decisions are in `cleaner.rs`; this is the file work.
//!
//! Crash safety (Kafka's `.cleaned` / `.swap` protocol): a group of old segments based at `B`
//! is rewritten into `B.log.cleaned` (with `B.index.cleaned`, `B.timeindex.cleaned`,
//! `B.txnindex.cleaned` and `B.replaces.cleaned`, the end of the offsets it replaces), all
//! fsynced with the directory. Under the append lock the files are renamed to `.swap`,
//! `B.log.swap` last, and the directory is fsynced: from here the new segment wins. The old
//! segments' files are renamed to `<name>.replaced.deleted` (removed after
//! `file.delete.delay.ms`; a fetch holding one keeps reading it), the `.swap` files to their
//! final names, and the in-memory segment list is updated. At open, `complete_swaps` deletes
//! `.cleaned` files and finishes every `.swap`: the live segments inside its range go, the
//! `.swap` files take their names. A crash thus leaves the old segments or the new one, never
//! a mix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{lock, Log};
use crate::batch::{read_marker, BatchHeader, Compression, HEADER_BYTES};
use crate::checkpoint::sync_dir;
use crate::cleaner::{
    cleanable_range, empty_batch, group_segments, key_hash, parse_records, plan_batch, rebuild_batch, retain_record,
    BatchPlan, CleanableRange, CleanerSegment, OffsetMap, RecordsCodec, TxnTracker,
};
use crate::error::{IoContext, LogError};
use crate::retention::PendingDeletion;
use crate::segment::{encode_offset_entries, encode_time_entries, read_header_at, segment_path, IndexTail, Segment};
use crate::storage::{remove_if_exists, Storage, StorageFile};
use crate::txn_index::TxnIndex;

const CLEANED_SUFFIX: &str = ".cleaned";
const SWAP_SUFFIX: &str = ".swap";
/// Old segment files replaced by a cleaned one. Not a plain `.deleted`: retention's rule at
/// open (a live segment below a `.deleted` one was being deleted too) must not see them.
const REPLACED_SUFFIX: &str = ".replaced.deleted";
const REPLACES: &str = "replaces";
const SEGMENT_EXTENSIONS: [&str; 4] = ["log", "index", "timeindex", "txnindex"];

/// What one cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Where the dirty range started and where the pass stopped (the new checkpoint).
    pub first_dirty_offset: i64,
    pub end_offset: i64,
    /// Old segments rewritten, and the segments that replaced them.
    pub segments_cleaned: usize,
    pub segments_written: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// A segment changed under the pass (retention, truncation): its group was left as it was.
    pub abandoned: bool,
}

/// One segment as the pass saw it.
struct SegmentView {
    info: CleanerSegment,
    /// The next segment's base (or the log end for the last).
    upper_offset: i64,
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    modified: SystemTime,
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Calls `each` with every batch of the first `limit_bytes` of `file`.
fn for_each_batch(
    file: &dyn StorageFile,
    path: &Path,
    limit_bytes: u64,
    mut each: impl FnMut(&BatchHeader, &[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut buf = Vec::new();
    let mut position = 0;
    while position < limit_bytes {
        let header = read_header_at(file, path, position, limit_bytes)?;
        buf.resize(header.size(), 0);
        file.read_exact_at(&mut buf, position).ctx(path)?;
        each(&header, &buf)?;
        position += header.size() as u64;
    }
    Ok(())
}

/// The uncompressed records section of a data batch, if the cleaner can look inside it.
fn section_of(header: &BatchHeader, batch: &[u8], codec: Option<&dyn RecordsCodec>) -> Option<Vec<u8>> {
    match header.compression() {
        Compression::None => Some(batch[HEADER_BYTES..].to_vec()),
        _ => codec?.decompress(batch).ok(),
    }
}

/// A cleaned segment being written: the `.log.cleaned` file and its indexes.
struct CleanedWriter {
    base_offset: i64,
    log_path: PathBuf,
    file: Arc<dyn StorageFile>,
    /// Batches not yet written, starting at `position - buffer.len()`.
    buffer: Vec<u8>,
    position: u64,
    tail: IndexTail,
    offset_entries: Vec<crate::segment::OffsetEntry>,
    time_entries: Vec<crate::segment::TimeEntry>,
    index_interval_bytes: u32,
}

impl CleanedWriter {
    const BUFFER_BYTES: usize = 1 << 20;

    fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<CleanedWriter, LogError> {
        let log_path = with_suffix(&segment_path(dir, base_offset, "log"), CLEANED_SUFFIX);
        let file = storage.open(&log_path, true).ctx(&log_path)?;
        Ok(CleanedWriter {
            base_offset,
            log_path,
            file,
            buffer: Vec::new(),
            position: 0,
            tail: IndexTail::new(),
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            index_interval_bytes,
        })
    }

    fn write(&mut self, batch: &[u8]) -> Result<(), LogError> {
        let header = BatchHeader::parse(batch)
            .map_err(|_| LogError::Corrupt { path: self.log_path.clone(), reason: "cleaned batch".to_string() })?;
        self.tail.observe(
            self.base_offset,
            self.position,
            &header,
            self.index_interval_bytes,
            &mut self.offset_entries,
            &mut self.time_entries,
        );
        self.buffer.extend_from_slice(batch);
        self.position += batch.len() as u64;
        if self.buffer.len() >= CleanedWriter::BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered batches to the file.
    fn flush(&mut self) -> Result<(), LogError> {
        let start = self.position - self.buffer.len() as u64;
        self.file.write_all_at(&self.buffer, start).ctx(&self.log_path)?;
        self.buffer.clear();
        Ok(())
    }
}

/// Counters and flags of a pass.
#[derive(Default)]
struct PassStats {
    records_removed: u64,
    /// The earliest time at which a tombstone or marker kept for `delete.retention.ms` may go.
    deletes_due_ms: Option<i64>,
}

impl Log {
    /// The cleaner checkpoint: the first offset not yet cleaned (`None`: never cleaned).
    pub fn cleaner_checkpoint(&self) -> Option<i64> {
        lock(&self.cleaner).checkpoint
    }

    /// Sets the cleaner checkpoint read from `cleaner-offset-checkpoint` at startup.
    pub fn set_cleaner_checkpoint(&self, offset: Option<i64>) {
        lock(&self.cleaner).checkpoint = offset;
    }

    /// Claims the log for one cleaner thread; false when another has it or it is marked
    /// uncleanable.
    pub fn begin_cleaning(&self) -> bool {
        let mut cleaner = lock(&self.cleaner);
        if cleaner.in_progress || cleaner.uncleanable {
            return false;
        }
        cleaner.in_progress = true;
        true
    }

    /// Releases the claim of `begin_cleaning`; `failed` marks the log uncleanable.
    pub fn end_cleaning(&self, failed: bool) {
        let mut cleaner = lock(&self.cleaner);
        cleaner.in_progress = false;
        cleaner.uncleanable |= failed;
    }

    /// Whether a cleaner thread may take the log now: not marked uncleanable, not being cleaned.
    pub fn is_available_to_clean(&self) -> bool {
        let cleaner = lock(&self.cleaner);
        !cleaner.uncleanable && !cleaner.in_progress
    }

    fn segment_views(&self) -> Result<(Vec<SegmentView>, i64), LogError> {
        let state = self.read_state();
        let mut views = Vec::with_capacity(state.segments.len());
        for (i, segment) in state.segments.iter().enumerate() {
            let retention = segment.retention_info()?;
            let modified = segment.log_file.modified().ctx(&segment.log_path)?;
            views.push(SegmentView {
                info: CleanerSegment {
                    base_offset: segment.base_offset,
                    next_offset: segment.next_offset,
                    size_bytes: segment.size_bytes,
                    offset_index_bytes: segment.offset_index.len() as u64 * crate::segment::OFFSET_ENTRY_BYTES,
                    time_index_bytes: segment.time_index.len() as u64 * crate::segment::TIME_ENTRY_BYTES,
                    largest_timestamp_ms: retention.largest_timestamp_ms,
                    first_timestamp_ms: -1,
                },
                upper_offset: state.segments.get(i + 1).map_or(segment.next_offset, |n| n.base_offset),
                file: Arc::clone(&segment.log_file),
                path: segment.log_path.clone(),
                modified,
            });
        }
        Ok((views, state.log_start_offset))
    }

    /// What a pass would clean now; `None` when the log is not compacted.
    pub fn cleanable_range(&self, now_ms: i64) -> Result<Option<CleanableRange>, LogError> {
        let policy = self.config().compaction;
        if !policy.compact {
            return Ok(None);
        }
        let (mut views, log_start_offset) = self.segment_views()?;
        if policy.max_compaction_lag_ms < i64::MAX {
            // The first batch's timestamp of each segment, for `max.compaction.lag.ms`.
            for view in views.iter_mut().filter(|v| v.info.size_bytes > 0) {
                let header = read_header_at(view.file.as_ref(), &view.path, 0, view.info.size_bytes)?;
                view.info.first_timestamp_ms = header.base_timestamp;
            }
        }
        let infos: Vec<CleanerSegment> = views.iter().map(|v| v.info).collect();
        let checkpoint = self.cleaner_checkpoint();
        // One node: the high watermark is the log end offset.
        let range = cleanable_range(
            &infos,
            log_start_offset,
            checkpoint,
            self.last_stable_offset(),
            self.log_end_offset(),
            &policy,
            now_ms,
        );
        Ok(Some(range))
    }

    /// How urgently the log needs a pass (its dirty ratio, or 1 when the compaction lag or a
    /// due tombstone calls for one); `None` when it needs none.
    pub fn cleaning_priority(&self, now_ms: i64) -> Result<Option<f64>, LogError> {
        let Some(range) = self.cleanable_range(now_ms)? else {
            return Ok(None);
        };
        let policy = self.config().compaction;
        if range.needs_cleaning(&policy) {
            return Ok(Some(if range.lag_exceeded { 1.0 } else { range.dirty_ratio() }));
        }
        let due = lock(&self.cleaner).deletes_due_ms.is_some_and(|due| due <= now_ms);
        Ok(due.then_some(0.0))
    }

    /// One cleaning pass (Kafka's `Cleaner.doClean`): maps the dirty segments that fit `map`,
    /// rewrites every segment up to the end of the mapped range keeping the latest record of
    /// each key, and swaps the results in. Appends and reads go on meanwhile; the append lock
    /// is held only for each swap. `codec` lets it look inside compressed batches (without
    /// one, they are kept whole). `Ok(None)`: the log is not compacted or has nothing to do.
    pub fn clean(
        &self,
        map: &mut OffsetMap,
        codec: Option<&dyn RecordsCodec>,
        now_ms: i64,
    ) -> Result<Option<CleanReport>, LogError> {
        self.check_failed()?;
        let config = self.config();
        let policy = config.compaction;
        let Some(range) = self.cleanable_range(now_ms)? else {
            return Ok(None);
        };
        let (views, _) = self.segment_views()?;
        let last_batches: HashMap<i64, i64> =
            lock(&self.producers).entries().map(|e| (e.producer_id, e.last_offset())).collect();

        // 1. The offset map, from whole dirty segments.
        let dirty: Vec<usize> = (0..views.len())
            .filter(|&i| {
                let v = &views[i];
                v.upper_offset > range.first_dirty_offset
                    && v.info.base_offset < range.first_uncleanable_offset
                    && v.upper_offset <= range.first_uncleanable_offset
            })
            .collect();
        let expected: i64 = dirty.iter().map(|&i| views[i].upper_offset - views[i].info.base_offset).sum();
        map.reset(usize::try_from(expected).unwrap_or(usize::MAX));
        let aborted = self.aborted_transactions(views.first().map_or(0, |v| v.info.base_offset), i64::MAX);
        let mut tracker = TxnTracker::new(aborted.clone());
        let mut end_offset = range.first_dirty_offset;
        for &i in &dirty {
            let view = &views[i];
            let offsets = usize::try_from(view.upper_offset - view.info.base_offset).unwrap_or(usize::MAX);
            if !map.fits(offsets) {
                if end_offset == range.first_dirty_offset && offsets > 0 {
                    return Err(LogError::CleanerBufferTooSmall {
                        path: view.path.clone(),
                        offsets: offsets as u64,
                        max_entries: map.max_entries() as u64,
                    });
                }
                break;
            }
            for_each_batch(view.file.as_ref(), &view.path, view.info.size_bytes, |header, batch| {
                if header.is_control() {
                    tracker.on_control_batch(header, read_marker(batch).map(|m| m.commit));
                    return Ok(());
                }
                if tracker.on_data_batch(header) {
                    return Ok(());
                }
                let Some(section) = section_of(header, batch, codec) else {
                    return Ok(());
                };
                for record in parse_records(&section, header.base_offset, header.records_count).unwrap_or_default() {
                    if let Some(key) = record.key {
                        map.put(key_hash(key), record.offset);
                    }
                }
                Ok(())
            })?;
            end_offset = view.upper_offset;
        }
        let due_now = lock(&self.cleaner).deletes_due_ms.is_some_and(|due| due <= now_ms);
        if end_offset == range.first_dirty_offset && !due_now {
            return Ok(None);
        }

        // 2. Rewrite every segment below the end of the mapped range, group by group.
        // Whole segments below the end; an empty segment starting at the end (the active
        // segment after a truncation to its base) is not below it.
        let cleaned: Vec<&SegmentView> =
            views.iter().filter(|v| v.upper_offset <= end_offset && v.info.base_offset < end_offset).collect();
        let infos: Vec<CleanerSegment> = cleaned.iter().map(|v| v.info).collect();
        let mut report =
            CleanReport { first_dirty_offset: range.first_dirty_offset, end_offset, ..CleanReport::default() };
        let mut stats = PassStats::default();
        let horizon_ms = now_ms.saturating_sub(policy.delete_retention_ms);
        let mut tracker = TxnTracker::new(aborted);
        let mut start = 0;
        for count in group_segments(&infos, config.segment_bytes, config.segment_index_bytes) {
            let group = &cleaned[start..start + count];
            start += count;
            let written = self.clean_group(group, map, &mut tracker, &last_batches, horizon_ms, codec, &mut stats)?;
            report.segments_cleaned += count;
            report.bytes_before += group.iter().map(|v| v.info.size_bytes).sum::<u64>();
            report.bytes_after += written.size_bytes;
            if !self.swap_in(group, written, now_ms)? {
                report.abandoned = true;
                break;
            }
            report.segments_written += 1;
        }
        report.records_removed = stats.records_removed;
        let mut cleaner = lock(&self.cleaner);
        if !report.abandoned {
            cleaner.checkpoint = Some(end_offset);
        }
        cleaner.deletes_due_ms = stats.deletes_due_ms.map(|due| due.saturating_add(policy.delete_retention_ms));
        Ok(Some(report))
    }

    /// Writes the `.cleaned` files of one group; returns what was written.
    #[allow(clippy::too_many_arguments)]
    fn clean_group(
        &self,
        group: &[&SegmentView],
        map: &OffsetMap,
        tracker: &mut TxnTracker,
        last_batches: &HashMap<i64, i64>,
        horizon_ms: i64,
        codec: Option<&dyn RecordsCodec>,
        stats: &mut PassStats,
    ) -> Result<CleanedGroup, LogError> {
        let base_offset = group[0].info.base_offset;
        let config = self.config();
        let mut writer =
            CleanedWriter::create(self.storage.as_ref(), &self.dir, base_offset, config.index_interval_bytes)?;
        tracker.kept_aborted.clear();
        for view in group {
            // Kafka's legacy delete horizon: a segment last written before now − delete.retention.ms
            // loses its tombstones and its removable markers.
            let modified_ms = millis(view.modified);
            let retain_deletes = modified_ms > horizon_ms;
            let mut kept_delete = false;
            for_each_batch(view.file.as_ref(), &view.path, view.info.size_bytes, |header, batch| {
                let producer_last =
                    header.producer_id >= 0 && last_batches.get(&header.producer_id) == Some(&header.last_offset());
                let (record_count, retained, records) = if header.is_control() {
                    let discardable = tracker.on_control_batch(header, read_marker(batch).map(|m| m.commit));
                    let count = usize::try_from(header.records_count).unwrap_or(0);
                    // A marker that may go once the horizon passes: a pass is due then. (One
                    // kept because its transaction still has batches waits for a dirty pass.)
                    if discardable && retain_deletes {
                        kept_delete = true;
                    }
                    let retained = if discardable && !retain_deletes { Vec::new() } else { (0..count).collect() };
                    (count, retained, None)
                } else if tracker.on_data_batch(header) {
                    (usize::try_from(header.records_count).unwrap_or(0), Vec::new(), None)
                } else {
                    let parsed = section_of(header, batch, codec).and_then(|section| {
                        let records = parse_records(&section, header.base_offset, header.records_count)?;
                        let owned: Vec<(Vec<u8>, bool)> = records
                            .iter()
                            .map(|r| {
                                let keep = retain_record(map, r, retain_deletes);
                                if keep && r.tombstone {
                                    kept_delete = true;
                                }
                                (r.bytes.to_vec(), keep)
                            })
                            .collect();
                        Some(owned)
                    });
                    match parsed {
                        Some(records) => {
                            let retained =
                                records.iter().enumerate().filter(|(_, (_, keep))| *keep).map(|(i, _)| i).collect();
                            (records.len(), retained, Some(records))
                        }
                        // Unreadable inside (a compressed batch without a codec): kept whole.
                        None => {
                            writer.write(batch)?;
                            return Ok(());
                        }
                    }
                };
                let plan = plan_batch(record_count, retained, producer_last);
                stats.records_removed += match &plan {
                    BatchPlan::Keep => 0,
                    BatchPlan::Filter(kept) => (record_count - kept.len()) as u64,
                    BatchPlan::Empty | BatchPlan::Drop => record_count as u64,
                };
                match plan {
                    BatchPlan::Keep => writer.write(batch),
                    BatchPlan::Drop => Ok(()),
                    BatchPlan::Empty => writer.write(&empty_batch(batch)),
                    BatchPlan::Filter(kept) => {
                        let records = records.unwrap_or_default();
                        let kept: Vec<&[u8]> = kept.iter().map(|&i| &records[i].0[..]).collect();
                        let rebuilt = rebuild_batch(batch, &kept);
                        // A compressed batch is filtered only when a codec could open it.
                        let rebuilt = match (header.compression(), codec) {
                            (Compression::None, _) => rebuilt,
                            (compression, Some(codec)) => codec
                                .compress(&rebuilt, compression)
                                .map_err(|reason| LogError::Corrupt { path: view.path.clone(), reason })?,
                            (_, None) => batch.to_vec(),
                        };
                        writer.write(&rebuilt)
                    }
                }
            })?;
            if kept_delete {
                stats.deletes_due_ms = Some(stats.deletes_due_ms.map_or(modified_ms, |due| due.min(modified_ms)));
            }
        }
        writer.flush()?;
        let CleanedWriter { log_path, file, position, offset_entries, time_entries, .. } = writer;
        // The cleaned segment is as old as the newest of the segments it replaces (Kafka's
        // `setLastModified`), so that the delete horizon keeps counting from there.
        let newest = group.iter().map(|v| v.modified).max().unwrap_or(UNIX_EPOCH);
        file.set_modified(newest).ctx(&log_path)?;
        file.sync_data().ctx(&log_path)?;
        let fs = self.storage.as_ref();
        let write_synced = |extension: &str, bytes: &[u8]| -> Result<(), LogError> {
            let path = with_suffix(&segment_path(&self.dir, base_offset, extension), CLEANED_SUFFIX);
            let file = fs.open(&path, true).ctx(&path)?;
            file.write_all_at(bytes, 0).ctx(&path)?;
            file.sync_data().ctx(&path)
        };
        write_synced("index", &encode_offset_entries(&offset_entries))?;
        write_synced("timeindex", &encode_time_entries(&time_entries))?;
        if !tracker.kept_aborted.is_empty() {
            let path = with_suffix(&segment_path(&self.dir, base_offset, "txnindex"), CLEANED_SUFFIX);
            let _ = remove_if_exists(fs, &path);
            let mut index = TxnIndex::empty(Arc::clone(&self.storage), path.clone());
            for entry in tracker.kept_aborted.drain(..) {
                index.append(entry)?;
            }
            if let Some((file, path)) = index.take_unsynced() {
                file.sync_data().ctx(&path)?;
            }
        }
        let end_offset = group.last().map_or(base_offset, |v| v.upper_offset);
        write_synced(REPLACES, format!("{end_offset}\n").as_bytes())?;
        sync_dir(fs, &self.dir)?;
        Ok(CleanedGroup { base_offset, size_bytes: position })
    }

    /// Swaps the cleaned files of `group` in, under the append lock. `Ok(false)` when the
    /// group's segments changed meanwhile: the cleaned files are dropped.
    fn swap_in(&self, group: &[&SegmentView], cleaned: CleanedGroup, now_ms: i64) -> Result<bool, LogError> {
        let base_offset = cleaned.base_offset;
        let cleaned_path =
            |extension: &str| with_suffix(&segment_path(&self.dir, base_offset, extension), CLEANED_SUFFIX);
        let swap_path = |extension: &str| with_suffix(&segment_path(&self.dir, base_offset, extension), SWAP_SUFFIX);
        let fs = self.storage.as_ref();
        let _append = lock(&self.append_lock);
        let position = {
            let state = self.read_state();
            let position = state.segments.iter().position(|s| s.base_offset == base_offset);
            let unchanged = position.is_some_and(|p| {
                group.len() < state.segments.len() - p
                    && group.iter().zip(&state.segments[p..]).all(|(v, s)| Arc::ptr_eq(&v.file, &s.log_file))
            });
            if !unchanged {
                drop(state);
                for extension in SEGMENT_EXTENSIONS.iter().chain(&[REPLACES]) {
                    let _ = remove_if_exists(fs, &cleaned_path(extension));
                }
                return Ok(false);
            }
            position.unwrap_or(0)
        };
        // The commit point is `B.log.swap`; everything it needs is renamed first.
        for extension in ["index", "timeindex", "txnindex", REPLACES, "log"] {
            match fs.rename(&cleaned_path(extension), &swap_path(extension)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).ctx(&cleaned_path(extension)),
                _ => {}
            }
        }
        sync_dir(fs, &self.dir)?;
        // The old segments' files wait for `file.delete.delay.ms`; open readers keep them.
        let mut replaced = Vec::new();
        for view in group {
            for extension in SEGMENT_EXTENSIONS {
                let path = segment_path(&self.dir, view.info.base_offset, extension);
                let target = with_suffix(&path, REPLACED_SUFFIX);
                match fs.rename(&path, &target) {
                    Ok(()) => replaced.push(target),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).ctx(&path),
                }
            }
        }
        for extension in SEGMENT_EXTENSIONS {
            match fs.rename(&swap_path(extension), &segment_path(&self.dir, base_offset, extension)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).ctx(&swap_path(extension)),
                _ => {}
            }
        }
        let _ = remove_if_exists(fs, &swap_path(REPLACES));
        let mut segment = Segment::open(&self.storage, &self.dir, base_offset, false)?;
        if !segment.load_trusted()? {
            // The cleaned files were fsynced before the swap: nothing to write again.
            segment.recover(self.config().index_interval_bytes, i64::MAX)?;
        }
        let mut state = self.write_state();
        state.segments.splice(position..position + group.len(), [segment]);
        state.dir_unsynced = true;
        let due_ms = now_ms.saturating_add(self.config().file_delete_delay_ms);
        state.pending_deletions.push(PendingDeletion { paths: replaced, due_ms });
        Ok(true)
    }
}

/// What `clean_group` wrote.
struct CleanedGroup {
    base_offset: i64,
    size_bytes: u64,
}

fn parse_base(stem: &str) -> Option<i64> {
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok()).flatten()
}

/// The end of the offsets a `.swap` segment replaces: from its `replaces` file, or else (the
/// file lost) the segment's own last offset + 1, Kafka's rule.
fn swap_end_offset(fs: &dyn Storage, dir: &Path, base_offset: i64) -> Result<i64, LogError> {
    for suffix in [SWAP_SUFFIX, CLEANED_SUFFIX] {
        let path = with_suffix(&segment_path(dir, base_offset, REPLACES), suffix);
        if let Ok(bytes) = fs.read(&path) {
            if let Ok(end) = String::from_utf8_lossy(&bytes).trim().parse::<i64>() {
                return Ok(end);
            }
        }
    }
    let path = with_suffix(&segment_path(dir, base_offset, "log"), SWAP_SUFFIX);
    let file = fs.open(&path, false).ctx(&path)?;
    let len = file.size().ctx(&path)?;
    let mut end = base_offset + 1;
    let _ = for_each_batch(file.as_ref(), &path, len, |header, _| {
        end = header.last_offset() + 1;
        Ok(())
    });
    Ok(end)
}

/// At open: finishes every swap a crash interrupted and removes the leftovers of unfinished
/// passes (see the module docs). Returns whether anything changed.
pub(super) fn complete_swaps(fs: &dyn Storage, dir: &Path) -> Result<bool, LogError> {
    let mut names: Vec<String> = fs.list_dir(dir).ctx(dir)?.into_iter().map(|(name, _)| name).collect();
    names.sort();
    let swaps: Vec<i64> = names.iter().filter_map(|n| n.strip_suffix(".log.swap")).filter_map(parse_base).collect();
    let mut changed = false;
    for base_offset in swaps {
        let end_offset = swap_end_offset(fs, dir, base_offset)?;
        // The old segments inside the swap's range go.
        let doomed: Vec<i64> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".log"))
            .filter_map(parse_base)
            .filter(|&b| b >= base_offset && b < end_offset)
            .collect();
        for base in doomed {
            for extension in SEGMENT_EXTENSIONS {
                let path = segment_path(dir, base, extension);
                remove_if_exists(fs, &path).ctx(&path)?;
            }
        }
        for extension in ["index", "timeindex", "txnindex", "log"] {
            let target = segment_path(dir, base_offset, extension);
            for suffix in [SWAP_SUFFIX, CLEANED_SUFFIX] {
                let source = with_suffix(&target, suffix);
                if fs.exists(&source) {
                    fs.rename(&source, &target).ctx(&source)?;
                    break;
                }
            }
        }
        changed = true;
    }
    for name in &names {
        if name.ends_with(CLEANED_SUFFIX) || name.ends_with(SWAP_SUFFIX) {
            let path = dir.join(name);
            remove_if_exists(fs, &path).ctx(&path)?;
            changed = true;
        }
    }
    if changed {
        sync_dir(fs, dir)?;
    }
    Ok(changed)
}
