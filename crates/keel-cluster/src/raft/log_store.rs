//! The durable raft log of the cluster metadata: an append-only file of CRC-checked frames plus
//! small atomically replaced files for the vote, the committed log id and the purge point.
//!
//! Crash safety rests on two rules:
//! - an append is fsynced before openraft is told it is flushed, so an acknowledged (and hence
//!   possibly committed) entry survives kill -9; only the unacknowledged tail can be torn, and a
//!   torn tail is cut off on open;
//! - the vote, committed and purged state are replaced by write-tmp, fsync, rename, fsync-dir, so
//!   each file holds either its old or its new value.
//!
//! A write the full disk refuses (ENOSPC, EDQUOT) is undone and retried until space frees (see
//! [`super::disk_full`]); both rules hold across the retries, since each retry redoes the whole
//! write and fsync and openraft hears of success only after one of them succeeded.
//!
//! Entries are also kept in memory (metadata is small); reads never touch the disk.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use super::disk_full::{self, StopSignal};
use super::file::{self, FileError, Frame};
use super::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::store::MetadataError;

/// Name of the log file inside the metadata directory.
pub const LOG_FILE: &str = "log";
/// Name of the file holding the last vote.
pub const VOTE_FILE: &str = "vote";
/// Name of the file holding the last committed log id.
pub const COMMITTED_FILE: &str = "committed";
/// Name of the file holding the last purged log id.
pub const PURGED_FILE: &str = "purged";

/// First bytes of the log file.
pub const LOG_MAGIC: [u8; 8] = *b"KEELMLOG";
/// Format version written after the magic, as a big-endian u32.
pub const LOG_FORMAT_VERSION: u32 = 1;
/// Bytes of the log file header: magic and version.
pub const LOG_HEADER_BYTES: u64 = 12;

/// The writer side of the log. openraft owns it and calls it from one task at a time.
pub struct LogStore {
    file: Arc<Mutex<LogFile>>,
    shared: Arc<Mutex<SharedLog>>,
}

/// A reader of the in-memory entries, for openraft's replication and apply paths.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Mutex<SharedLog>>,
}

/// What readers see. Entries above `last_purged` only.
#[derive(Default)]
struct SharedLog {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
}

/// The files and their durable state; only the writer touches them.
struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of valid data in `file`: the next frame starts here.
    end_offset: u64,
    /// File offset of each entry's frame, for truncation.
    offsets: BTreeMap<u64, u64>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Ends a write stalled on a full disk when the store stops.
    stop: StopSignal,
}

/// What opening found, for the caller to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut off the end of the log file because they held a torn (unflushed) write.
    pub truncated_bytes: u64,
    /// `(committed index on disk, last surviving index)` when the committed index pointed past
    /// the surviving log (the disk lost fsynced data) and was lowered to the log's end.
    pub lost_committed: Option<(u64, Option<u64>)>,
}

impl LogStore {
    /// Opens the log in `dir`, creating it when absent, and cuts off a torn tail.
    ///
    /// Does blocking I/O: call it from a blocking context.
    pub fn open(dir: &Path) -> Result<(LogStore, Recovery), MetadataError> {
        Self::open_with_stop(dir, StopSignal::default())
    }

    /// [`LogStore::open`] whose writes stalled on a full disk give up once `stop` is set.
    pub fn open_with_stop(dir: &Path, stop: StopSignal) -> Result<(LogStore, Recovery), MetadataError> {
        Self::open_files(dir, stop).map_err(MetadataError::from)
    }

    fn open_files(dir: &Path, stop: StopSignal) -> Result<(LogStore, Recovery), FileError> {
        fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
        let path = dir.join(LOG_FILE);
        for name in [LOG_FILE, VOTE_FILE, COMMITTED_FILE, PURGED_FILE] {
            file::remove_stale_tmp(&dir.join(name))?;
        }
        if !path.exists() {
            let mut header = Vec::with_capacity(LOG_HEADER_BYTES as usize);
            header.extend_from_slice(&LOG_MAGIC);
            header.extend_from_slice(&LOG_FORMAT_VERSION.to_be_bytes());
            file::write_bytes_atomic(&path, &header)?;
        }

        let vote: Option<Vote> = file::read_atomic(&dir.join(VOTE_FILE))?;
        let mut committed: Option<LogId> = file::read_atomic(&dir.join(COMMITTED_FILE))?;
        let last_purged: Option<LogId> = file::read_atomic(&dir.join(PURGED_FILE))?;

        let bytes = fs::read(&path).map_err(|e| FileError::io(&path, e))?;
        check_header(&path, &bytes)?;

        let mut recovery = Recovery::default();
        let mut entries = BTreeMap::new();
        let mut offsets = BTreeMap::new();
        let mut offset = LOG_HEADER_BYTES as usize;
        let purged_index = last_purged.map(|id| id.index);
        while offset < bytes.len() {
            let (entry, at) = match file::decode_frame(&bytes[offset..]) {
                Frame::Complete { payload, bytes: used } => {
                    let entry: Entry = serde_json::from_slice(payload)
                        .map_err(|e| FileError::corrupt(&path, format!("entry at byte {offset}: {e}")))?;
                    let at = offset as u64;
                    offset += used;
                    (entry, at)
                }
                Frame::Torn { reason } => {
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        bytes = bytes.len() - offset,
                        %reason,
                        "cutting a torn write off the end of the metadata log"
                    );
                    recovery.truncated_bytes = (bytes.len() - offset) as u64;
                    break;
                }
            };
            let index = entry.log_id.index;
            if purged_index.is_some_and(|purged| index <= purged) {
                // Purged but not yet reclaimed: the file is never rewritten in place.
                continue;
            }
            let expected = match entries.keys().next_back() {
                Some(last) => Some(last + 1),
                None => purged_index.map(|purged| purged + 1),
            };
            if expected.is_some_and(|expected| expected != index) {
                return Err(FileError::corrupt(
                    &path,
                    format!("entry at byte {at} has index {index}, expected {expected:?}"),
                ));
            }
            offsets.insert(index, at);
            entries.insert(index, entry);
        }

        let mut file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| FileError::io(&path, e))?;
        let end_offset = offset as u64;
        if recovery.truncated_bytes > 0 {
            file.set_len(end_offset).map_err(|e| FileError::io(&path, e))?;
            file.sync_all().map_err(|e| FileError::io(&path, e))?;
        }
        file.seek(SeekFrom::Start(end_offset)).map_err(|e| FileError::io(&path, e))?;

        // The committed id can only point past the log if the disk lost fsynced data (or the
        // file was cut by hand). Starting from what survived keeps the node usable; the loss is
        // reported loudly.
        let last_log_id = entries.values().next_back().map(|e: &Entry| e.log_id).or(last_purged);
        if let Some(c) = committed {
            if Some(c.index) > last_log_id.map(|id| id.index) {
                tracing::error!(
                    path = %path.display(),
                    committed = c.index,
                    last_index = ?last_log_id.map(|id| id.index),
                    "the metadata log lost committed entries; continuing from the surviving prefix"
                );
                recovery.lost_committed = Some((c.index, last_log_id.map(|id| id.index)));
                committed = last_log_id;
            }
        }

        let log_file = LogFile { dir: dir.to_path_buf(), path, file, end_offset, offsets, vote, committed, stop };
        let shared = SharedLog { entries, last_purged };
        Ok((LogStore { file: Arc::new(Mutex::new(log_file)), shared: Arc::new(Mutex::new(shared)) }, recovery))
    }

    /// Runs blocking file work off the async runtime.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut LogFile, &Mutex<SharedLog>) -> Result<T, StorageError> + Send + 'static,
    {
        let file = Arc::clone(&self.file);
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut file = lock(&file)?;
            work(&mut file, &shared)
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    // The header is created by an atomic rename, so a short or foreign header is damage.
    let Some(header) = bytes.get(..LOG_HEADER_BYTES as usize) else {
        return Err(FileError::corrupt(path, "file is shorter than the log header"));
    };
    if header[..8] != LOG_MAGIC {
        return Err(FileError::corrupt(path, "not a keel metadata log (bad magic)"));
    }
    let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if version != LOG_FORMAT_VERSION {
        return Err(FileError::corrupt(
            path,
            format!("log format version {version} is not supported (expected {LOG_FORMAT_VERSION})"),
        ));
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageError> {
    mutex.lock().map_err(|_| {
        storage_error(ErrorSubject::Store, ErrorVerb::Read, &AnyError::error("metadata log lock poisoned"))
    })
}

pub(crate) fn storage_error<E: std::error::Error + 'static>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: &E,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

impl LogFile {
    fn append(&mut self, entries: &[Entry]) -> Result<(), FileError> {
        let mut buf = Vec::new();
        let mut new_offsets = Vec::with_capacity(entries.len());
        for entry in entries {
            let frame =
                file::encode_frame(entry).map_err(|e| FileError::corrupt(&self.path, format!("encode entry: {e}")))?;
            if frame.len() - file::FRAME_HEADER_BYTES > file::FRAME_BYTES_MAX {
                return Err(FileError::corrupt(
                    &self.path,
                    format!("entry {} is {} bytes, over the frame limit", entry.log_id, frame.len()),
                ));
            }
            new_offsets.push((entry.log_id.index, self.end_offset + buf.len() as u64));
            buf.extend_from_slice(&frame);
        }
        let (file, path, end_offset) = (&mut self.file, &self.path, self.end_offset);
        disk_full::retry_while_disk_full(&self.stop, disk_full::BACKOFF, "append", || {
            // Every try writes all the frames again: after a failed write or fsync, what the page
            // cache holds past `end_offset` is unknown.
            let written = file
                .seek(SeekFrom::Start(end_offset))
                .and_then(|_| file.write_all(&buf))
                .and_then(|()| file.sync_data());
            written.map_err(|e| {
                // Best effort: leave no half-written frame behind (and free its blocks); a frame
                // left by a crash here is torn and cut off on open.
                let _ = file.set_len(end_offset);
                FileError::io(path, e)
            })
        })?;
        self.end_offset += buf.len() as u64;
        self.offsets.extend(new_offsets);
        Ok(())
    }

    /// Rewrites the file without its purged frames once they are at least half of it, so the
    /// file stays within about twice what the entries after the last snapshot need. The new file
    /// (header and the kept frames, byte for byte) replaces the old one atomically: a crash
    /// leaves either, and both open to the same entries since the purge point is durable first.
    fn reclaim(&mut self) -> Result<(), FileError> {
        let first_kept = self.offsets.values().next().copied().unwrap_or(self.end_offset);
        let dead = first_kept - LOG_HEADER_BYTES;
        if dead == 0 || dead < self.end_offset - first_kept {
            return Ok(());
        }
        let mut kept = vec![0u8; (self.end_offset - first_kept) as usize];
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(&mut kept, first_kept).map_err(|e| FileError::io(&self.path, e))?;
        }
        let mut bytes = Vec::with_capacity(LOG_HEADER_BYTES as usize + kept.len());
        bytes.extend_from_slice(&LOG_MAGIC);
        bytes.extend_from_slice(&LOG_FORMAT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&kept);
        let path = self.path.clone();
        disk_full::retry_while_disk_full(&self.stop, disk_full::BACKOFF, "reclaim", || {
            file::write_bytes_atomic(&path, &bytes)
        })?;
        let mut reopened =
            OpenOptions::new().read(true).write(true).open(&self.path).map_err(|e| FileError::io(&self.path, e))?;
        let end_offset = bytes.len() as u64;
        reopened.seek(SeekFrom::Start(end_offset)).map_err(|e| FileError::io(&self.path, e))?;
        self.file = reopened;
        for offset in self.offsets.values_mut() {
            *offset -= dead;
        }
        self.end_offset = end_offset;
        debug_assert_eq!(self.offsets.values().next().copied().unwrap_or(end_offset), LOG_HEADER_BYTES);
        Ok(())
    }

    /// Removes every entry at `index` and after from the file.
    fn truncate(&mut self, index: u64) -> Result<(), FileError> {
        let Some(&offset) = self.offsets.get(&index) else {
            return Ok(());
        };
        let (file, path) = (&mut self.file, &self.path);
        disk_full::retry_while_disk_full(&self.stop, disk_full::BACKOFF, "truncate", || {
            file.set_len(offset).and_then(|()| file.sync_data()).map_err(|e| FileError::io(path, e))
        })?;
        self.end_offset = offset;
        self.offsets.split_off(&index);
        Ok(())
    }

    /// Atomically replaces one of the state files, riding out a full disk.
    fn replace_state<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), FileError> {
        let path = self.dir.join(name);
        disk_full::retry_while_disk_full(&self.stop, disk_full::BACKOFF, name, || file::write_atomic(&path, value))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let shared = lock(&self.shared)?;
        Ok(shared.entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        LogReader { shared: Arc::clone(&self.shared) }.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let shared = lock(&self.shared)?;
        let last_purged_log_id = shared.last_purged;
        let last_log_id = shared.entries.values().next_back().map(|entry| entry.log_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { shared: Arc::clone(&self.shared) }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |file, _| {
            file.replace_state(VOTE_FILE, &vote)
                .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
            file.vote = Some(vote);
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.file)?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.blocking(move |file, _| {
            file.replace_state(COMMITTED_FILE, &committed)
                .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            file.committed = committed;
            Ok(())
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.file)?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self
            .blocking(move |file, shared| {
                file.append(&entries).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
                let mut shared = lock(shared)?;
                for entry in entries {
                    shared.entries.insert(entry.log_id.index, entry);
                }
                Ok(())
            })
            .await;
        match result {
            // Durable: the frames are fsynced before the callback runs.
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |file, shared| {
            lock(shared)?.entries.split_off(&log_id.index);
            file.truncate(log_id.index).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is made durable first: from then on the purged frames are skipped on
        // open, whether or not the file was rewritten without them.
        self.blocking(move |file, shared| {
            file.replace_state(PURGED_FILE, &log_id)
                .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
            {
                let mut shared = lock(shared)?;
                shared.last_purged = Some(log_id);
                let kept = shared.entries.split_off(&log_id.index.saturating_add(1));
                shared.entries = kept;
            }
            let kept = file.offsets.split_off(&log_id.index.saturating_add(1));
            file.offsets = kept;
            file.reclaim().map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
        })
        .await
    }
}
