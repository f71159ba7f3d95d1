//! Producer state: what each idempotent or transactional producer last wrote to a partition.
//!
//! Kafka's rules, per batch that carries a producer id:
//! - an epoch below the producer's current one is refused (INVALID_PRODUCER_EPOCH);
//! - a batch whose sequence range matches one of the producer's last five batches (same epoch)
//!   is a retry: it is not written again, and the original offsets are answered;
//! - otherwise the first sequence must follow the last one (OUT_OF_ORDER_SEQUENCE_NUMBER); a
//!   new epoch starts at sequence 0; a producer with no state (new, or expired) may start
//!   anywhere;
//! - a transactional batch opens a transaction if none is open; a non-transactional batch while
//!   one is open is refused (INVALID_TXN_STATE); a commit or abort marker closes it.
//!
//! The state is kept in memory, snapshotted to `<offset>.snapshot` files beside the segments,
//! and rebuilt on open by replaying the batches after the newest usable snapshot (`log.rs`).
//! Everything here is pure: no I/O, time passed in.

use std::collections::{BTreeMap, HashMap, VecDeque};

use thiserror::Error;

use crate::batch::BatchHeader;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// Batches remembered per producer for duplicate detection (Kafka's NUM_BATCHES_TO_RETAIN).
pub const BATCHES_TO_RETAIN: usize = 5;

/// Who is appending, which decides how much is checked (Kafka's `AppendOrigin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A producer: epochs, sequences and duplicates are checked.
    Client,
    /// The broker's own coordinators (transaction markers, transactional offset commits):
    /// epochs only.
    Coordinator,
    /// Replaying what the log already holds: nothing is checked.
    Replay,
}

/// A commit or abort marker: the single record of a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// A batch's producer fields, with the offsets the log gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub transactional: bool,
    /// `Some` for a control batch.
    pub marker: Option<Marker>,
}

/// Sequence `seq` advanced by `delta`, wrapping past i32::MAX to 0 as Kafka does.
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
}

impl ProducerBatch {
    /// The producer fields of `header` (whose offsets are final). `marker` is the control
    /// record of a control batch.
    pub fn from_header(header: &BatchHeader, marker: Option<Marker>) -> ProducerBatch {
        ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: if header.base_sequence < 0 {
                NO_SEQUENCE
            } else {
                increment_sequence(header.base_sequence, header.last_offset_delta)
            },
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            transactional: header.is_transactional(),
            marker,
        }
    }
}

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

/// What the partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last batches of the current epoch, oldest first, at most [`BATCHES_TO_RETAIN`].
    pub batches: VecDeque<BatchMeta>,
    pub coordinator_epoch: i32,
    /// The max timestamp of the producer's last batch or marker (expiry is measured from it).
    pub last_timestamp: i64,
    /// First offset of the producer's open transaction.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn empty(producer_id: i64) -> ProducerEntry {
        ProducerEntry {
            producer_id,
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }

    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    pub fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }

    fn find_duplicate(&self, batch: &ProducerBatch) -> Option<BatchMeta> {
        if batch.epoch != self.epoch {
            return None;
        }
        self.batches.iter().find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq).copied()
    }

    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn check_epoch(&self, batch: &ProducerBatch, origin: Origin) -> Result<(), ProducerError> {
        if batch.epoch < self.epoch && origin != Origin::Replay {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: self.epoch,
            });
        }
        Ok(())
    }

    fn check_sequence(&self, batch: &ProducerBatch) -> Result<(), ProducerError> {
        let out_of_order = |expected: &str| ProducerError::OutOfOrderSequence {
            producer_id: batch.producer_id,
            first_seq: batch.first_seq,
            expected: expected.to_string(),
        };
        if batch.epoch != self.epoch {
            // A new epoch starts over at 0; a producer the partition has no state of may start
            // anywhere (its earlier batches may have been removed by retention).
            if batch.first_seq != 0 && self.epoch != NO_PRODUCER_EPOCH {
                return Err(out_of_order("0 (first batch of a new epoch)"));
            }
        } else {
            let last = self.last_seq();
            let in_sequence = batch.first_seq == last.wrapping_add(1) || (batch.first_seq == 0 && last == i32::MAX);
            if !in_sequence {
                return Err(out_of_order(&last.wrapping_add(1).to_string()));
            }
        }
        Ok(())
    }

    /// Applies one batch after the checks `origin` calls for; returns the transaction the batch
    /// completed (a marker closing a non-empty transaction).
    fn append(&mut self, batch: &ProducerBatch, origin: Origin) -> Result<Option<CompletedTxn>, ProducerError> {
        self.check_epoch(batch, origin)?;
        if let Some(marker) = batch.marker {
            if marker.coordinator_epoch < self.coordinator_epoch && origin != Origin::Replay {
                return Err(ProducerError::CoordinatorFenced {
                    producer_id: batch.producer_id,
                    coordinator_epoch: marker.coordinator_epoch,
                    current: self.coordinator_epoch,
                });
            }
            let completed = self.current_txn_first_offset.take().map(|first_offset| CompletedTxn {
                producer_id: batch.producer_id,
                first_offset,
                last_offset: batch.first_offset,
                aborted: !marker.commit,
            });
            self.set_epoch(batch.epoch);
            self.coordinator_epoch = marker.coordinator_epoch;
            self.last_timestamp = batch.max_timestamp;
            return Ok(completed);
        }
        if origin == Origin::Client {
            self.check_sequence(batch)?;
        }
        self.set_epoch(batch.epoch);
        self.batches.push_back(BatchMeta {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            first_offset: batch.first_offset,
            last_offset: batch.last_offset,
            timestamp: batch.max_timestamp,
        });
        while self.batches.len() > BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.last_timestamp = batch.max_timestamp;
        match (self.current_txn_first_offset, batch.transactional) {
            (Some(_), false) => Err(ProducerError::InvalidTxnState { producer_id: batch.producer_id }),
            (None, true) => {
                self.current_txn_first_offset = Some(batch.first_offset);
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// A transaction closed by a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// An entry of the aborted-transaction index (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last stable offset right after the abort marker.
    pub last_stable_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProducerError {
    /// INVALID_PRODUCER_EPOCH (47).
    #[error("producer {producer_id} wrote with epoch {epoch}, older than its current epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    #[error("out of order sequence number for producer {producer_id}: got {first_seq}, expected {expected}")]
    OutOfOrderSequence { producer_id: i64, first_seq: i32, expected: String },
    /// INVALID_TXN_STATE (48).
    #[error("producer {producer_id} wrote a non-transactional batch while its transaction is open")]
    InvalidTxnState { producer_id: i64 },
    /// TRANSACTION_COORDINATOR_FENCED (52).
    #[error("marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {current}")]
    CoordinatorFenced { producer_id: i64, coordinator_epoch: i32, current: i32 },
}

/// The outcome of checking an append against the producer state.
#[derive(Debug, Default)]
pub struct Staged {
    entries: HashMap<i64, ProducerEntry>,
    started: Vec<(i64, i64)>,
    completed: Vec<CompletedTxn>,
    /// The append repeats a batch already in the log: this one.
    pub duplicate: Option<BatchMeta>,
}

impl Staged {
    /// Whether committing this closes a transaction (a marker), and so may abort one.
    pub fn completes_transaction(&self) -> bool {
        !self.completed.is_empty()
    }
}

/// The producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    entries: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStates {
    pub fn new() -> ProducerStates {
        ProducerStates::default()
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first offset of the earliest open transaction: the last stable offset when some
    /// transaction is open.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Checks `batches` (in log order, offsets assigned) without changing the state. Batches
    /// without a producer id are skipped. A client batch that repeats one of the producer's
    /// last batches makes the whole append a duplicate (Kafka answers the original offsets).
    pub fn stage(&self, batches: &[ProducerBatch], origin: Origin) -> Result<Staged, ProducerError> {
        let mut staged = Staged::default();
        for batch in batches.iter().filter(|b| b.producer_id >= 0) {
            let entry = staged.entries.entry(batch.producer_id).or_insert_with(|| {
                self.entries.get(&batch.producer_id).cloned().unwrap_or_else(|| ProducerEntry::empty(batch.producer_id))
            });
            if origin == Origin::Client && batch.marker.is_none() {
                if let Some(duplicate) = entry.find_duplicate(batch) {
                    return Ok(Staged { duplicate: Some(duplicate), ..Staged::default() });
                }
            }
            let had_txn = entry.current_txn_first_offset.is_some();
            if let Some(completed) = entry.append(batch, origin)? {
                staged.completed.push(completed);
            }
            if !had_txn {
                if let Some(first_offset) = entry.current_txn_first_offset {
                    staged.started.push((first_offset, batch.producer_id));
                }
            }
        }
        Ok(staged)
    }

    /// Makes a staged append part of the state, once its batches are written. Returns the
    /// aborted transactions it completed, for the aborted-transaction index.
    pub fn commit(&mut self, staged: Staged) -> Vec<AbortedTxn> {
        for (first_offset, producer_id) in staged.started {
            self.ongoing.insert(first_offset, producer_id);
        }
        self.entries.extend(staged.entries);
        // In marker order: each entry's last stable offset is the one right after its own
        // marker, with the transactions that later markers of the same append complete still
        // open. Reads of the index stop at the first entry whose last stable offset reaches
        // their upper bound, so a value too high would hide the aborted transactions after it.
        let mut aborted = Vec::new();
        for completed in &staged.completed {
            self.ongoing.remove(&completed.first_offset);
            if completed.aborted {
                aborted.push(AbortedTxn {
                    producer_id: completed.producer_id,
                    first_offset: completed.first_offset,
                    last_offset: completed.last_offset,
                    last_stable_offset: self.first_unstable_offset().unwrap_or(completed.last_offset + 1),
                });
            }
        }
        aborted
    }

    /// Applies batches already in the log (recovery), checking nothing.
    pub fn replay(&mut self, batch: &ProducerBatch) -> Vec<AbortedTxn> {
        match self.stage(std::slice::from_ref(batch), Origin::Replay) {
            Ok(staged) => self.commit(staged),
            // Replay checks nothing, so it cannot fail.
            Err(_) => Vec::new(),
        }
    }

    /// Forgets producers with no open transaction whose last write is at least `expiration_ms`
    /// old (`producer.id.expiration.ms`). Returns how many went.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.current_txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.entries.len()
    }

    /// Forgets producers whose every write is below `log_start_offset` (retention or
    /// DeleteRecords removed them) and that have no open transaction.
    pub fn remove_below(&mut self, log_start_offset: i64) {
        self.entries.retain(|_, e| e.current_txn_first_offset.is_some() || e.last_offset() >= log_start_offset);
    }

    /// The snapshot file contents: see `docs/storage-format.md`.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut ids: Vec<&i64> = self.entries.keys().collect();
        ids.sort_unstable();
        body.extend((ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.entries[id];
            body.extend(e.producer_id.to_be_bytes());
            body.extend(e.epoch.to_be_bytes());
            body.extend(e.coordinator_epoch.to_be_bytes());
            body.extend(e.last_timestamp.to_be_bytes());
            body.extend(e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend(b.first_seq.to_be_bytes());
                body.extend(b.last_seq.to_be_bytes());
                body.extend(b.first_offset.to_be_bytes());
                body.extend(b.last_offset.to_be_bytes());
                body.extend(b.timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend(SNAPSHOT_VERSION.to_be_bytes());
        out.extend(crc32c::crc32c(&body).to_be_bytes());
        out.extend(body);
        out
    }

    /// Parses a snapshot written by [`encode_snapshot`](Self::encode_snapshot).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ProducerStates, &'static str> {
        let mut r = Reader { buf: bytes };
        if r.i16()? != SNAPSHOT_VERSION {
            return Err("unknown snapshot version");
        }
        let crc = r.u32()?;
        if crc32c::crc32c(r.buf) != crc {
            return Err("snapshot CRC mismatch");
        }
        let count = r.u32()?;
        let mut states = ProducerStates::new();
        for _ in 0..count {
            let producer_id = r.i64()?;
            let epoch = r.i16()?;
            let coordinator_epoch = r.i32()?;
            let last_timestamp = r.i64()?;
            let txn = r.i64()?;
            let batch_count = r.u8()? as usize;
            if batch_count > BATCHES_TO_RETAIN {
                return Err("too many batches for a producer");
            }
            let mut batches = VecDeque::with_capacity(batch_count);
            for _ in 0..batch_count {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            let current_txn_first_offset = (txn >= 0).then_some(txn);
            if let Some(first_offset) = current_txn_first_offset {
                states.ongoing.insert(first_offset, producer_id);
            }
            states.entries.insert(
                producer_id,
                ProducerEntry {
                    producer_id,
                    epoch,
                    batches,
                    coordinator_epoch,
                    last_timestamp,
                    current_txn_first_offset,
                },
            );
        }
        if !r.buf.is_empty() {
            return Err("trailing bytes after the last producer");
        }
        Ok(states)
    }
}

const SNAPSHOT_VERSION: i16 = 1;

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or("truncated snapshot")?;
        self.buf = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
#[path = "producer_tests.rs"]
mod tests;
