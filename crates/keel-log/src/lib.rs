//! Keel's storage: partition logs of Kafka record batches in segment files, with sparse indexes,
//! crash recovery and group-commit fsync. The byte layout is in `docs/storage-format.md`.
//!
//! Architecture invariant: no networking and no async runtime here; callers pass the current
//! time in (`now_ms`) so behaviour is deterministic under test.

pub mod batch;
pub mod builder;
mod checkpoint;
pub mod cleaner;
pub mod error;
pub mod log;
pub mod manager;
pub mod producer;
pub mod retention;
mod segment;
#[cfg(test)]
mod sim_storage;
pub mod stats;
pub mod storage;
pub mod testing;
mod txn_index;

pub use batch::{validate_batches, BatchError, BatchHeader, BatchSummary};
pub use cleaner::{CompactionPolicy, OffsetMap, RecordsCodec};
pub use error::LogError;
pub use log::{AppendInfo, CleanReport, Log, LogConfig, ReadSlice, RecoveryReport};
pub use manager::{LogManager, ManagerRecoveryReport, PartitionRecovery};
pub use retention::{DeletionReason, RetentionPolicy};
pub use storage::{OsStorage, Storage, StorageFile};

#[cfg(test)]
mod static_checks {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn log_and_manager_are_send_and_sync() {
        assert_send_sync::<crate::Log>();
        assert_send_sync::<crate::LogManager>();
    }
}
