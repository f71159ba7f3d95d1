//! The transaction coordinator's decisions (Kafka's `TransactionCoordinator` and
//! `TransactionMetadata`, transaction version 1 semantics), as pure functions over one
//! transactional id's metadata. The server runs them in an actor per `__transaction_state`
//! partition, writes the records they produce, and writes the markers.
//!
//! States: Empty → Ongoing (partitions added) → PrepareCommit | PrepareAbort (EndTxn, written
//! before the client is answered) → CompleteCommit | CompleteAbort (after every partition has
//! its marker) → Ongoing again with the next AddPartitionsToTxn. InitProducerId bumps the epoch,
//! fencing older producers; an open transaction is aborted first.

use std::collections::BTreeSet;

use crate::records::{encode_transaction_key, Record, TransactionLogValue};

/// Epochs stop here; a producer that reaches it gets a new producer id (Kafka's rule).
pub const MAX_PRODUCER_EPOCH: i16 = i16::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's state names, as DescribeTransactions and ListTransactions report them.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// Why a transactional request is refused; the server maps each to Kafka's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    /// INVALID_PRODUCER_ID_MAPPING (49): the producer id is not this transactional id's.
    InvalidProducerIdMapping,
    /// PRODUCER_FENCED (90); INVALID_PRODUCER_EPOCH (47) for older request versions.
    ProducerFenced,
    /// CONCURRENT_TRANSACTIONS (51): a commit or abort is still being completed; retry.
    ConcurrentTransactions,
    /// INVALID_TXN_STATE (48).
    InvalidTxnState,
    /// INVALID_TRANSACTION_TIMEOUT (50).
    InvalidTransactionTimeout,
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// When the open transaction began (-1 when none).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDecision {
    /// Write this metadata and answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// Abort the open transaction first (this is its PrepareAbort, with a fenced epoch), then
    /// decide again.
    AbortFirst(TxnMetadata),
    /// The epoch is exhausted: decide again with a new producer id.
    NeedsProducerId,
}

/// What EndTxn must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDecision {
    /// Write this PrepareCommit/PrepareAbort, answer, then write the markers and complete.
    Prepare(TxnMetadata),
    /// A retry of an end that already completed: answer success.
    AlreadyDone,
}

impl TxnMetadata {
    /// A new transactional id with a fresh producer id (epoch 0 after the first init).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// InitProducerId. `expected` is the producer id and epoch a KIP-360 client sends when it
    /// re-initializes (v3+), `None` for a first init; `fresh_producer_id` is given when the
    /// caller had to allocate one after [`InitDecision::NeedsProducerId`].
    pub fn init(
        &self,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<InitDecision, TxnError> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Fence the producer that opened it, then abort with the fenced epoch.
                let mut fenced = self.clone();
                if fenced.producer_epoch < MAX_PRODUCER_EPOCH {
                    fenced.producer_epoch += 1;
                }
                fenced.state = TxnState::PrepareAbort;
                fenced.last_update_ms = now_ms;
                return Ok(InitDecision::AbortFirst(fenced));
            }
            _ => {}
        }
        if let Some((producer_id, epoch)) = expected {
            if producer_id >= 0 && (producer_id != self.producer_id || epoch != self.producer_epoch) {
                return Err(TxnError::ProducerFenced);
            }
        }
        let mut next = self.clone();
        match fresh_producer_id {
            Some(producer_id) => {
                next.producer_id = producer_id;
                next.producer_epoch = 0;
            }
            None if self.producer_epoch >= MAX_PRODUCER_EPOCH => return Ok(InitDecision::NeedsProducerId),
            None => next.producer_epoch += 1,
        }
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        Ok(InitDecision::Ready(next))
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn. `Ok(None)`: already part of the transaction.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Dead => return Err(TxnError::InvalidTxnState),
            TxnState::Ongoing if partitions.iter().all(|p| self.partitions.contains(p)) => return Ok(None),
            _ => {}
        }
        let mut next = self.clone();
        if next.state != TxnState::Ongoing {
            next.start_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn.
    pub fn end(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndDecision, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = self.clone();
                next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
                next.last_update_ms = now_ms;
                Ok(EndDecision::Prepare(next))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(EndDecision::AlreadyDone),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(TxnError::ConcurrentTransactions),
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// After every marker is written: PrepareCommit → CompleteCommit, PrepareAbort →
    /// CompleteAbort, with no partitions.
    pub fn complete(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        next
    }

    /// An open transaction past its timeout: its PrepareAbort with a fenced epoch, so that the
    /// producer that let it time out cannot go on writing.
    pub fn timed_out(&self, now_ms: i64) -> Option<TxnMetadata> {
        if self.state != TxnState::Ongoing || self.start_ms < 0 || now_ms < self.start_ms + i64::from(self.timeout_ms) {
            return None;
        }
        let mut next = self.clone();
        if next.producer_epoch < MAX_PRODUCER_EPOCH {
            next.producer_epoch += 1;
        }
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        Some(next)
    }

    /// Whether markers are what this state waits for (after a restart, too).
    pub fn is_prepared(&self) -> bool {
        matches!(self.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    pub fn to_record(&self) -> Record {
        let value = TransactionLogValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            transaction_timeout_ms: self.timeout_ms,
            transaction_status: self.state.id(),
            partitions: self.partitions.clone(),
            last_update_timestamp_ms: self.last_update_ms,
            start_timestamp_ms: self.start_ms,
        };
        Record {
            // Transactional ids are checked to fit a Kafka string before they get here.
            key: encode_transaction_key(&self.transactional_id).unwrap_or_default(),
            value: value.encode().ok(),
        }
    }

    /// The metadata a `__transaction_state` record holds.
    pub fn from_record(transactional_id: String, value: &TransactionLogValue) -> Option<TxnMetadata> {
        Some(TxnMetadata {
            transactional_id,
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            timeout_ms: value.transaction_timeout_ms,
            state: TxnState::from_id(value.transaction_status)?,
            partitions: value.partitions.clone(),
            start_ms: value.start_timestamp_ms,
            last_update_ms: value.last_update_timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{decode_transaction_key, TransactionLogValue};

    fn ready(decision: Result<InitDecision, TxnError>) -> TxnMetadata {
        match decision {
            Ok(InitDecision::Ready(meta)) => meta,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn tp(topic: &str, partition: i32) -> (String, i32) {
        (topic.to_string(), partition)
    }

    #[test]
    fn a_transaction_goes_through_its_states() {
        let meta = ready(TxnMetadata::new("t", 7, 60_000, 0).init(60_000, None, None, 1));
        assert_eq!((meta.producer_id, meta.producer_epoch, meta.state), (7, 0, TxnState::Empty));
        let meta = meta.add_partitions(7, 0, &[tp("a", 0)], 2).unwrap().unwrap();
        assert_eq!((meta.state, meta.start_ms), (TxnState::Ongoing, 2));
        assert_eq!(meta.add_partitions(7, 0, &[tp("a", 0)], 3), Ok(None));
        let meta = meta.add_partitions(7, 0, &[tp("b", 1)], 4).unwrap().unwrap();
        assert_eq!((meta.partitions.len(), meta.start_ms), (2, 2));
        let EndDecision::Prepare(prepared) = meta.end(7, 0, true, 5).unwrap() else { panic!() };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(prepared.add_partitions(7, 0, &[tp("a", 0)], 6), Err(TxnError::ConcurrentTransactions));
        let done = prepared.complete(6);
        assert_eq!((done.state, done.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(done.end(7, 0, true, 7), Ok(EndDecision::AlreadyDone));
        assert_eq!(done.end(7, 0, false, 7), Err(TxnError::InvalidTxnState));
        // The next transaction starts with the next AddPartitionsToTxn.
        assert_eq!(done.add_partitions(7, 0, &[tp("a", 1)], 8).unwrap().unwrap().state, TxnState::Ongoing);
    }

    #[test]
    fn wrong_producers_and_states_are_refused() {
        let meta = ready(TxnMetadata::new("t", 7, 60_000, 0).init(60_000, None, None, 1));
        assert_eq!(meta.end(7, 0, true, 2), Err(TxnError::InvalidTxnState), "EndTxn without a transaction");
        assert_eq!(meta.add_partitions(8, 0, &[tp("a", 0)], 2), Err(TxnError::InvalidProducerIdMapping));
        assert_eq!(meta.add_partitions(7, 1, &[tp("a", 0)], 2), Err(TxnError::ProducerFenced));
        // A second init fences the first producer.
        let second = ready(meta.init(60_000, None, None, 3));
        assert_eq!(second.producer_epoch, 1);
        assert_eq!(second.add_partitions(7, 0, &[tp("a", 0)], 4), Err(TxnError::ProducerFenced));
        // KIP-360: a re-init naming another epoch than the current one is fenced.
        assert_eq!(second.init(60_000, Some((7, 0)), None, 5), Err(TxnError::ProducerFenced));
        assert_eq!(ready(second.init(60_000, Some((7, 1)), None, 5)).producer_epoch, 2);
    }

    #[test]
    fn init_aborts_an_open_transaction_and_exhausted_epochs_need_a_new_id() {
        let meta = ready(TxnMetadata::new("t", 7, 60_000, 0).init(60_000, None, None, 1));
        let ongoing = meta.add_partitions(7, 0, &[tp("a", 0)], 2).unwrap().unwrap();
        let Ok(InitDecision::AbortFirst(aborting)) = ongoing.init(60_000, None, None, 3) else { panic!() };
        assert_eq!((aborting.state, aborting.producer_epoch), (TxnState::PrepareAbort, 1));
        let aborted = aborting.complete(4);
        assert_eq!(aborted.state, TxnState::CompleteAbort);
        assert_eq!(ready(aborted.init(60_000, None, None, 5)).producer_epoch, 2);
        let mut old = aborted.clone();
        old.producer_epoch = MAX_PRODUCER_EPOCH;
        assert_eq!(old.init(60_000, None, None, 6), Ok(InitDecision::NeedsProducerId));
        let renewed = ready(old.init(60_000, None, Some(99), 6));
        assert_eq!((renewed.producer_id, renewed.producer_epoch), (99, 0));
    }

    #[test]
    fn an_open_transaction_times_out_with_a_fenced_epoch() {
        let meta = ready(TxnMetadata::new("t", 7, 1_000, 0).init(1_000, None, None, 0));
        let ongoing = meta.add_partitions(7, 0, &[tp("a", 0)], 10).unwrap().unwrap();
        assert_eq!(ongoing.timed_out(1_009), None);
        let aborting = ongoing.timed_out(1_010).unwrap();
        assert_eq!((aborting.state, aborting.producer_epoch), (TxnState::PrepareAbort, 1));
        assert_eq!(meta.timed_out(1_000_000), None, "nothing open, nothing to abort");
    }

    #[test]
    fn metadata_round_trips_through_its_record() {
        let meta = ready(TxnMetadata::new("txn-1", 7, 60_000, 0).init(60_000, None, None, 1));
        let meta = meta.add_partitions(7, 0, &[tp("a", 0), tp("b", 3)], 2).unwrap().unwrap();
        let record = meta.to_record();
        let id = decode_transaction_key(&record.key).unwrap();
        let value = TransactionLogValue::decode(record.value.as_deref().unwrap()).unwrap();
        assert_eq!(TxnMetadata::from_record(id, &value), Some(meta));
    }
}
