//! One segment: a `.log` file of record batches with its sparse offset and time indexes.
//!
//! A segment is plain data; the locking lives in `log.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::batch::{check_stored_batch, BatchHeader, HEADER_BYTES};
use crate::error::{IoContext, LogError};
use crate::retention::SegmentInfo;
use crate::storage::{remove_if_exists, Storage, StorageFile};
use crate::txn_index::TxnIndex;

pub(crate) const OFFSET_ENTRY_BYTES: u64 = 8;
pub(crate) const TIME_ENTRY_BYTES: u64 = 12;
/// "No timestamp seen yet"; below Kafka's own NO_TIMESTAMP (-1) so that -1 still counts.
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

pub(crate) fn segment_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// Offset index entry: the batch whose last offset is `base + relative_offset` starts at
/// `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Time index entry: up to here the greatest timestamp is `timestamp_ms`, held by the batch whose
/// last offset is `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

pub(crate) fn encode_offset_entries(entries: &[OffsetEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY_BYTES as usize);
    for entry in entries {
        out.extend(entry.relative_offset.to_be_bytes());
        out.extend(entry.position.to_be_bytes());
    }
    out
}

pub(crate) fn encode_time_entries(entries: &[TimeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY_BYTES as usize);
    for entry in entries {
        out.extend(entry.timestamp_ms.to_be_bytes());
        out.extend(entry.relative_offset.to_be_bytes());
    }
    out
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Running state that decides where the next index entries go; copied by an append, advanced
/// over its batches, and published with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexTail {
    pub has_index_entry: bool,
    pub bytes_since_index_entry: u64,
    pub max_timestamp: i64,
    /// Last offset of the batch holding `max_timestamp`.
    pub max_timestamp_offset: i64,
    pub last_time_entry_ms: i64,
}

impl IndexTail {
    pub(crate) fn new() -> IndexTail {
        IndexTail {
            has_index_entry: false,
            bytes_since_index_entry: 0,
            max_timestamp: NO_TIMESTAMP,
            max_timestamp_offset: -1,
            last_time_entry_ms: NO_TIMESTAMP,
        }
    }

    /// Accounts for the batch `header` written at `position` of the segment based at
    /// `base_offset`, emitting the index entries it earns. The caller guarantees relative offsets
    /// and positions fit in a u32 (segments roll before they would not).
    pub(crate) fn observe(
        &mut self,
        base_offset: i64,
        position: u64,
        header: &BatchHeader,
        index_interval_bytes: u32,
        offset_entries: &mut Vec<OffsetEntry>,
        time_entries: &mut Vec<TimeEntry>,
    ) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_offset = header.last_offset();
        }
        if !self.has_index_entry || self.bytes_since_index_entry >= u64::from(index_interval_bytes) {
            offset_entries.push(OffsetEntry {
                relative_offset: (header.last_offset() - base_offset) as u32,
                position: position as u32,
            });
            self.has_index_entry = true;
            self.bytes_since_index_entry = 0;
            // Kafka writes no time index entry for NO_TIMESTAMP (-1).
            if self.max_timestamp > self.last_time_entry_ms && self.max_timestamp >= 0 {
                time_entries.push(TimeEntry {
                    timestamp_ms: self.max_timestamp,
                    relative_offset: (self.max_timestamp_offset - base_offset) as u32,
                });
                self.last_time_entry_ms = self.max_timestamp;
            }
        }
        self.bytes_since_index_entry += header.size() as u64;
    }
}

/// Reads and sanity-checks the batch header at `position`, which must lie below `limit_bytes`.
pub(crate) fn read_header_at(
    file: &dyn StorageFile,
    path: &Path,
    position: u64,
    limit_bytes: u64,
) -> Result<BatchHeader, LogError> {
    let corrupt =
        |reason: &str| LogError::Corrupt { path: path.to_path_buf(), reason: format!("{reason} at byte {position}") };
    if position + HEADER_BYTES as u64 > limit_bytes {
        return Err(corrupt("truncated batch header"));
    }
    let mut buf = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut buf, position).ctx(path)?;
    let header = BatchHeader::parse(&buf).map_err(|_| corrupt("unreadable batch header"))?;
    if header.size() < HEADER_BYTES || position + header.size() as u64 > limit_bytes || header.last_offset_delta < 0 {
        return Err(corrupt("batch header does not fit the segment"));
    }
    Ok(header)
}

/// Walks headers from `position` to the first batch whose last offset is ≥ `offset`.
pub(crate) fn find_batch(
    file: &dyn StorageFile,
    path: &Path,
    mut position: u64,
    limit_bytes: u64,
    offset: i64,
) -> Result<Option<(u64, BatchHeader)>, LogError> {
    while position < limit_bytes {
        let header = read_header_at(file, path, position, limit_bytes)?;
        if header.last_offset() >= offset {
            return Ok(Some((position, header)));
        }
        position += header.size() as u64;
    }
    Ok(None)
}

pub(crate) fn read_bytes_at(
    file: &dyn StorageFile,
    path: &Path,
    position: u64,
    len: usize,
) -> Result<Vec<u8>, LogError> {
    let mut out = vec![0u8; len];
    file.read_exact_at(&mut out, position).ctx(path)?;
    Ok(out)
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub timeindex_path: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub log_file: Arc<dyn StorageFile>,
    pub index_file: Arc<dyn StorageFile>,
    pub timeindex_file: Arc<dyn StorageFile>,
    /// Bytes of whole batches; readers never look past it.
    pub size_bytes: u64,
    /// Last offset + 1, or `base_offset` when empty.
    pub next_offset: i64,
    pub offset_index: Vec<OffsetEntry>,
    pub time_index: Vec<TimeEntry>,
    pub tail: IndexTail,
    /// Wall time of the first append since open, for `segment_ms`.
    pub created_ms: Option<i64>,
    pub log_unsynced: bool,
    pub index_unsynced: bool,
    /// Transactions aborted by markers in this segment.
    pub txn_index: TxnIndex,
}

impl Segment {
    /// Opens (or with `fresh`, creates empty) the three files of the segment at `base_offset`.
    /// The in-memory state is empty until `load_trusted` or `recover`.
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        fresh: bool,
    ) -> Result<Segment, LogError> {
        let log_path = segment_path(dir, base_offset, "log");
        let index_path = segment_path(dir, base_offset, "index");
        let timeindex_path = segment_path(dir, base_offset, "timeindex");
        let log_file = storage.open(&log_path, fresh).ctx(&log_path)?;
        let index_file = storage.open(&index_path, fresh).ctx(&index_path)?;
        let timeindex_file = storage.open(&timeindex_path, fresh).ctx(&timeindex_path)?;
        let txnindex_path = segment_path(dir, base_offset, "txnindex");
        let txn_index = if fresh {
            let stale = TxnIndex::empty(Arc::clone(storage), txnindex_path);
            stale.delete_file()?;
            stale
        } else {
            TxnIndex::load(Arc::clone(storage), txnindex_path)?
        };
        Ok(Segment {
            base_offset,
            log_path,
            index_path,
            timeindex_path,
            storage: Arc::clone(storage),
            log_file,
            index_file,
            timeindex_file,
            size_bytes: 0,
            next_offset: base_offset,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            tail: IndexTail::new(),
            created_ms: None,
            log_unsynced: fresh,
            index_unsynced: fresh,
            txn_index,
        })
    }

    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        for path in [&self.log_path, &self.index_path, &self.timeindex_path] {
            remove_if_exists(self.storage.as_ref(), path).ctx(path)?;
        }
        self.txn_index.delete_file()
    }

    /// What retention looks at: Kafka's `largestTimestamp` is the greatest record timestamp, or
    /// the file's modification time when no record has one (≥ 0).
    pub(crate) fn retention_info(&self) -> Result<SegmentInfo, LogError> {
        let largest_timestamp_ms = if self.tail.max_timestamp >= 0 {
            self.tail.max_timestamp
        } else {
            let modified = self.log_file.modified().ctx(&self.log_path)?;
            modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
        };
        Ok(SegmentInfo {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            size_bytes: self.size_bytes,
            largest_timestamp_ms,
        })
    }

    /// Loads the segment trusting its contents: reads the index files and walks the headers after
    /// the last index entry. `Ok(false)` means something is inconsistent and the caller must
    /// `recover` the segment.
    pub(crate) fn load_trusted(&mut self) -> Result<bool, LogError> {
        self.size_bytes = self.log_file.size().ctx(&self.log_path)?;
        let index_bytes = self.storage.read(&self.index_path).ctx(&self.index_path)?;
        let time_bytes = self.storage.read(&self.timeindex_path).ctx(&self.timeindex_path)?;
        if index_bytes.len() as u64 % OFFSET_ENTRY_BYTES != 0 || time_bytes.len() as u64 % TIME_ENTRY_BYTES != 0 {
            return Ok(false);
        }
        let offset_index: Vec<OffsetEntry> = index_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES as usize)
            .map(|c| OffsetEntry { relative_offset: u32_at(c, 0), position: u32_at(c, 4) })
            .collect();
        let time_index: Vec<TimeEntry> = time_bytes
            .chunks_exact(TIME_ENTRY_BYTES as usize)
            .map(|c| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&c[0..8]);
                TimeEntry { timestamp_ms: i64::from_be_bytes(ts), relative_offset: u32_at(c, 8) }
            })
            .collect();
        let offsets_increase = offset_index
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        let times_increase = time_index
            .windows(2)
            .all(|w| w[0].timestamp_ms < w[1].timestamp_ms && w[0].relative_offset < w[1].relative_offset);
        let in_bounds = offset_index.last().is_none_or(|e| u64::from(e.position) < self.size_bytes);
        // The first batch always earns an entry, so a non-empty segment has one.
        if !offsets_increase || !times_increase || !in_bounds || (offset_index.is_empty() && self.size_bytes > 0) {
            return Ok(false);
        }
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.rescan_tail()
    }

    /// Recomputes `next_offset` and the index tail by walking headers from the last index entry.
    /// `Ok(false)` when the walk finds something inconsistent.
    pub(crate) fn rescan_tail(&mut self) -> Result<bool, LogError> {
        let mut tail = IndexTail::new();
        if let Some(last) = self.time_index.last() {
            tail.max_timestamp = last.timestamp_ms;
            tail.max_timestamp_offset = self.base_offset + i64::from(last.relative_offset);
            tail.last_time_entry_ms = last.timestamp_ms;
        }
        let (mut position, mut expected) = match self.offset_index.last() {
            Some(entry) => (u64::from(entry.position), None),
            None => (0, Some(self.base_offset)),
        };
        let mut next_offset = self.base_offset;
        while position < self.size_bytes {
            let header = match read_header_at(self.log_file.as_ref(), &self.log_path, position, self.size_bytes) {
                Ok(header) => header,
                Err(LogError::Corrupt { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            match expected {
                Some(offset) if header.base_offset < offset => return Ok(false),
                None => {
                    // The walk starts at the last index entry; it must name this batch.
                    let indexed = self.offset_index.last().map(|e| e.relative_offset);
                    if indexed != Some((header.last_offset() - self.base_offset) as u32)
                        || header.base_offset < self.base_offset
                    {
                        return Ok(false);
                    }
                    tail.has_index_entry = true;
                }
                _ => {}
            }
            if header.max_timestamp > tail.max_timestamp {
                tail.max_timestamp = header.max_timestamp;
                tail.max_timestamp_offset = header.last_offset();
            }
            tail.bytes_since_index_entry += header.size() as u64;
            next_offset = header.last_offset() + 1;
            expected = Some(next_offset);
            position += header.size() as u64;
        }
        let last_relative = next_offset - 1 - self.base_offset;
        if self.time_index.last().is_some_and(|e| i64::from(e.relative_offset) > last_relative) {
            return Ok(false);
        }
        self.next_offset = next_offset;
        self.tail = tail;
        Ok(true)
    }

    /// Re-validates every batch (header, magic, CRC, counts, contiguous offsets), cuts the file
    /// at the first invalid one, and rebuilds both indexes. Returns the bytes cut.
    ///
    /// The batches holding offsets at or past `recovery_point` were never known to be durable:
    /// they are written again, so that the next fsync stores them. After a failed fsync the
    /// kernel may keep the data in the page cache marked clean, where this run reads it, while
    /// no later fsync would ever write it (Linux since 4.13), and a power loss would then take
    /// it together with the acknowledged data behind it.
    pub(crate) fn recover(&mut self, index_interval_bytes: u32, recovery_point: i64) -> Result<u64, LogError> {
        let file_bytes = self.log_file.size().ctx(&self.log_path)?;
        let mut position = 0u64;
        let mut expected = self.base_offset;
        let mut tail = IndexTail::new();
        let mut offset_index = Vec::new();
        let mut time_index = Vec::new();
        let mut buf = Vec::new();
        while position < file_bytes {
            let header = match read_header_at(self.log_file.as_ref(), &self.log_path, position, file_bytes) {
                Ok(header) => header,
                Err(LogError::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            };
            let end = position + header.size() as u64;
            // Offsets increase; compaction may leave gaps between batches.
            if header.base_offset < expected || end > u64::from(u32::MAX) {
                break;
            }
            buf.resize(header.size(), 0);
            self.log_file.read_exact_at(&mut buf, position).ctx(&self.log_path)?;
            if check_stored_batch(&buf, 0).is_err() {
                break;
            }
            if header.last_offset() >= recovery_point {
                self.log_file.write_all_at(&buf, position).ctx(&self.log_path)?;
            }
            tail.observe(self.base_offset, position, &header, index_interval_bytes, &mut offset_index, &mut time_index);
            expected = header.last_offset() + 1;
            position = end;
        }
        let truncated_bytes = file_bytes - position;
        if truncated_bytes > 0 {
            self.log_file.set_len(position).ctx(&self.log_path)?;
        }
        self.size_bytes = position;
        self.next_offset = expected;
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.tail = tail;
        self.rewrite_indexes()?;
        self.log_unsynced = true;
        Ok(truncated_bytes)
    }

    /// Replaces both index files with the in-memory entries.
    pub(crate) fn rewrite_indexes(&mut self) -> Result<(), LogError> {
        let index_bytes = encode_offset_entries(&self.offset_index);
        self.index_file.set_len(0).ctx(&self.index_path)?;
        self.index_file.write_all_at(&index_bytes, 0).ctx(&self.index_path)?;
        let time_bytes = encode_time_entries(&self.time_index);
        self.timeindex_file.set_len(0).ctx(&self.timeindex_path)?;
        self.timeindex_file.write_all_at(&time_bytes, 0).ctx(&self.timeindex_path)?;
        self.index_unsynced = true;
        Ok(())
    }

    /// Cuts the segment at `position`, the start of the batch with base offset `base_offset`.
    pub(crate) fn truncate_at(&mut self, position: u64) -> Result<(), LogError> {
        self.log_file.set_len(position).ctx(&self.log_path)?;
        self.size_bytes = position;
        self.offset_index.retain(|entry| u64::from(entry.position) < position);
        // Rebuild the time index tail from what survives: entries for offsets still present.
        let kept_last = self.offset_index.last().map(|e| e.relative_offset);
        self.time_index.retain(|entry| kept_last.is_some_and(|last| entry.relative_offset <= last));
        self.rewrite_indexes()?;
        self.log_unsynced = true;
        if self.rescan_tail()? {
            self.txn_index.truncate_from(self.next_offset)
        } else {
            Err(LogError::Corrupt {
                path: self.log_path.clone(),
                reason: "segment inconsistent after truncation".to_string(),
            })
        }
    }

    /// Position of a batch at or before the one holding `offset` (floor lookup in the index).
    pub(crate) fn lookup_position(&self, offset: i64) -> u64 {
        let relative = offset - self.base_offset;
        let count = self.offset_index.partition_point(|e| i64::from(e.relative_offset) < relative);
        match count {
            0 => 0,
            n => u64::from(self.offset_index[n - 1].position),
        }
    }

    /// An offset such that every batch before it has a max timestamp below `timestamp_ms`.
    pub(crate) fn time_lookup_offset(&self, timestamp_ms: i64) -> i64 {
        let count = self.time_index.partition_point(|e| e.timestamp_ms < timestamp_ms);
        match count {
            0 => self.base_offset,
            n => self.base_offset + i64::from(self.time_index[n - 1].relative_offset) + 1,
        }
    }
}
