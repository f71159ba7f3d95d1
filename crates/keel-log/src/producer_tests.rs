use super::*;

fn data(pid: i64, epoch: i16, first_seq: i32, count: i32, first_offset: i64) -> ProducerBatch {
    ProducerBatch {
        producer_id: pid,
        epoch,
        first_seq,
        last_seq: increment_sequence(first_seq, count - 1),
        first_offset,
        last_offset: first_offset + i64::from(count) - 1,
        max_timestamp: 1_000,
        transactional: false,
        marker: None,
    }
}

fn txn(pid: i64, epoch: i16, first_seq: i32, count: i32, first_offset: i64) -> ProducerBatch {
    ProducerBatch { transactional: true, ..data(pid, epoch, first_seq, count, first_offset) }
}

fn marker(pid: i64, epoch: i16, commit: bool, offset: i64) -> ProducerBatch {
    ProducerBatch {
        producer_id: pid,
        epoch,
        first_seq: NO_SEQUENCE,
        last_seq: NO_SEQUENCE,
        first_offset: offset,
        last_offset: offset,
        max_timestamp: 2_000,
        transactional: true,
        marker: Some(Marker { commit, coordinator_epoch: 0 }),
    }
}

fn append(states: &mut ProducerStates, batch: ProducerBatch) -> Result<Option<BatchMeta>, ProducerError> {
    let staged = states.stage(&[batch], Origin::Client)?;
    let duplicate = staged.duplicate;
    states.commit(staged);
    Ok(duplicate)
}

#[test]
fn sequences_must_follow_each_other() {
    let mut states = ProducerStates::new();
    assert_eq!(append(&mut states, data(1, 0, 0, 3, 0)), Ok(None));
    assert_eq!(append(&mut states, data(1, 0, 3, 2, 3)), Ok(None));
    assert!(matches!(append(&mut states, data(1, 0, 6, 1, 5)), Err(ProducerError::OutOfOrderSequence { .. })));
    assert_eq!(states.entry(1).map(ProducerEntry::last_seq), Some(4));
}

#[test]
fn a_retry_of_a_recent_batch_is_a_duplicate_with_its_original_offsets() {
    let mut states = ProducerStates::new();
    for i in 0..6 {
        append(&mut states, data(1, 0, i * 10, 10, i64::from(i) * 10)).unwrap();
    }
    // The last five batches are remembered; the first one is not.
    let duplicate = append(&mut states, data(1, 0, 20, 10, 60)).unwrap().expect("duplicate");
    assert_eq!((duplicate.first_offset, duplicate.last_offset), (20, 29));
    assert!(matches!(append(&mut states, data(1, 0, 0, 10, 60)), Err(ProducerError::OutOfOrderSequence { .. })));
    // A duplicate changes nothing.
    assert_eq!(states.entry(1).unwrap().last_seq(), 59);
}

#[test]
fn epochs_fence_older_producers_and_a_new_epoch_starts_at_zero() {
    let mut states = ProducerStates::new();
    append(&mut states, data(1, 3, 0, 1, 0)).unwrap();
    assert!(matches!(append(&mut states, data(1, 2, 1, 1, 1)), Err(ProducerError::InvalidProducerEpoch { .. })));
    assert!(matches!(append(&mut states, data(1, 4, 5, 1, 1)), Err(ProducerError::OutOfOrderSequence { .. })));
    assert_eq!(append(&mut states, data(1, 4, 0, 1, 1)), Ok(None));
    assert_eq!(states.entry(1).unwrap().epoch, 4);
}

#[test]
fn an_unknown_producer_may_start_at_any_sequence() {
    let mut states = ProducerStates::new();
    assert_eq!(append(&mut states, data(9, 0, 42, 1, 0)), Ok(None));
    assert_eq!(append(&mut states, data(9, 0, 43, 1, 1)), Ok(None));
}

#[test]
fn sequences_wrap_past_i32_max() {
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    let mut states = ProducerStates::new();
    append(&mut states, data(1, 0, i32::MAX - 1, 2, 0)).unwrap();
    assert_eq!(append(&mut states, data(1, 0, 0, 1, 2)), Ok(None));
}

#[test]
fn batches_in_one_append_are_checked_in_order() {
    let states = ProducerStates::new();
    assert!(states.stage(&[data(1, 0, 0, 2, 0), data(1, 0, 2, 1, 2)], Origin::Client).is_ok());
    assert!(states.stage(&[data(1, 0, 0, 2, 0), data(1, 0, 3, 1, 2)], Origin::Client).is_err());
}

#[test]
fn transactions_track_the_first_unstable_offset_and_aborts() {
    let mut states = ProducerStates::new();
    append(&mut states, txn(1, 0, 0, 2, 10)).unwrap();
    append(&mut states, txn(2, 0, 0, 1, 12)).unwrap();
    append(&mut states, txn(1, 0, 2, 1, 13)).unwrap();
    assert_eq!(states.first_unstable_offset(), Some(10));
    // A non-transactional write inside an open transaction is refused.
    assert!(matches!(append(&mut states, data(1, 0, 3, 1, 14)), Err(ProducerError::InvalidTxnState { .. })));
    let staged = states.stage(&[marker(1, 0, false, 14)], Origin::Coordinator).unwrap();
    let aborted = states.commit(staged);
    assert_eq!(aborted, vec![AbortedTxn { producer_id: 1, first_offset: 10, last_offset: 14, last_stable_offset: 12 }]);
    assert_eq!(states.first_unstable_offset(), Some(12));
    let staged = states.stage(&[marker(2, 0, true, 15)], Origin::Coordinator).unwrap();
    assert!(states.commit(staged).is_empty(), "a commit is not indexed");
    assert_eq!(states.first_unstable_offset(), None);
    // A marker in the same epoch keeps the producer's sequence going; a bumped epoch restarts it.
    assert!(append(&mut states, txn(1, 0, 0, 1, 16)).is_err());
    assert_eq!(append(&mut states, txn(1, 0, 3, 1, 16)), Ok(None));
    let staged = states.stage(&[marker(1, 1, false, 17)], Origin::Coordinator).unwrap();
    states.commit(staged);
    assert!(append(&mut states, txn(1, 1, 4, 1, 18)).is_err());
    assert_eq!(append(&mut states, txn(1, 1, 0, 1, 18)), Ok(None));
}

#[test]
fn markers_check_epochs_and_coordinator_epochs() {
    let mut states = ProducerStates::new();
    append(&mut states, txn(1, 5, 0, 1, 0)).unwrap();
    assert!(matches!(
        states.stage(&[marker(1, 4, true, 1)], Origin::Coordinator),
        Err(ProducerError::InvalidProducerEpoch { .. })
    ));
    let mut fenced = marker(1, 5, true, 1);
    fenced.marker = Some(Marker { commit: true, coordinator_epoch: 3 });
    let staged = states.stage(&[fenced], Origin::Coordinator).unwrap();
    states.commit(staged);
    fenced.marker = Some(Marker { commit: true, coordinator_epoch: 2 });
    assert!(matches!(states.stage(&[fenced], Origin::Coordinator), Err(ProducerError::CoordinatorFenced { .. })));
}

#[test]
fn expiry_and_log_start_forget_idle_producers_but_not_open_transactions() {
    let mut states = ProducerStates::new();
    append(&mut states, data(1, 0, 0, 1, 0)).unwrap();
    append(&mut states, txn(2, 0, 0, 1, 1)).unwrap();
    append(&mut states, data(3, 0, 0, 1, 5)).unwrap();
    assert_eq!(states.remove_expired(1_000 + 500, 1_000), 0);
    assert_eq!(states.remove_expired(1_000 + 1_000, 1_000), 2);
    assert!(states.entry(2).is_some());
    let mut states2 = ProducerStates::new();
    append(&mut states2, data(1, 0, 0, 1, 0)).unwrap();
    append(&mut states2, data(3, 0, 0, 1, 5)).unwrap();
    states2.remove_below(3);
    assert!(states2.entry(1).is_none() && states2.entry(3).is_some());
}

#[test]
fn snapshots_round_trip_and_reject_damage() {
    let mut states = ProducerStates::new();
    for i in 0..7 {
        append(&mut states, data(1, 2, i, 1, i64::from(i))).unwrap();
    }
    append(&mut states, txn(2, 0, 0, 1, 7)).unwrap();
    let bytes = states.encode_snapshot();
    let decoded = ProducerStates::decode_snapshot(&bytes).expect("decodes");
    assert_eq!(decoded, states);
    assert_eq!(decoded.first_unstable_offset(), Some(7));
    for cut in 0..bytes.len() {
        assert!(ProducerStates::decode_snapshot(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(ProducerStates::decode_snapshot(&flipped).is_err());
    assert_eq!(ProducerStates::decode_snapshot(&ProducerStates::new().encode_snapshot()), Ok(ProducerStates::new()));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a producer sends, in whatever order, what the state accepts is exactly the
        /// in-order prefix continuation: each accepted batch's first sequence follows the last
        /// accepted one, and a resend of an accepted batch is reported as a duplicate.
        #[test]
        fn accepted_batches_form_one_gapless_sequence(sends in proptest::collection::vec((0i32..20, 1i32..4), 1..60)) {
            let mut states = ProducerStates::new();
            let mut next_offset = 0i64;
            let mut accepted: Vec<(i32, i32)> = Vec::new();
            for (first_seq, count) in sends {
                let batch = data(1, 0, first_seq, count, next_offset);
                match append(&mut states, batch) {
                    Ok(None) => {
                        if let Some(&(_, last)) = accepted.last() {
                            prop_assert_eq!(first_seq, last + 1);
                        }
                        accepted.push((first_seq, batch.last_seq));
                        next_offset += i64::from(count);
                    }
                    Ok(Some(duplicate)) => {
                        prop_assert!(accepted.iter().rev().take(BATCHES_TO_RETAIN).any(|&(f, l)| f == duplicate.first_seq && l == duplicate.last_seq));
                    }
                    Err(ProducerError::OutOfOrderSequence { .. }) => {
                        prop_assert!(!accepted.is_empty());
                    }
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            let decoded = ProducerStates::decode_snapshot(&states.encode_snapshot()).unwrap();
            prop_assert_eq!(decoded, states);
        }
    }
}
