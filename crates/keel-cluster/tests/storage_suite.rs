//! openraft's storage conformance suite against the on-disk log store and state machine.

use keel_cluster::raft::log_store::LogStore;
use keel_cluster::raft::state_machine::StateMachine;
use keel_cluster::raft::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let io = |e: &dyn std::fmt::Display| -> StorageError {
            StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, AnyError::error(e.to_string())).into()
        };
        let dir = tempfile::tempdir().map_err(|e| io(&e))?;
        let (log, _) = LogStore::open(dir.path()).map_err(|e| io(&e))?;
        let (sm, _) = StateMachine::open(dir.path()).map_err(|e| io(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(DiskBuilder) {
        panic!("storage suite failed: {e}");
    }
}

mod reopen {
    use std::io::Cursor;

    use keel_cluster::raft::{Entry, LogId, MetadataBatch, Vote};
    use keel_cluster::{MetadataImage, MetadataRecord};
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload};
    use uuid::Uuid;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
    }

    fn topic_entry(term: u64, index: u64, name: &str) -> Entry {
        let records = vec![MetadataRecord::Topic { name: name.to_string(), topic_id: Uuid::new_v4() }];
        Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(MetadataBatch { records }) }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn truncate_purge_vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _) = LogStore::open(dir.path()).expect("open");
            log.blocking_append((1..=6).map(|i| blank(1, i))).await.expect("append");
            log.save_vote(&Vote::new_committed(1, 1)).await.expect("vote");
            log.save_committed(Some(log_id(1, 4))).await.expect("committed");
            log.truncate(log_id(1, 6)).await.expect("truncate");
            log.purge(log_id(1, 2)).await.expect("purge");
        }
        {
            let (mut log, recovery) = LogStore::open(dir.path()).expect("reopen");
            assert_eq!(recovery, Default::default());
            let state = log.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
            assert_eq!(state.last_log_id, Some(log_id(1, 5)));
            assert_eq!(indexes(&log.try_get_log_entries(0..100).await.expect("read")), vec![3, 4, 5]);
            assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new_committed(1, 1)));
            assert_eq!(log.read_committed().await.expect("committed"), Some(log_id(1, 4)));
            // A new term overwrites the uncommitted tail.
            log.truncate(log_id(1, 5)).await.expect("truncate");
            log.blocking_append([blank(2, 5), blank(2, 6)]).await.expect("append");
        }
        let (mut log, _) = LogStore::open(dir.path()).expect("reopen again");
        let entries = log.try_get_log_entries(0..100).await.expect("read");
        assert_eq!(indexes(&entries), vec![3, 4, 5, 6]);
        assert_eq!(entries[2].log_id, log_id(2, 5));
    }

    #[tokio::test]
    async fn snapshot_installs_elsewhere_and_reloads() {
        let source_dir = tempfile::tempdir().expect("tempdir");
        let (mut source, source_image) = StateMachine::open(source_dir.path()).expect("open source");
        source.apply([blank(1, 1), topic_entry(1, 2, "a"), topic_entry(1, 3, "b")]).await.expect("apply");
        let expected: MetadataImage = (**source_image.borrow()).clone();
        assert_eq!(expected.applied_index, 3);
        let snapshot = source.get_snapshot_builder().await.build_snapshot().await.expect("build");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));

        let target_dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut target, target_image) = StateMachine::open(target_dir.path()).expect("open target");
            let mut data = target.begin_receiving_snapshot().await.expect("begin");
            *data = Cursor::new(snapshot.snapshot.get_ref().clone());
            target.install_snapshot(&snapshot.meta, data).await.expect("install");
            assert_eq!(**target_image.borrow(), expected);
            let (applied, _) = target.applied_state().await.expect("applied state");
            assert_eq!(applied, Some(log_id(1, 3)));
        }
        // The installed snapshot is durable: a restart starts from it.
        let (mut reopened, image) = StateMachine::open(target_dir.path()).expect("reopen target");
        assert_eq!(**image.borrow(), expected);
        let current = reopened.get_current_snapshot().await.expect("current").expect("some snapshot");
        assert_eq!(current.meta, snapshot.meta);
    }
}
