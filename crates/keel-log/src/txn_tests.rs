//! `read_committed` across segments: the aborted transactions a fetch is told about, against a
//! model of interleaved transactions on logs with small segments.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::batch::BatchHeader;
use crate::builder::{build_marker_batch, build_producer_batch, Producer};
use crate::producer::{AbortedTxn, Marker};
use crate::testing::test_batch;

const ABORT: Marker = Marker { commit: false, coordinator_epoch: 0 };
const COMMIT: Marker = Marker { commit: true, coordinator_epoch: 0 };

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, index_interval_bytes: 128, ..LogConfig::default() }
}

fn txn_batch(producer_id: i64, sequence: i32, records: usize, payload: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; payload]).collect();
    let producer = Producer { id: producer_id, epoch: 0, base_sequence: sequence };
    build_producer_batch(values.iter().map(|v| (None, Some(&v[..]))), 1000, producer, true).expect("batch")
}

/// What a `read_committed` consumer keeps of `[start, upper_bound)`: it fetches as Kafka's
/// consumer does (whole batches, one segment per fetch, the aborted transactions of each
/// response) and drops the batches of aborted transactions as `CompletedFetch` does. Returns
/// the offsets of the data records it keeps.
pub(super) fn read_committed(log: &Log, start: i64, upper_bound: i64, max_bytes: usize) -> Vec<i64> {
    let mut kept = Vec::new();
    let mut offset = start;
    while offset < upper_bound {
        let slice = log.read(offset, max_bytes, upper_bound, true).expect("read");
        if slice.is_empty() {
            break;
        }
        let mut aborted = log.aborted_transactions(offset, slice.last_offset + 1);
        aborted.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
        let mut aborting = HashSet::new();
        let mut bytes = Vec::new();
        slice.read_into(&mut bytes).expect("read_into");
        let mut at = 0;
        while at < bytes.len() {
            let header = BatchHeader::parse(&bytes[at..]).expect("header");
            while aborted.last().is_some_and(|a| a.first_offset <= header.last_offset()) {
                aborting.insert(aborted.pop().map(|a| a.producer_id));
            }
            if header.is_control() {
                aborting.remove(&Some(header.producer_id));
            } else if !(header.is_transactional() && aborting.contains(&Some(header.producer_id))) {
                kept.extend((header.base_offset..=header.last_offset()).filter(|o| *o >= offset));
            }
            at += header.size();
        }
        offset = slice.last_offset + 1;
    }
    kept
}

#[test]
fn an_aborted_transaction_is_found_from_every_segment_it_spans() {
    // The reproduction in miniature: one transaction over many segments, aborted.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), "t", config(600), 0, 0, 0).expect("open");
    log.append(&mut test_batch(2, 0, 10), 0, 0).expect("append"); // 0-1, committed data
    for i in 0..20 {
        log.append(&mut txn_batch(9, i * 2, 2, 100), 0, 0).expect("append"); // 2..=41
    }
    log.append_marker(9, 0, ABORT, 0, 0).expect("abort"); // 42
    log.append(&mut test_batch(1, 0, 10), 0, 0).expect("append"); // 43
    assert!(log.segment_count() > 5, "the transaction spans segments: {}", log.segment_count());
    let entry = AbortedTxn { producer_id: 9, first_offset: 2, last_offset: 42, last_stable_offset: 43 };
    for start in [0, 2, 17, 41, 42] {
        for upper in [start + 1, start + 5, 42, 44] {
            let expected = if upper > 2 && start <= 42 { vec![entry] } else { vec![] };
            assert_eq!(log.aborted_transactions(start, upper), expected, "from {start} below {upper}");
        }
    }
    assert_eq!(log.aborted_transactions(43, 44), vec![]);
    assert_eq!(read_committed(&log, 0, log.last_stable_offset(), 250), vec![0, 1, 43]);
    // The same after a crash, when the index is rebuilt from snapshots and a replay.
    drop(log);
    let log = Log::open(dir.path(), "t", config(600), 0, 0, 0).expect("reopen");
    assert_eq!(log.aborted_transactions(10, 11), vec![entry]);
    assert_eq!(read_committed(&log, 5, log.last_stable_offset(), 250), vec![43]);
}

#[test]
fn markers_written_together_record_the_last_stable_offset_of_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), "t", config(1 << 20), 0, 0, 0).expect("open");
    log.append(&mut txn_batch(1, 0, 1, 10), 0, 0).expect("append"); // 0
    log.append(&mut txn_batch(2, 0, 1, 10), 0, 0).expect("append"); // 1
    let mut markers = build_marker_batch(1, 0, ABORT, 0);
    markers.extend(build_marker_batch(2, 0, ABORT, 0));
    log.append_from(&mut markers, 0, 0, Origin::Coordinator).expect("markers"); // 2, 3
                                                                                // When the first marker was written, producer 2's transaction (from offset 1) was open:
                                                                                // its entry's last stable offset is 1, not the 4 that holds after both markers.
    let first = AbortedTxn { producer_id: 1, first_offset: 0, last_offset: 2, last_stable_offset: 1 };
    let second = AbortedTxn { producer_id: 2, first_offset: 1, last_offset: 3, last_stable_offset: 4 };
    assert_eq!(log.aborted_transactions(0, 1), vec![first]);
    assert_eq!(log.aborted_transactions(0, 2), vec![first, second], "the first entry must not end the scan");
}

#[derive(Debug, Clone)]
enum Op {
    /// A transactional batch of `records` records from producer `producer` (opening its
    /// transaction if none is open).
    Txn { producer: u8, records: u8 },
    /// A batch with no producer id.
    Plain { records: u8 },
    /// Markers for these producers' open transactions, written in one append.
    End { producers: Vec<(u8, bool)> },
    /// A crash (the page cache survives) or a clean close, then open.
    Reopen { clean: bool },
    /// DeleteRecords to `ahead` offsets past the log start (at most the log end, possibly past
    /// an open transaction's first offset), then retention's removal of the segments below it.
    DeleteBefore { ahead: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..4, 1u8..5).prop_map(|(producer, records)| Op::Txn { producer, records }),
        2 => (1u8..4).prop_map(|records| Op::Plain { records }),
        4 => proptest::collection::vec((0u8..4, any::<bool>()), 1..3).prop_map(|producers| Op::End { producers }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (0u8..30).prop_map(|ahead| Op::DeleteBefore { ahead }),
    ]
}

/// What the model knows of each data batch: its offsets and whether a read_committed reader
/// keeps it (`None` while its transaction is open).
#[derive(Debug, Default)]
struct Model {
    batches: BTreeMap<i64, (i64, Option<bool>)>,
    open: HashMap<i64, Vec<i64>>,
    sequences: HashMap<i64, i32>,
}

impl Model {
    fn committed_in(&self, start: i64, upper_bound: i64) -> Vec<i64> {
        let mut kept = Vec::new();
        if start >= upper_bound {
            return kept;
        }
        for (&base, &(last, visible)) in &self.batches {
            if last < start || base >= upper_bound {
                continue;
            }
            match visible {
                Some(true) => kept.extend((base..=last).filter(|o| *o >= start)),
                Some(false) => {}
                None => panic!("batch {base}-{last} below the bound {upper_bound} is in an open transaction"),
            }
        }
        kept
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Interleaved transactions (commits and aborts, several markers in one append), plain
    /// batches, crashes, clean reopens and DeleteRecords with retention, on segments of a few
    /// hundred bytes: a read_committed fetch from any offset, up to any bound at or below the
    /// last stable offset, keeps exactly the committed and non-transactional records.
    #[test]
    fn read_committed_keeps_exactly_the_committed_records(
        segment_bytes in 150u64..1500,
        ops in proptest::collection::vec(op(), 1..80),
        reads in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1usize..2000), 8),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |recovery_point| Log::open(dir.path(), "t", config(segment_bytes), recovery_point, 0, 0).expect("open");
        let mut log = open(0);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Txn { producer, records } => {
                    let id = i64::from(producer);
                    let sequence = model.sequences.entry(id).or_insert(0);
                    let mut batch = txn_batch(id, *sequence, usize::from(records), 30);
                    let info = log.append(&mut batch, 0, 0).expect("append");
                    *sequence += i32::from(records);
                    model.batches.insert(info.base_offset, (info.last_offset, None));
                    model.open.entry(id).or_default().push(info.base_offset);
                }
                Op::Plain { records } => {
                    let info = log.append(&mut test_batch(u32::from(records), 0, 20), 0, 0).expect("append");
                    model.batches.insert(info.base_offset, (info.last_offset, Some(true)));
                }
                Op::End { producers } => {
                    let mut markers = Vec::new();
                    let mut ended = HashSet::new();
                    for (producer, commit) in producers {
                        let id = i64::from(producer);
                        if !ended.insert(id) {
                            continue;
                        }
                        let Some(bases) = model.open.remove(&id) else { continue };
                        for base in bases {
                            if let Some(batch) = model.batches.get_mut(&base) {
                                batch.1 = Some(commit);
                            }
                        }
                        markers.extend(build_marker_batch(id, 0, if commit { COMMIT } else { ABORT }, 0));
                    }
                    if !markers.is_empty() {
                        log.append_from(&mut markers, 0, 0, Origin::Coordinator).expect("markers");
                    }
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().expect("close");
                    }
                    drop(log);
                    log = open(if clean { i64::MAX } else { 0 });
                }
                Op::DeleteBefore { ahead } => {
                    let target = (log.log_start_offset() + i64::from(ahead)).min(log.log_end_offset());
                    log.delete_records_before(target).expect("delete records");
                    log.delete_old_segments(0).expect("retention");
                }
            }
            // Never below the log start, even when DeleteRecords passed an open transaction.
            let first_open = model.open.values().flatten().min().copied().unwrap_or(log.log_end_offset());
            prop_assert_eq!(
                log.last_stable_offset(),
                first_open.max(log.log_start_offset()).min(log.log_end_offset())
            );
        }
        let (start_offset, stable) = (log.log_start_offset(), log.last_stable_offset());
        for (start, upper, max_bytes) in reads {
            let start = start_offset + start.index((stable - start_offset + 1) as usize) as i64;
            let upper = start + upper.index((stable - start + 1) as usize) as i64;
            prop_assert_eq!(
                read_committed(&log, start, upper, max_bytes),
                model.committed_in(start, upper),
                "read_committed from {} below {} ({} segments)", start, upper, log.segment_count()
            );
        }
    }
}
