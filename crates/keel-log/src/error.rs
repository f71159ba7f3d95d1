//! The error type of the storage layer; the protocol edge maps it to Kafka codes.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::batch::BatchError;

#[derive(Debug, Error)]
pub enum LogError {
    /// OFFSET_OUT_OF_RANGE (1).
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    /// KAFKA_STORAGE_ERROR (56).
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// KAFKA_STORAGE_ERROR (56): a file's contents are not what this crate writes.
    #[error("corrupt {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The bytes handed to `append` are not whole v2 batches (the caller should have validated).
    #[error("invalid batches passed to append: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The producer state refused a batch (sequence, epoch or transaction state).
    #[error(transparent)]
    Producer(#[from] crate::producer::ProducerError),
    /// The directory belongs to another incarnation of the topic.
    #[error("{} holds topic id {found}, not {expected}; delete the directory if the topic was recreated", path.display())]
    TopicIdMismatch { path: PathBuf, expected: String, found: String },
    /// An earlier fsync failed; the page cache may have dropped writes, so the log refuses all
    /// further work until it is reopened (as Kafka does).
    #[error("log {} failed after an fsync error; restart the broker to recover it", path.display())]
    Failed { path: PathBuf },
    /// The cleaner's offset map cannot hold one segment's offsets (Kafka's "not enough memory
    /// to process one segment").
    #[error("{} has {offsets} offsets but the cleaner's map holds {max_entries}; raise log.cleaner.dedupe.buffer.size or lower segment.bytes", path.display())]
    CleanerBufferTooSmall { path: PathBuf, offsets: u64, max_entries: u64 },
}

/// Attaches the file path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: &Path) -> Result<T, LogError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: &Path) -> Result<T, LogError> {
        self.map_err(|source| LogError::Io { path: path.to_path_buf(), source })
    }
}
