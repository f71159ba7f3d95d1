//! The file layer under the log: every byte keel-log reads or writes, every rename, removal and
//! fsync, goes through [`Storage`] and [`StorageFile`]. [`OsStorage`] is the operating
//! system's file system; the tests put a fault-injecting simulation underneath instead
//! (`sim_storage.rs`), which can fail the Nth write or fsync, tear a write, run out of space
//! and lose power.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// An open file, read and written at explicit positions.
pub trait StorageFile: Send + Sync + fmt::Debug {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Writes all of `buf` at `position`. On an error, any prefix of it may have been written.
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// fsync of the data (and the length): once it returns `Ok`, what was written survives a
    /// power loss. After an error nothing is known about the unsynced writes.
    fn sync_data(&self) -> io::Result<()>;
    fn modified(&self) -> io::Result<SystemTime>;
    fn set_modified(&self, time: SystemTime) -> io::Result<()>;
    /// The operating system's file, for `sendfile(2)`; `None` when the storage has none.
    fn os_file(&self) -> Option<&File>;
}

/// A file system: opens files and changes directories. A created, renamed or removed name
/// survives a power loss only once its directory is fsynced with [`Storage::sync_dir`].
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens `path` for reading and writing, creating it when missing; `truncate` empties it.
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// The whole contents of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names in directory `path`, each with whether it is a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>>;
    /// fsyncs the directory `path`, making the names in it durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// Removes `path`; a file already gone is fine.
pub(crate) fn remove_if_exists(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl OsStorage {
    /// A shared handle, for `Log::open_in` and `LogManager::open_in`.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(OsStorage)
    }
}

#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, position)
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.0.write_all_at(buf, position)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.0.metadata()?.modified()
    }

    fn set_modified(&self, time: SystemTime) -> io::Result<()> {
        self.0.set_modified(time)
    }

    fn os_file(&self) -> Option<&File> {
        Some(&self.0)
    }
}

impl Storage for OsStorage {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn StorageFile>> {
        // Never O_APPEND: positional writes on an O_APPEND file ignore the position on Linux.
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            names.push((entry.file_name().to_string_lossy().into_owned(), entry.file_type()?.is_dir()));
        }
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}
