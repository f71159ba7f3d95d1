//! Log compaction: the decisions of Kafka's log cleaner (`LogCleaner`, `Cleaner`,
//! `LogCleanerManager`), as pure functions over segment summaries and batch bytes. The file
//! work (`.cleaned` and `.swap` files, the swap under the append lock, recovery at open) is
//! `Log::clean` in `log.rs`.
//!
//! A pass over one log:
//! 1. The dirty range runs from the cleaner checkpoint (the first dirty offset) to the first
//!    uncleanable offset: the least of the active segment's base, the last stable offset, the
//!    high watermark and the base of the first segment younger than `min.compaction.lag.ms`
//!    ([`cleanable_range`]).
//! 2. An [`OffsetMap`] (key hash → latest offset) is filled from the dirty segments, whole
//!    segments only, as many as fit the map ([`OffsetMap::fits`]); the rest waits for a later
//!    pass.
//! 3. Every segment from the log start to the end of the mapped range is rewritten, in groups
//!    that fit one segment ([`group_segments`]). A record stays unless a later record has its
//!    key, or it is a tombstone in a segment older than `delete.retention.ms`
//!    ([`retain_record`]); batches of aborted transactions go, and transaction markers go once
//!    their transaction's data is gone and `delete.retention.ms` has passed
//!    ([`TxnTracker`]). The last batch of each producer is kept, emptied if need be, so the
//!    producer state survives ([`BatchPlan`]). Offsets never change: a rewritten batch keeps
//!    its base offset and last offset delta (Kafka's `overrideLastOffset`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use crate::batch::{read_varint, BatchHeader, Compression, HEADER_BYTES, LOG_OVERHEAD_BYTES};
use crate::producer::AbortedTxn;

/// Kafka's `log.cleaner.dedupe.buffer.size` default: 128 MiB across all cleaner threads.
pub const DEFAULT_DEDUPE_BUFFER_BYTES: u64 = 128 * 1024 * 1024;
/// Kafka's `log.cleaner.io.buffer.load.factor`: the share of the map's slots a pass may fill.
pub const MAP_LOAD_FACTOR: f64 = 0.9;
/// Bytes of one map slot: a 16-byte key hash (Kafka's MD5 width) and an 8-byte offset.
pub const MAP_SLOT_BYTES: u64 = 24;

/// The compaction settings of one log, Kafka's topic configs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    /// `cleanup.policy` contains `compact`.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long tombstones and removable markers stay.
    pub delete_retention_ms: i64,
}

impl Default for CompactionPolicy {
    fn default() -> CompactionPolicy {
        CompactionPolicy {
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// The hash a key is known by in the offset map: 128 bits, so that two keys colliding (and one
/// losing its latest record) is as unlikely as with Kafka's MD5.
pub type KeyHash = u128;

pub fn key_hash(key: &[u8]) -> KeyHash {
    let mut low = DefaultHasher::new();
    key.hash(&mut low);
    let mut high = DefaultHasher::new();
    0x5bd1_e995u32.hash(&mut high);
    key.hash(&mut high);
    (u128::from(high.finish()) << 64) | u128::from(low.finish())
}

/// Kafka's `SkimpyOffsetMap`: key hash → the latest offset seen for it, in a fixed number of
/// slots sized from the dedupe buffer. Open addressing with linear probing; never grows.
pub struct OffsetMap {
    /// (hash, offset); offset -1 marks a free slot.
    slots: Vec<(KeyHash, i64)>,
    capacity_slots: usize,
    len: usize,
    latest_offset: i64,
}

impl OffsetMap {
    /// A map that may use `buffer_bytes` (at least one slot). The slots are allocated by
    /// [`OffsetMap::reset`], no more than a pass needs.
    pub fn new(buffer_bytes: u64) -> OffsetMap {
        let capacity_slots = usize::try_from(buffer_bytes / MAP_SLOT_BYTES).unwrap_or(usize::MAX).max(1);
        OffsetMap { slots: Vec::new(), capacity_slots, len: 0, latest_offset: -1 }
    }

    /// Entries a pass may put in at most (Kafka's `maxDesiredMapSize`).
    pub fn max_entries(&self) -> usize {
        ((self.capacity_slots as f64 * MAP_LOAD_FACTOR) as usize).max(1)
    }

    /// Empties the map and sizes it for up to `expected_entries` (capped by the buffer).
    pub fn reset(&mut self, expected_entries: usize) {
        let wanted = ((expected_entries as f64 / MAP_LOAD_FACTOR) as usize + 1).clamp(1, self.capacity_slots);
        self.slots.clear();
        self.slots.shrink_to(wanted);
        self.slots.resize(wanted, (0, -1));
        self.len = 0;
        self.latest_offset = -1;
    }

    /// Whether `more` entries fit after the current ones.
    pub fn fits(&self, more: usize) -> bool {
        self.len.saturating_add(more) <= self.max_entries().min(self.slots.len())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The greatest offset put in since the last reset, -1 when none.
    pub fn latest_offset(&self) -> i64 {
        self.latest_offset
    }

    fn slot_of(&self, hash: KeyHash) -> usize {
        let start = (hash as u64 ^ (hash >> 64) as u64) as usize % self.slots.len();
        let mut index = start;
        loop {
            let (slot_hash, offset) = self.slots[index];
            if offset < 0 || slot_hash == hash {
                return index;
            }
            index = (index + 1) % self.slots.len();
            // The map is never full (`fits` keeps it under the load factor), so this ends.
            debug_assert_ne!(index, start, "offset map full");
        }
    }

    /// Records `offset` as the latest for `hash`. Returns false, changing nothing, when the map
    /// is full.
    pub fn put(&mut self, hash: KeyHash, offset: i64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let index = self.slot_of(hash);
        if self.slots[index].1 < 0 {
            if self.len + 1 >= self.slots.len() {
                return false;
            }
            self.len += 1;
        }
        self.slots[index] = (hash, offset.max(self.slots[index].1));
        self.latest_offset = self.latest_offset.max(offset);
        true
    }

    /// The latest offset of `hash`, if it was put.
    pub fn get(&self, hash: KeyHash) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        let (slot_hash, offset) = self.slots[self.slot_of(hash)];
        (offset >= 0 && slot_hash == hash).then_some(offset)
    }
}

/// What the cleaner knows of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerSegment {
    pub base_offset: i64,
    /// Last offset + 1 (`base_offset` when empty).
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Bytes of its offset and time index files.
    pub offset_index_bytes: u64,
    pub time_index_bytes: u64,
    /// The greatest record timestamp, or the file's modification time when none (retention's
    /// `largestTimestamp`); what the compaction lags are measured from.
    pub largest_timestamp_ms: i64,
    /// The first batch's timestamp (its base timestamp), for `max.compaction.lag.ms`; -1 when
    /// unknown.
    pub first_timestamp_ms: i64,
}

/// The cleanable part of a log, Kafka's `LogToClean`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanableRange {
    /// Where the dirty part starts (the checkpoint, clamped into the log).
    pub first_dirty_offset: i64,
    /// Where cleaning must stop.
    pub first_uncleanable_offset: i64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// `max.compaction.lag.ms` has passed for a dirty record: clean whatever the ratio.
    pub lag_exceeded: bool,
}

impl CleanableRange {
    /// Kafka's `cleanableRatio`: dirty bytes over all the bytes up to the uncleanable offset.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    /// Whether a pass should run now: something is dirty and the ratio or the lag calls for it.
    pub fn needs_cleaning(&self, policy: &CompactionPolicy) -> bool {
        self.dirty_bytes > 0 && (self.lag_exceeded || self.dirty_ratio() >= policy.min_cleanable_dirty_ratio)
    }
}

/// Kafka's `LogCleanerManager.cleanableOffsets` and `LogToClean`, over `segments` (oldest
/// first, the last one active). `checkpoint` is the cleaner checkpoint of the log (`None`:
/// never cleaned); `last_stable_offset` and `high_watermark` bound what may be cleaned.
pub fn cleanable_range(
    segments: &[CleanerSegment],
    log_start_offset: i64,
    checkpoint: Option<i64>,
    last_stable_offset: i64,
    high_watermark: i64,
    policy: &CompactionPolicy,
    now_ms: i64,
) -> CleanableRange {
    let log_end_offset = segments.last().map_or(log_start_offset, |s| s.next_offset);
    // A checkpoint below the log start (retention, DeleteRecords) or past the end (a truncation)
    // restarts from the log start, as in Kafka.
    let first_dirty_offset = match checkpoint {
        Some(offset) if offset >= log_start_offset && offset <= log_end_offset => offset,
        _ => log_start_offset,
    };
    let active_base = segments.last().map_or(log_start_offset, |s| s.base_offset);
    let mut first_uncleanable_offset = active_base.min(last_stable_offset).min(high_watermark);
    // Segments holding a record younger than `min.compaction.lag.ms` wait.
    if policy.min_compaction_lag_ms > 0 {
        let horizon_ms = now_ms.saturating_sub(policy.min_compaction_lag_ms);
        if let Some(young) =
            segments.iter().filter(|s| s.next_offset > first_dirty_offset).find(|s| s.largest_timestamp_ms > horizon_ms)
        {
            first_uncleanable_offset = first_uncleanable_offset.min(young.base_offset);
        }
    }
    let first_uncleanable_offset = first_uncleanable_offset.max(first_dirty_offset);
    let mut clean_bytes = 0;
    let mut dirty_bytes = 0;
    let mut lag_exceeded = false;
    for (i, segment) in segments.iter().enumerate() {
        let upper_offset = segments.get(i + 1).map_or(segment.next_offset, |n| n.base_offset);
        // Only whole segments are cleaned: one holding the uncleanable offset stays dirty.
        if upper_offset <= first_dirty_offset {
            clean_bytes += segment.size_bytes;
        } else if segment.base_offset < first_uncleanable_offset && upper_offset <= first_uncleanable_offset {
            dirty_bytes += segment.size_bytes;
            if policy.max_compaction_lag_ms < i64::MAX
                && segment.first_timestamp_ms >= 0
                && now_ms.saturating_sub(segment.first_timestamp_ms) > policy.max_compaction_lag_ms
            {
                lag_exceeded = true;
            }
        }
    }
    CleanableRange { first_dirty_offset, first_uncleanable_offset, clean_bytes, dirty_bytes, lag_exceeded }
}

/// Kafka's `groupSegmentsBySize`: consecutive segments merged while the group's log stays
/// within `max_bytes` (`segment.bytes`), each index within `max_index_bytes`
/// (`segment.index.bytes`), and its offsets within a u32 of its base. Returns the group sizes.
pub fn group_segments(segments: &[CleanerSegment], max_bytes: u64, max_index_bytes: u64) -> Vec<usize> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < segments.len() {
        let first = segments[i];
        let (mut log_bytes, mut index_bytes, mut time_bytes) =
            (first.size_bytes, first.offset_index_bytes, first.time_index_bytes);
        let mut count = 1;
        while let Some(next) = segments.get(i + count) {
            let fits = log_bytes + next.size_bytes <= max_bytes
                && index_bytes + next.offset_index_bytes <= max_index_bytes
                && time_bytes + next.time_index_bytes <= max_index_bytes
                && next.next_offset - 1 - first.base_offset <= i64::from(u32::MAX >> 1);
            if !fits {
                break;
            }
            log_bytes += next.size_bytes;
            index_bytes += next.offset_index_bytes;
            time_bytes += next.time_index_bytes;
            count += 1;
        }
        groups.push(count);
        i += count;
    }
    groups
}

/// One record of an uncompressed records section, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    /// `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The value is null: a tombstone.
    pub tombstone: bool,
    /// The whole record, length prefix included, to copy as it is.
    pub bytes: &'a [u8],
}

/// The records of an uncompressed `section` of `records_count` records in a batch based at
/// `base_offset`. `None` if the bytes do not hold exactly that many well-formed records.
pub fn parse_records(section: &[u8], base_offset: i64, records_count: i32) -> Option<Vec<RecordRef<'_>>> {
    let count = usize::try_from(records_count).ok()?;
    // Every record takes at least 7 bytes: never allocate more than the bytes can back.
    let mut records = Vec::with_capacity(count.min(section.len() / 7));
    let mut rest = section;
    for _ in 0..count {
        let before = rest;
        let length = usize::try_from(read_varint(&mut rest)?).ok()?;
        let prefix = before.len() - rest.len();
        let (mut body, after) = rest.split_at_checked(length)?;
        let bytes = &before[..prefix + length];
        rest = after;
        let (_attributes, tail) = body.split_first()?;
        body = tail;
        let _timestamp_delta = read_varint(&mut body)?;
        let offset_delta = read_varint(&mut body)?;
        let key_length = read_varint(&mut body)?;
        let key = if key_length < 0 {
            None
        } else {
            let (key, tail) = body.split_at_checked(usize::try_from(key_length).ok()?)?;
            body = tail;
            Some(key)
        };
        let value_length = read_varint(&mut body)?;
        let value = if value_length < 0 { None } else { Some(body.get(..usize::try_from(value_length).ok()?)?) };
        let offset = base_offset.checked_add(offset_delta)?;
        records.push(RecordRef { offset, key, value, tombstone: value.is_none(), bytes });
    }
    rest.is_empty().then_some(records)
}

/// Kafka's `shouldRetainRecord` for a data record: it stays unless a later offset of its key
/// is in the map, or it is a tombstone whose delete horizon has passed (`retain_deletes`
/// false). A keyless record on a compacted log goes (the produce path refuses them).
/// A pass maps whole segments and cleans none past them, so every keyed record it meets at or
/// above the first dirty offset is in the map.
pub fn retain_record(map: &OffsetMap, record: &RecordRef<'_>, retain_deletes: bool) -> bool {
    let Some(key) = record.key else {
        return false;
    };
    let redundant = map.get(key_hash(key)).is_some_and(|latest| record.offset < latest);
    !redundant && (!record.tombstone || retain_deletes)
}

/// An aborted transaction met while cleaning, and whether its data was seen in this pass.
#[derive(Debug, Clone, Copy)]
struct AbortedSeen {
    txn: AbortedTxn,
    data_seen: bool,
}

/// Kafka's `CleanedTransactionMetadata`: walks the batches in offset order and says which
/// belong to aborted transactions (their data goes) and which markers may go.
#[derive(Debug, Default)]
pub struct TxnTracker {
    /// Aborted transactions not yet reached, by first offset.
    aborted: VecDeque<AbortedTxn>,
    ongoing_aborted: HashMap<i64, AbortedSeen>,
    ongoing_committed: HashSet<i64>,
    /// Aborted transactions whose marker stays in the cleaned segment, for its `.txnindex`.
    pub kept_aborted: Vec<AbortedTxn>,
}

impl TxnTracker {
    /// A tracker over the aborted transactions of the cleaned range (any order).
    pub fn new(mut aborted: Vec<AbortedTxn>) -> TxnTracker {
        aborted.sort_by_key(|t| t.first_offset);
        TxnTracker { aborted: aborted.into(), ..TxnTracker::default() }
    }

    fn reach(&mut self, offset: i64) {
        while self.aborted.front().is_some_and(|t| t.first_offset <= offset) {
            if let Some(txn) = self.aborted.pop_front() {
                self.ongoing_aborted.insert(txn.producer_id, AbortedSeen { txn, data_seen: false });
            }
        }
    }

    /// A data batch: true when it belongs to an aborted transaction and goes.
    pub fn on_data_batch(&mut self, header: &BatchHeader) -> bool {
        self.reach(header.last_offset());
        if !header.is_transactional() {
            return false;
        }
        match self.ongoing_aborted.get_mut(&header.producer_id) {
            Some(seen) => {
                seen.data_seen = true;
                true
            }
            None => {
                self.ongoing_committed.insert(header.producer_id);
                false
            }
        }
    }

    /// A control batch (`commit`: its marker's type): true when the marker may go once the
    /// delete horizon has passed. An abort marker stays while this pass removed data of its
    /// transaction; a commit marker while this pass saw data of its transaction.
    pub fn on_control_batch(&mut self, header: &BatchHeader, commit: Option<bool>) -> bool {
        self.reach(header.last_offset());
        match commit {
            Some(false) => match self.ongoing_aborted.remove(&header.producer_id) {
                Some(seen) if seen.data_seen => {
                    self.kept_aborted.push(seen.txn);
                    false
                }
                _ => true,
            },
            Some(true) => !self.ongoing_committed.remove(&header.producer_id),
            None => false,
        }
    }
}

/// What happens to one batch, Kafka's `BatchRetention` with the records filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchPlan {
    /// Every record stays: the batch is copied as it is.
    Keep,
    /// Some records stay: these, in order (indexes into the batch's records).
    Filter(Vec<usize>),
    /// No record stays but the batch is its producer's last: an empty batch header stays.
    Empty,
    /// The batch goes.
    Drop,
}

/// Decides a batch's fate from which of its `record_count` records stay (`retained`, in
/// order), and whether the batch must stay for its producer's state.
pub fn plan_batch(record_count: usize, retained: Vec<usize>, producer_last_batch: bool) -> BatchPlan {
    if retained.len() == record_count && record_count > 0 {
        BatchPlan::Keep
    } else if !retained.is_empty() {
        BatchPlan::Filter(retained)
    } else if producer_last_batch {
        BatchPlan::Empty
    } else {
        BatchPlan::Drop
    }
}

fn set_i32(batch: &mut [u8], at: usize, value: i32) {
    batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn set_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[crate::batch::CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A batch holding `records` (whole record bytes, uncompressed) under `original`'s fields:
/// base offset, last offset delta, producer id, epoch and base sequence, attributes (so the
/// compression bits still name the original codec: the caller compresses the section when they
/// are not none) and leader epoch. New length, count and CRC, and timestamps re-based as
/// Kafka's `buildRetainedRecordsInto` does: the base timestamp is the first kept record's and
/// the max timestamp the kept records' greatest; under LogAppendTime every record reads the
/// batch's max timestamp, which stays.
pub fn rebuild_batch(original: &[u8], records: &[&[u8]]) -> Vec<u8> {
    let i64_at = |at: usize| i64::from_be_bytes(original[at..at + 8].try_into().unwrap_or_default());
    let (old_base, old_max) = (i64_at(27), i64_at(35));
    let attributes = i16::from_be_bytes([original[21], original[22]]);
    let log_append_time = attributes & crate::batch::ATTR_LOG_APPEND_TIME != 0;
    let section_bytes: usize = records.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + section_bytes + records.len() * 8);
    out.extend_from_slice(&original[..HEADER_BYTES]);
    let split: Option<Vec<(i64, u8, &[u8])>> = records.iter().map(|r| split_record(r, old_base)).collect();
    match split {
        Some(parts) if !parts.is_empty() => {
            let timestamp = |absolute: i64| if log_append_time { old_max } else { absolute };
            let base = timestamp(parts[0].0);
            let max = parts.iter().map(|p| timestamp(p.0)).max().unwrap_or(old_max);
            let mut body = Vec::new();
            for (absolute, record_attributes, rest) in parts {
                body.clear();
                body.push(record_attributes);
                crate::builder::put_varint(&mut body, timestamp(absolute).wrapping_sub(base));
                body.extend_from_slice(rest);
                crate::builder::put_varint(&mut out, body.len() as i64);
                out.extend_from_slice(&body);
            }
            out[27..35].copy_from_slice(&base.to_be_bytes());
            out[35..43].copy_from_slice(&max.to_be_bytes());
        }
        // Not records this crate can read (never the case for what `parse_records` returned):
        // copied as they are, under the original timestamps.
        _ => records.iter().for_each(|record| out.extend_from_slice(record)),
    }
    let batch_length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
    set_i32(&mut out, 8, batch_length);
    set_i32(&mut out, 57, records.len() as i32);
    set_crc(&mut out);
    out
}

/// One whole record (length prefix included) as its absolute timestamp under `base_timestamp`,
/// its attributes byte and the bytes after its timestamp delta.
fn split_record(record: &[u8], base_timestamp: i64) -> Option<(i64, u8, &[u8])> {
    let mut rest = record;
    let length = usize::try_from(read_varint(&mut rest)?).ok()?;
    if rest.len() != length {
        return None;
    }
    let (&attributes, mut rest) = rest.split_first()?;
    let delta = read_varint(&mut rest)?;
    Some((base_timestamp.wrapping_add(delta), attributes, rest))
}

/// Kafka's `writeEmptyHeader`: the header of `original` with no records, uncompressed, its
/// last offset delta kept so the producer's last sequence and offset survive; both
/// timestamps become the batch's max timestamp.
pub fn empty_batch(original: &[u8]) -> Vec<u8> {
    let mut out = original[..HEADER_BYTES].to_vec();
    set_i32(&mut out, 8, (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32);
    set_i32(&mut out, 57, 0);
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !0x07;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let max_timestamp: [u8; 8] = out[35..43].try_into().unwrap_or_default();
    out[27..35].copy_from_slice(&max_timestamp);
    set_crc(&mut out);
    out
}

/// Decompresses and recompresses record sections for the cleaner, which must look inside
/// compressed batches. `keel-log` has no codecs: the server provides them.
pub trait RecordsCodec: Send + Sync {
    /// The uncompressed records section of the whole batch `batch`.
    fn decompress(&self, batch: &[u8]) -> Result<Vec<u8>, String>;
    /// `batch` (a whole batch whose section is uncompressed, its attributes naming
    /// `compression`) with its section compressed by `compression` and its CRC recomputed.
    fn compress(&self, batch: &[u8], compression: Compression) -> Result<Vec<u8>, String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::check_stored_batch;
    use crate::builder::{build_batch, build_producer_batch, Producer};

    fn segment(base: i64, next: i64, size: u64, ts: i64) -> CleanerSegment {
        CleanerSegment {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            offset_index_bytes: 8,
            time_index_bytes: 12,
            largest_timestamp_ms: ts,
            first_timestamp_ms: ts,
        }
    }

    fn compact() -> CompactionPolicy {
        CompactionPolicy { compact: true, ..CompactionPolicy::default() }
    }

    #[test]
    fn the_map_keeps_the_latest_offset_per_key_and_refuses_when_full() {
        let mut map = OffsetMap::new(MAP_SLOT_BYTES * 10);
        assert_eq!(map.max_entries(), 9);
        map.reset(1_000);
        assert!(map.put(key_hash(b"a"), 3));
        assert!(map.put(key_hash(b"a"), 7));
        assert!(map.put(key_hash(b"b"), 5));
        assert_eq!(map.get(key_hash(b"a")), Some(7));
        assert_eq!(map.get(key_hash(b"b")), Some(5));
        assert_eq!(map.get(key_hash(b"c")), None);
        assert_eq!((map.len(), map.latest_offset()), (2, 7));
        assert!(map.fits(7) && !map.fits(8));
        for i in 0..20u32 {
            map.put(key_hash(&i.to_be_bytes()), i64::from(i));
        }
        assert!(map.len() < 10, "one slot always stays free");
        map.reset(4);
        assert!(map.is_empty() && map.get(key_hash(b"a")).is_none());
    }

    #[test]
    fn the_map_allocates_only_what_a_pass_needs() {
        let mut map = OffsetMap::new(DEFAULT_DEDUPE_BUFFER_BYTES);
        map.reset(100);
        assert!(map.slots.len() < 200);
        assert!(map.fits(90) && !map.fits(200));
    }

    #[test]
    fn the_dirty_range_stops_at_the_active_segment_the_lso_and_the_lag() {
        let segs = [segment(0, 10, 100, 1_000), segment(10, 20, 100, 2_000), segment(20, 25, 50, 3_000)];
        let p = compact();
        let r = cleanable_range(&segs, 0, None, 25, 25, &p, 10_000);
        assert_eq!((r.first_dirty_offset, r.first_uncleanable_offset), (0, 20));
        assert_eq!((r.clean_bytes, r.dirty_bytes), (0, 200));
        assert!(r.needs_cleaning(&p));
        // An open transaction at 15 keeps the second segment dirty but uncleanable.
        let r = cleanable_range(&segs, 0, None, 15, 25, &p, 10_000);
        assert_eq!((r.first_uncleanable_offset, r.dirty_bytes), (15, 100));
        // After a pass up to 10: clean 100, dirty 100.
        let r = cleanable_range(&segs, 0, Some(10), 25, 25, &p, 10_000);
        assert_eq!((r.clean_bytes, r.dirty_bytes), (100, 100));
        assert_eq!(r.dirty_ratio(), 0.5);
        let strict = CompactionPolicy { min_cleanable_dirty_ratio: 0.6, ..p };
        assert!(!r.needs_cleaning(&strict));
        // min.compaction.lag.ms: the first segment's newest record is 9 s old, the second's 8 s.
        let lag = CompactionPolicy { min_compaction_lag_ms: 9_500, ..p };
        assert_eq!(cleanable_range(&segs, 0, None, 25, 25, &lag, 10_000).first_uncleanable_offset, 0);
        let lag = CompactionPolicy { min_compaction_lag_ms: 8_500, ..p };
        assert_eq!(cleanable_range(&segs, 0, None, 25, 25, &lag, 10_000).first_uncleanable_offset, 10);
        let lag = CompactionPolicy { min_compaction_lag_ms: 8_000, ..p };
        assert_eq!(cleanable_range(&segs, 0, None, 25, 25, &lag, 10_000).first_uncleanable_offset, 20);
    }

    #[test]
    fn max_compaction_lag_forces_a_pass_below_the_ratio() {
        let segs = [segment(0, 10, 1_000, 1_000), segment(10, 20, 10, 2_000), segment(20, 20, 0, 0)];
        let p = CompactionPolicy { min_cleanable_dirty_ratio: 0.9, max_compaction_lag_ms: 5_000, ..compact() };
        assert!(!cleanable_range(&segs, 0, Some(10), 20, 20, &p, 6_000).needs_cleaning(&p));
        let r = cleanable_range(&segs, 0, Some(10), 20, 20, &p, 7_001);
        assert!(r.lag_exceeded && r.needs_cleaning(&p));
    }

    #[test]
    fn a_segment_holding_the_log_start_is_dirty() {
        // DeleteRecords moved the log start into the first segment.
        let segs = [segment(0, 10, 100, 0), segment(10, 20, 100, 0), segment(20, 20, 0, 0)];
        let r = cleanable_range(&segs, 5, None, 20, 20, &compact(), 0);
        assert_eq!((r.first_dirty_offset, r.clean_bytes, r.dirty_bytes), (5, 0, 200));
    }

    #[test]
    fn a_checkpoint_outside_the_log_restarts_from_the_log_start() {
        let segs = [segment(10, 20, 100, 0), segment(20, 20, 0, 0)];
        assert_eq!(cleanable_range(&segs, 10, Some(5), 20, 20, &compact(), 0).first_dirty_offset, 10);
        assert_eq!(cleanable_range(&segs, 10, Some(99), 20, 20, &compact(), 0).first_dirty_offset, 10);
        assert_eq!(cleanable_range(&segs, 10, Some(20), 20, 20, &compact(), 0).dirty_bytes, 0);
    }

    #[test]
    fn groups_fit_the_segment_and_index_limits() {
        let segs = [segment(0, 10, 400, 0), segment(10, 20, 400, 0), segment(20, 30, 400, 0), segment(30, 40, 100, 0)];
        assert_eq!(group_segments(&segs, 1_000, 1_000), vec![2, 2]);
        assert_eq!(group_segments(&segs, 1_300, 1_000), vec![4]);
        assert_eq!(group_segments(&segs, 100, 1_000), vec![1, 1, 1, 1]);
        assert_eq!(group_segments(&segs, 10_000, 24), vec![2, 2], "time index 12 bytes each");
        assert!(group_segments(&[], 10, 10).is_empty());
    }

    #[test]
    fn records_parse_with_keys_tombstones_and_offsets() {
        let batch =
            build_batch([(Some(&b"k1"[..]), Some(&b"v"[..])), (None, Some(&b"x"[..])), (Some(&b"k2"[..]), None)], 5)
                .expect("batch");
        let records = parse_records(&batch[HEADER_BYTES..], 100, 3).expect("records");
        let summary: Vec<_> = records.iter().map(|r| (r.offset, r.key, r.tombstone)).collect();
        assert_eq!(summary, vec![(100, Some(&b"k1"[..]), false), (101, None, false), (102, Some(&b"k2"[..]), true)]);
        assert_eq!(records.iter().map(|r| r.bytes.len()).sum::<usize>(), batch.len() - HEADER_BYTES);
        assert!(parse_records(&batch[HEADER_BYTES..], 100, 4).is_none(), "a missing record");
        assert!(parse_records(&batch[HEADER_BYTES..], 100, 2).is_none(), "trailing bytes");
        assert!(parse_records(&batch[HEADER_BYTES..batch.len() - 1], 100, 3).is_none());
        assert!(parse_records(&[0xff; 20], 0, 1_000_000).is_none());
    }

    #[test]
    fn a_record_stays_unless_superseded_or_an_expired_tombstone() {
        let mut map = OffsetMap::new(1 << 20);
        map.reset(10);
        map.put(key_hash(b"a"), 5);
        map.put(key_hash(b"b"), 6);
        let rec = |offset, key: Option<&'static [u8]>, tombstone: bool| RecordRef {
            offset,
            key,
            value: (!tombstone).then_some(&b"v"[..]),
            tombstone,
            bytes: &[],
        };
        assert!(!retain_record(&map, &rec(1, Some(b"a"), false), true), "a later a at 5");
        assert!(retain_record(&map, &rec(5, Some(b"a"), false), true));
        assert!(retain_record(&map, &rec(3, Some(b"c"), false), true), "no later c");
        assert!(retain_record(&map, &rec(6, Some(b"b"), true), true), "tombstone within the horizon");
        assert!(!retain_record(&map, &rec(6, Some(b"b"), true), false), "tombstone past the horizon");
        assert!(!retain_record(&map, &rec(2, None, false), true), "keyless");
        let mut empty = OffsetMap::new(1 << 20);
        empty.reset(0);
        assert!(!retain_record(&empty, &rec(6, Some(b"b"), true), false), "a cleaned tombstone past the horizon");
        assert!(retain_record(&empty, &rec(6, Some(b"b"), false), false));
    }

    fn header(base: i64, last_delta: i32, pid: i64, transactional: bool, control: bool) -> BatchHeader {
        let mut attributes = 0;
        if transactional {
            attributes |= crate::batch::ATTR_TRANSACTIONAL;
        }
        if control {
            attributes |= crate::batch::ATTR_CONTROL;
        }
        BatchHeader {
            base_offset: base,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: last_delta,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            records_count: last_delta + 1,
        }
    }

    #[test]
    fn aborted_data_goes_and_its_marker_waits_for_a_later_pass() {
        let aborted = AbortedTxn { producer_id: 7, first_offset: 0, last_offset: 4, last_stable_offset: 5 };
        // Data of 7 (aborted) at 0-1, data of 8 (committed) at 2, abort marker 4, commit marker 5.
        let mut t = TxnTracker::new(vec![aborted]);
        assert!(t.on_data_batch(&header(0, 1, 7, true, false)));
        assert!(!t.on_data_batch(&header(2, 0, 8, true, false)));
        assert!(!t.on_data_batch(&header(3, 0, -1, false, false)), "non-transactional");
        assert!(!t.on_control_batch(&header(4, 0, 7, true, true), Some(false)), "data removed in this pass");
        assert_eq!(t.kept_aborted, vec![aborted]);
        assert!(!t.on_control_batch(&header(5, 0, 8, true, true), Some(true)), "committed data seen");
        // The next pass: the data is gone, both markers may go.
        let mut t = TxnTracker::new(vec![aborted]);
        assert!(t.on_control_batch(&header(4, 0, 7, true, true), Some(false)));
        assert!(t.kept_aborted.is_empty());
        assert!(t.on_control_batch(&header(5, 0, 8, true, true), Some(true)));
    }

    #[test]
    fn batch_plans() {
        assert_eq!(plan_batch(3, vec![0, 1, 2], false), BatchPlan::Keep);
        assert_eq!(plan_batch(3, vec![2], true), BatchPlan::Filter(vec![2]));
        assert_eq!(plan_batch(3, vec![], true), BatchPlan::Empty);
        assert_eq!(plan_batch(3, vec![], false), BatchPlan::Drop);
        assert_eq!(plan_batch(0, vec![], false), BatchPlan::Drop, "an empty batch no longer needed");
        assert_eq!(plan_batch(0, vec![], true), BatchPlan::Empty);
    }

    #[test]
    fn rebuilt_batches_keep_offsets_and_producer_fields_with_a_valid_crc() {
        let producer = Producer { id: 9, epoch: 2, base_sequence: 40 };
        let records = [(Some(&b"a"[..]), Some(&b"1"[..])), (Some(&b"b"[..]), Some(&b"2"[..])), (Some(&b"a"[..]), None)];
        let mut batch = build_producer_batch(records, 77, producer, false).expect("batch");
        crate::batch::patch_base_offset(&mut batch, 500);
        let parsed = parse_records(&batch[HEADER_BYTES..], 500, 3).expect("records");
        let rebuilt = rebuild_batch(&batch, &[parsed[1].bytes]);
        let header = check_stored_batch(&rebuilt, 0).expect("valid");
        let original = BatchHeader::parse(&batch).expect("header");
        assert_eq!(header.records_count, 1);
        assert_eq!((header.base_offset, header.last_offset()), (500, original.last_offset()));
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (9, 2, 40));
        let kept = parse_records(&rebuilt[HEADER_BYTES..], 500, 1).expect("records");
        assert_eq!((kept[0].offset, kept[0].key), (501, Some(&b"b"[..])));

        assert_eq!((header.base_timestamp, header.max_timestamp), (77, 77));

        let empty = empty_batch(&batch);
        let header = check_stored_batch(&empty, 0).expect("valid");
        assert_eq!((header.records_count, header.size()), (0, HEADER_BYTES));
        assert_eq!((header.base_offset, header.last_offset(), header.base_sequence), (500, 502, 40));
    }

    /// A batch of keyed records at `base_timestamp` + each delta (Kafka's record layout).
    fn batch_with_timestamps(base_timestamp: i64, deltas: &[i64], log_append_time: bool) -> Vec<u8> {
        let keys: Vec<Vec<u8>> = (0..deltas.len()).map(|i| vec![b'k', i as u8]).collect();
        let mut batch = build_batch(keys.iter().map(|k| (Some(&k[..]), Some(&b"v"[..]))), 0).expect("batch");
        batch.truncate(HEADER_BYTES);
        for (i, delta) in deltas.iter().enumerate() {
            let mut body = vec![0u8];
            crate::builder::put_varint(&mut body, *delta);
            crate::builder::put_varint(&mut body, i as i64);
            for field in [&keys[i][..], b"v"] {
                crate::builder::put_varint(&mut body, field.len() as i64);
                body.extend_from_slice(field);
            }
            crate::builder::put_varint(&mut body, 0);
            crate::builder::put_varint(&mut batch, body.len() as i64);
            batch.extend_from_slice(&body);
        }
        let max = base_timestamp + deltas.iter().max().copied().unwrap_or(0);
        batch[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
        batch[35..43].copy_from_slice(&max.to_be_bytes());
        if log_append_time {
            batch[22] |= crate::batch::ATTR_LOG_APPEND_TIME as u8;
        }
        let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
        set_i32(&mut batch, 8, batch_length);
        set_crc(&mut batch);
        batch
    }

    /// The absolute timestamps of a batch's records.
    fn record_timestamps(batch: &[u8]) -> Vec<i64> {
        let header = check_stored_batch(batch, 0).expect("valid");
        let records = parse_records(&batch[HEADER_BYTES..], 0, header.records_count).expect("records");
        records.iter().map(|r| split_record(r.bytes, header.base_timestamp).expect("record").0).collect()
    }

    #[test]
    fn rebuilt_batches_rebase_their_timestamps_as_kafka_does() {
        // Records at 1005, 1000 and 1009.
        let batch = batch_with_timestamps(1000, &[5, 0, 9], false);
        assert_eq!(record_timestamps(&batch), [1005, 1000, 1009]);
        let parsed = parse_records(&batch[HEADER_BYTES..], 0, 3).expect("records");
        let rebuilt = rebuild_batch(&batch, &[parsed[0].bytes, parsed[1].bytes]);
        let header = check_stored_batch(&rebuilt, 0).expect("valid");
        assert_eq!((header.base_timestamp, header.max_timestamp), (1005, 1005), "the first kept, the greatest kept");
        assert_eq!(record_timestamps(&rebuilt), [1005, 1000], "every record keeps its timestamp");
        let kept = parse_records(&rebuilt[HEADER_BYTES..], 0, 2).expect("records");
        assert_eq!((kept[0].offset, kept[1].offset, kept[1].key), (0, 1, Some(&[b'k', 1][..])));
        let rebuilt = rebuild_batch(&batch, &[parsed[2].bytes]);
        let header = check_stored_batch(&rebuilt, 0).expect("valid");
        assert_eq!((header.base_timestamp, header.max_timestamp, header.last_offset()), (1009, 1009, 2));

        // LogAppendTime: the records read the batch's max timestamp, which stays.
        let batch = batch_with_timestamps(1000, &[5, 0, 9], true);
        let parsed = parse_records(&batch[HEADER_BYTES..], 0, 3).expect("records");
        let rebuilt = rebuild_batch(&batch, &[parsed[1].bytes]);
        let header = check_stored_batch(&rebuilt, 0).expect("valid");
        assert_eq!((header.base_timestamp, header.max_timestamp), (1009, 1009));
    }
}
