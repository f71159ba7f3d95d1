//! The aborted-transaction index of one segment: `<base>.txnindex`, Kafka's format, one 34-byte
//! entry per transaction aborted by a marker in the segment (version i16 = 0, producerId i64,
//! firstOffset i64, lastOffset i64, lastStableOffset i64). Created on the first entry.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{IoContext, LogError};
use crate::producer::AbortedTxn;
use crate::storage::{remove_if_exists, Storage, StorageFile};

pub(crate) const ENTRY_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;

pub(crate) struct TxnIndex {
    pub path: PathBuf,
    pub entries: Vec<AbortedTxn>,
    storage: Arc<dyn Storage>,
    file: Option<Arc<dyn StorageFile>>,
    pub unsynced: bool,
}

fn encode(entry: &AbortedTxn) -> [u8; ENTRY_BYTES] {
    let mut out = [0u8; ENTRY_BYTES];
    out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
    out[2..10].copy_from_slice(&entry.producer_id.to_be_bytes());
    out[10..18].copy_from_slice(&entry.first_offset.to_be_bytes());
    out[18..26].copy_from_slice(&entry.last_offset.to_be_bytes());
    out[26..34].copy_from_slice(&entry.last_stable_offset.to_be_bytes());
    out
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

impl TxnIndex {
    /// An index with no file yet.
    pub(crate) fn empty(storage: Arc<dyn Storage>, path: PathBuf) -> TxnIndex {
        TxnIndex { path, entries: Vec::new(), storage, file: None, unsynced: false }
    }

    /// Reads the index at `path` if it exists. A torn last entry (a crash mid-write) is dropped;
    /// the entries the log replays after its snapshot are rebuilt anyway.
    pub(crate) fn load(storage: Arc<dyn Storage>, path: PathBuf) -> Result<TxnIndex, LogError> {
        let bytes = match storage.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TxnIndex::empty(storage, path)),
            Err(e) => return Err(e).ctx(&path),
        };
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
        for chunk in bytes.chunks_exact(ENTRY_BYTES) {
            if i16::from_be_bytes([chunk[0], chunk[1]]) != ENTRY_VERSION {
                return Err(LogError::Corrupt {
                    path,
                    reason: "unknown aborted-transaction entry version".to_string(),
                });
            }
            entries.push(AbortedTxn {
                producer_id: i64_at(chunk, 2),
                first_offset: i64_at(chunk, 10),
                last_offset: i64_at(chunk, 18),
                last_stable_offset: i64_at(chunk, 26),
            });
        }
        let mut index = TxnIndex { path, entries, storage, file: None, unsynced: false };
        if bytes.len() % ENTRY_BYTES != 0 {
            index.rewrite()?;
        }
        Ok(index)
    }

    fn file(&mut self) -> Result<Arc<dyn StorageFile>, LogError> {
        if let Some(file) = &self.file {
            return Ok(Arc::clone(file));
        }
        let file = self.storage.open(&self.path, false).ctx(&self.path)?;
        self.file = Some(Arc::clone(&file));
        Ok(file)
    }

    pub(crate) fn append(&mut self, entry: AbortedTxn) -> Result<(), LogError> {
        let file = self.file()?;
        let position = (self.entries.len() * ENTRY_BYTES) as u64;
        file.write_all_at(&encode(&entry), position).ctx(&self.path)?;
        self.entries.push(entry);
        self.unsynced = true;
        Ok(())
    }

    /// Drops the entries whose marker is at or after `offset`.
    pub(crate) fn truncate_from(&mut self, offset: i64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.last_offset < offset);
        if self.entries.len() != before {
            self.rewrite()?;
        }
        Ok(())
    }

    fn rewrite(&mut self) -> Result<(), LogError> {
        let file = self.file()?;
        let bytes: Vec<u8> = self.entries.iter().flat_map(encode).collect();
        file.set_len(0).ctx(&self.path)?;
        file.write_all_at(&bytes, 0).ctx(&self.path)?;
        self.unsynced = true;
        Ok(())
    }

    /// The open file, if the index has one and it has unsynced writes.
    pub(crate) fn take_unsynced(&mut self) -> Option<(Arc<dyn StorageFile>, PathBuf)> {
        if !std::mem::take(&mut self.unsynced) {
            return None;
        }
        self.file.as_ref().map(|f| (Arc::clone(f), self.path.clone()))
    }

    pub(crate) fn delete_file(&self) -> Result<(), LogError> {
        remove_if_exists(self.storage.as_ref(), &self.path).ctx(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::storage::OsStorage;

    fn entry(first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn { producer_id: 7, first_offset, last_offset, last_stable_offset: last_offset + 1 }
    }

    #[test]
    fn entries_survive_a_reload_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::load(OsStorage::shared(), path.clone()).unwrap();
        assert!(index.entries.is_empty() && !path.exists(), "no file until the first entry");
        index.append(entry(0, 5)).unwrap();
        index.append(entry(6, 9)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * ENTRY_BYTES as u64);
        assert_eq!(TxnIndex::load(OsStorage::shared(), path.clone()).unwrap().entries, vec![entry(0, 5), entry(6, 9)]);
        index.truncate_from(9).unwrap();
        assert_eq!(TxnIndex::load(OsStorage::shared(), path.clone()).unwrap().entries, vec![entry(0, 5)]);
        // A torn entry is dropped.
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all_at(&[0u8; 10], ENTRY_BYTES as u64).unwrap();
        let reloaded = TxnIndex::load(OsStorage::shared(), path.clone()).unwrap();
        assert_eq!(reloaded.entries, vec![entry(0, 5)]);
        assert_eq!(fs::metadata(&path).unwrap().len(), ENTRY_BYTES as u64);
    }
}
