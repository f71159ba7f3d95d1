//! A simulated file system for fault-injection tests: files live in memory, with what an fsync
//! made durable kept apart from what was only written, so that a power loss can be played.
//!
//! The model, which is stricter than Linux file systems usually are:
//! - a file's contents survive a power loss only up to its last successful `sync_data`; the
//!   changes after it are lost, or with [`PowerLoss::Torn`] a random prefix of them survives,
//!   the last kept write cut at a random byte;
//! - a created, renamed or removed name survives only once its directory is fsynced (directories
//!   themselves are created, renamed and removed durably at once);
//! - a failed fsync forgets the file's pending changes: they stay readable but are lost at the
//!   next power loss even if a later fsync succeeds (Linux's behaviour after a writeback error);
//! - `capacity` bounds the bytes of the files in use (named or open); a write beyond it writes
//!   what fits and fails with ENOSPC.
//!
//! Faults are armed by count: [`SimStorage::fail_write`] fails the write that comes after `n`
//! more successful ones, first writing `keep_bytes` of it (a torn write);
//! [`SimStorage::fail_sync`] does the same for fsyncs (files and directories). The counters
//! ([`SimStorage::writes`], [`SimStorage::syncs`]) let a test run a workload once to count its
//! operations, then once per operation with the fault on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::storage::{Storage, StorageFile};

/// What survives of the unsynced changes at a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PowerLoss {
    /// Nothing that was not fsynced.
    DropUnsynced,
    /// A prefix of each file's unsynced changes, chosen by the seed, the last one torn.
    Torn(u64),
}

#[derive(Debug, Clone)]
enum Change {
    Write { position: u64, bytes: Vec<u8> },
    SetLen(u64),
}

fn apply(data: &mut Vec<u8>, change: &Change) {
    match change {
        // A write of nothing does not extend the file.
        Change::Write { bytes, .. } if bytes.is_empty() => {}
        Change::Write { position, bytes } => {
            let start = *position as usize;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        Change::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Debug)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// The changes since the last successful fsync, in order.
    pending: Vec<Change>,
    modified: SystemTime,
    open_handles: usize,
}

#[derive(Debug, Default)]
struct Armed {
    /// Successful operations left before the failing one.
    after: u64,
    keep_bytes: usize,
}

#[derive(Debug, Default)]
struct Sim {
    /// Bumped by each power loss: handles of an older generation belong to the dead process.
    generation: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    capacity: Option<u64>,
    write_fault: Option<Armed>,
    sync_fault: Option<Armed>,
    writes: u64,
    syncs: u64,
    /// xorshift state for `PowerLoss::Torn`.
    rng: u64,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error: {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl Sim {
    fn used_bytes(&self) -> u64 {
        let named: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes
            .iter()
            .filter(|(ino, inode)| named.contains(ino) || inode.open_handles > 0)
            .map(|(_, inode)| inode.data.len() as u64)
            .sum()
    }

    /// Drops the inodes nothing refers to any more.
    fn collect(&mut self) {
        let referenced: BTreeSet<u64> = self.names.values().chain(self.durable_names.values()).copied().collect();
        self.inodes.retain(|ino, inode| referenced.contains(ino) || inode.open_handles > 0);
    }

    fn take_fault(armed: &mut Option<Armed>) -> Option<usize> {
        let fault = armed.as_mut()?;
        if fault.after > 0 {
            fault.after -= 1;
            return None;
        }
        armed.take().map(|fault| fault.keep_bytes)
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn parent_exists(&self, path: &Path) -> bool {
        path.parent().is_none_or(|p| p.as_os_str().is_empty() || self.dirs.contains(p))
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| eio("stale inode"))
    }
}

/// The simulated file system; share it as `Arc<SimStorage>`.
#[derive(Debug, Default)]
pub(crate) struct SimStorage {
    sim: Mutex<Sim>,
}

impl SimStorage {
    pub(crate) fn new() -> Arc<SimStorage> {
        Arc::new(SimStorage::default())
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write after `after` more successful ones fails with EIO, having written its first
    /// `keep_bytes` bytes.
    pub(crate) fn fail_write(&self, after: u64, keep_bytes: usize) {
        self.lock().write_fault = Some(Armed { after, keep_bytes });
    }

    /// The fsync after `after` more successful ones fails with EIO.
    pub(crate) fn fail_sync(&self, after: u64) {
        self.lock().sync_fault = Some(Armed { after, keep_bytes: 0 });
    }

    /// Bounds the bytes in use; `None` for no bound.
    pub(crate) fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    pub(crate) fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Writes attempted so far (failed ones included).
    pub(crate) fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// fsyncs of files and directories attempted so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The machine loses power: every file and name goes back to what was durable (see
    /// [`PowerLoss`]), armed faults are disarmed, and the handles open until now fail from here
    /// on. The caller then reopens what it needs, as a restarted process would.
    pub(crate) fn power_loss(&self, mode: PowerLoss) {
        let mut sim = self.lock();
        sim.generation += 1;
        sim.write_fault = None;
        sim.sync_fault = None;
        if let PowerLoss::Torn(seed) = mode {
            sim.rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        }
        let mut inos: Vec<u64> = sim.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let keep = match mode {
                PowerLoss::DropUnsynced => 0,
                PowerLoss::Torn(_) => {
                    let pending = sim.inodes[&ino].pending.len() as u64;
                    (sim.next_random() % (pending + 1)) as usize
                }
            };
            let torn_at = sim.next_random();
            let Some(inode) = sim.inodes.get_mut(&ino) else { continue };
            let mut data = std::mem::take(&mut inode.durable);
            let pending = std::mem::take(&mut inode.pending);
            for (i, change) in pending.iter().take(keep).enumerate() {
                match change {
                    // The last surviving write may be torn anywhere.
                    Change::Write { position, bytes } if i + 1 == keep && !bytes.is_empty() => {
                        let cut = (torn_at % (bytes.len() as u64 + 1)) as usize;
                        apply(&mut data, &Change::Write { position: *position, bytes: bytes[..cut].to_vec() });
                    }
                    change => apply(&mut data, change),
                }
            }
            inode.durable = data.clone();
            inode.data = data;
            inode.open_handles = 0;
        }
        sim.names = sim.durable_names.clone();
        sim.collect();
    }

    /// The contents of a file by name, for tests that look at the bytes.
    pub(crate) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let sim = self.lock();
        sim.names.get(path).and_then(|ino| sim.inodes.get(ino)).map(|inode| inode.data.clone())
    }

    /// Flips one bit of a file, as a failing disk would; durable at once.
    pub(crate) fn flip_bit(&self, path: &Path, position: u64) -> bool {
        let mut sim = self.lock();
        let Some(&ino) = sim.names.get(path) else { return false };
        let Some(inode) = sim.inodes.get_mut(&ino) else { return false };
        let Some(byte) = inode.data.get_mut(position as usize) else { return false };
        *byte ^= 0x10;
        if let Some(byte) = inode.durable.get_mut(position as usize) {
            *byte ^= 0x10;
        }
        true
    }
}

#[derive(Debug)]
struct SimFile {
    storage: Arc<SimStorage>,
    ino: u64,
    generation: u64,
}

impl SimFile {
    /// The simulation, if this handle's process is still alive.
    fn live(&self) -> io::Result<MutexGuard<'_, Sim>> {
        let sim = self.storage.lock();
        if sim.generation != self.generation {
            return Err(eio("handle from before a power loss"));
        }
        Ok(sim)
    }

    fn change(&self, change: Change) -> io::Result<()> {
        let mut sim = self.live()?;
        let inode = sim.inode(self.ino)?;
        apply(&mut inode.data, &change);
        inode.pending.push(change);
        inode.modified = SystemTime::now();
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        if let Ok(mut sim) = self.live() {
            if let Some(inode) = sim.inodes.get_mut(&self.ino) {
                inode.open_handles = inode.open_handles.saturating_sub(1);
            }
            sim.collect();
        }
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        let mut sim = self.live()?;
        let data = &sim.inode(self.ino)?.data;
        let start = usize::try_from(position).map_err(|_| eio("position"))?;
        match data.get(start..start.saturating_add(buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file")),
        }
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let (keep, error) = {
            let mut sim = self.live()?;
            sim.writes += 1;
            let fault = Sim::take_fault(&mut sim.write_fault);
            let len = sim.inode(self.ino)?.data.len() as u64;
            let growth = (position + buf.len() as u64).saturating_sub(len);
            let free = sim.capacity.map(|capacity| capacity.saturating_sub(sim.used_bytes()));
            match (fault, free) {
                (Some(keep), _) => (keep.min(buf.len()), Some(eio("write"))),
                (None, Some(free)) if growth > free => {
                    // What fits is written: up to the free space past the current end.
                    let fits = (len + free).saturating_sub(position).min(buf.len() as u64) as usize;
                    (fits, Some(enospc()))
                }
                _ => (buf.len(), None),
            }
        };
        if keep > 0 {
            self.change(Change::Write { position, bytes: buf[..keep].to_vec() })?;
        }
        error.map_or(Ok(()), Err)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        {
            let mut sim = self.live()?;
            let current = sim.inode(self.ino)?.data.len() as u64;
            let free = sim.capacity.map(|capacity| capacity.saturating_sub(sim.used_bytes()));
            if free.is_some_and(|free| len > current + free) {
                return Err(enospc());
            }
        }
        self.change(Change::SetLen(len))
    }

    fn size(&self) -> io::Result<u64> {
        let mut sim = self.live()?;
        Ok(sim.inode(self.ino)?.data.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.syncs += 1;
        let failed = Sim::take_fault(&mut sim.sync_fault).is_some();
        let inode = sim.inode(self.ino)?;
        if failed {
            // The kernel marks the pages clean after a writeback error: they are never retried.
            inode.pending.clear();
            return Err(eio("fsync"));
        }
        // What reaches the disk is the changes since the last fsync, not the cached contents:
        // changes a failed fsync dropped stay lost.
        for change in std::mem::take(&mut inode.pending) {
            apply(&mut inode.durable, &change);
        }
        Ok(())
    }

    fn modified(&self) -> io::Result<SystemTime> {
        let mut sim = self.live()?;
        Ok(sim.inode(self.ino)?.modified)
    }

    fn set_modified(&self, time: SystemTime) -> io::Result<()> {
        let mut sim = self.live()?;
        sim.inode(self.ino)?.modified = time;
        Ok(())
    }

    fn os_file(&self) -> Option<&File> {
        None
    }
}

/// A `Storage` handle on the simulation, as the log takes it.
#[derive(Debug, Clone)]
pub(crate) struct SimHandle(pub Arc<SimStorage>);

impl SimHandle {
    pub(crate) fn shared(storage: &Arc<SimStorage>) -> Arc<dyn Storage> {
        Arc::new(SimHandle(Arc::clone(storage)))
    }
}

impl Storage for SimHandle {
    fn open(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut sim = self.0.lock();
        if !sim.parent_exists(path) {
            return Err(not_found(path));
        }
        let ino = match sim.names.get(path) {
            Some(&ino) => ino,
            None => {
                sim.next_inode += 1;
                let ino = sim.next_inode;
                let inode = Inode {
                    data: Vec::new(),
                    durable: Vec::new(),
                    pending: Vec::new(),
                    modified: SystemTime::now(),
                    open_handles: 0,
                };
                sim.inodes.insert(ino, inode);
                sim.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        let generation = sim.generation;
        let inode = sim.inode(ino)?;
        inode.open_handles += 1;
        drop(sim);
        let file = SimFile { storage: Arc::clone(&self.0), ino, generation };
        if truncate {
            file.change(Change::SetLen(0))?;
        }
        Ok(Arc::new(file))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let sim = self.0.lock();
        let ino = sim.names.get(path).ok_or_else(|| not_found(path))?;
        sim.inodes.get(ino).map(|inode| inode.data.clone()).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.0.lock();
        if sim.dirs.contains(from) {
            // Directories move durably at once, with everything in them.
            let moved = |names: &BTreeMap<PathBuf, u64>| -> BTreeMap<PathBuf, u64> {
                names
                    .iter()
                    .map(|(path, &ino)| match path.strip_prefix(from) {
                        Ok(rest) => (to.join(rest), ino),
                        Err(_) => (path.clone(), ino),
                    })
                    .collect()
            };
            sim.names = moved(&sim.names);
            sim.durable_names = moved(&sim.durable_names);
            let dirs: BTreeSet<PathBuf> = sim
                .dirs
                .iter()
                .map(|d| d.strip_prefix(from).map_or_else(|_| d.clone(), |rest| to.join(rest)))
                .collect();
            sim.dirs = dirs;
            return Ok(());
        }
        if !sim.parent_exists(to) {
            return Err(not_found(to));
        }
        let ino = sim.names.remove(from).ok_or_else(|| not_found(from))?;
        sim.names.insert(to.to_path_buf(), ino);
        sim.collect();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.0.lock();
        sim.names.remove(path).ok_or_else(|| not_found(path))?;
        sim.collect();
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.0.lock();
        for dir in path.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            sim.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.0.lock();
        if !sim.dirs.contains(path) {
            return Err(not_found(path));
        }
        sim.dirs.retain(|d| !d.starts_with(path));
        sim.names.retain(|p, _| !p.starts_with(path));
        sim.durable_names.retain(|p, _| !p.starts_with(path));
        sim.collect();
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let sim = self.0.lock();
        if !sim.dirs.contains(path) {
            return Err(not_found(path));
        }
        let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let files =
            sim.names.keys().filter(|p| p.parent() == Some(path)).filter_map(|p| name_of(p)).map(|n| (n, false));
        let dirs = sim.dirs.iter().filter(|d| d.parent() == Some(path)).filter_map(|d| name_of(d)).map(|n| (n, true));
        Ok(files.chain(dirs).collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.0.lock();
        if !sim.dirs.contains(path) {
            return Err(not_found(path));
        }
        sim.syncs += 1;
        if Sim::take_fault(&mut sim.sync_fault).is_some() {
            return Err(eio("directory fsync"));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(path);
        let live: Vec<(PathBuf, u64)> =
            sim.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, &i)| (p.clone(), i)).collect();
        sim.durable_names.retain(|p, _| !in_dir(p));
        sim.durable_names.extend(live);
        sim.collect();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let sim = self.0.lock();
        sim.names.contains_key(path) || sim.dirs.contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<SimStorage>, Arc<dyn Storage>, PathBuf) {
        let sim = SimStorage::new();
        let storage = SimHandle::shared(&sim);
        let dir = PathBuf::from("/data");
        storage.create_dir_all(&dir).unwrap();
        (sim, storage, dir)
    }

    #[test]
    fn power_loss_keeps_only_synced_data_and_names() {
        let (sim, storage, dir) = setup();
        let a = dir.join("a");
        let file = storage.open(&a, false).unwrap();
        file.write_all_at(b"hello", 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(b" world", 5).unwrap();
        // The name is not durable yet: the file goes with the power.
        sim.power_loss(PowerLoss::DropUnsynced);
        assert!(!storage.exists(&a));
        assert!(file.size().is_err(), "a handle from before the power loss is dead");

        let file = storage.open(&a, false).unwrap();
        file.write_all_at(b"hello", 0).unwrap();
        file.sync_data().unwrap();
        storage.sync_dir(&dir).unwrap();
        file.write_all_at(b" world", 5).unwrap();
        storage.rename(&a, &dir.join("b")).unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(storage.read(&a).unwrap(), b"hello", "the rename was not synced, nor the write");
        assert!(!storage.exists(&dir.join("b")));
    }

    #[test]
    fn a_failed_fsync_loses_the_pending_writes_for_good() {
        let (sim, storage, dir) = setup();
        let a = dir.join("a");
        let file = storage.open(&a, false).unwrap();
        storage.sync_dir(&dir).unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        sim.fail_sync(0);
        assert!(file.sync_data().is_err());
        assert_eq!(storage.read(&a).unwrap(), b"abc", "still readable");
        file.sync_data().unwrap();
        sim.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(storage.read(&a).unwrap(), b"", "the later fsync did not save them");
    }

    #[test]
    fn writes_fail_and_tear_as_armed() {
        let (sim, storage, dir) = setup();
        let file = storage.open(&dir.join("a"), false).unwrap();
        sim.fail_write(1, 2);
        file.write_all_at(b"xx", 0).unwrap();
        assert!(file.write_all_at(b"yyyy", 2).is_err());
        assert_eq!(storage.read(&dir.join("a")).unwrap(), b"xxyy");
        file.write_all_at(b"z", 4).unwrap();
        assert_eq!(sim.writes(), 3);
    }

    #[test]
    fn capacity_gives_enospc_after_writing_what_fits() {
        let (sim, storage, dir) = setup();
        sim.set_capacity(Some(10));
        let file = storage.open(&dir.join("a"), false).unwrap();
        file.write_all_at(b"12345678", 0).unwrap();
        let error = file.write_all_at(b"abcd", 8).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        assert_eq!(sim.used_bytes(), 10);
        // Overwriting in place needs no space; removing a file frees its bytes.
        file.write_all_at(b"AB", 0).unwrap();
        drop(file);
        storage.remove_file(&dir.join("a")).unwrap();
        assert_eq!(sim.used_bytes(), 0);
    }

    #[test]
    fn torn_power_loss_keeps_a_prefix_of_the_changes() {
        for seed in 0..50 {
            let (sim, storage, dir) = setup();
            let a = dir.join("a");
            let file = storage.open(&a, false).unwrap();
            storage.sync_dir(&dir).unwrap();
            file.write_all_at(b"aaaa", 0).unwrap();
            file.write_all_at(b"bbbb", 4).unwrap();
            sim.power_loss(PowerLoss::Torn(seed));
            let data = storage.read(&a).unwrap();
            assert!(b"aaaabbbb".starts_with(&data), "seed {seed}: {data:?}");
        }
    }
}
