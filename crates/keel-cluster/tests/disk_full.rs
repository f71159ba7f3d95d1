//! The metadata store on a full disk: a proposal waits instead of stopping raft, commits by itself
//! once space frees, survives a reopen, and a stalled write does not hold up shutdown.
//!
//! The store lives on a small tmpfs that the test mounts (root only, as in CI); without root or
//! tmpfs support the test says so and returns.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel_cluster::{MetadataRecord, MetadataStore, PartitionState};
use uuid::Uuid;

const NODE: i32 = 1;
/// Long enough for a commit on a healthy disk to be certain, short enough to keep the test quick.
const STALLED: Duration = Duration::from_millis(1500);
/// Bound on waits that succeed (the retry backoff tops out at one second).
const RESUMES_WITHIN: Duration = Duration::from_secs(20);

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().expect("tempdir");
        let mount_point = parent.path().join("tmpfs");
        fs::create_dir(&mount_point).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .output()
            .ok()?;
        if !mounted.status.success() {
            eprintln!("skipped: cannot mount a tmpfs (needs root): {}", String::from_utf8_lossy(&mounted.stderr));
            return None;
        }
        Some(Tmpfs { mount_point, _parent: parent })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.mount_point).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
        }
    }
}

/// Writes `path` until the file system refuses with ENOSPC.
fn fill(path: &Path) {
    let mut file = File::create(path).expect("create filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs failed: {e}"),
        }
    }
    // The last partial chunk may have taken the final pages; nothing more fits.
    let _ = file.sync_all();
}

/// A topic whose log entry is several pages long, so it cannot fit in the slack of the log
/// file's last page once the disk is full.
fn topic(name: &str) -> Vec<MetadataRecord> {
    let topic_id = Uuid::new_v4();
    let state =
        PartitionState { replicas: vec![NODE], isr: vec![NODE], leader: NODE, leader_epoch: 0, partition_epoch: 0 };
    let mut records = vec![MetadataRecord::Topic { name: name.to_string(), topic_id }];
    records.extend((0..64).map(|partition| MetadataRecord::Partition { topic_id, partition, state: state.clone() }));
    records
}

fn topic_names(store: &MetadataStore) -> BTreeSet<String> {
    store.image().topics.keys().cloned().collect()
}

type Proposal = tokio::task::JoinHandle<Result<u64, keel_cluster::MetadataError>>;

/// Opens the store in `dir`, commits topic `first`, fills the disk with `filler`, and proposes
/// topic `stalled`, which must still be waiting after [`STALLED`].
async fn stall_a_proposal(dir: &Path, filler: &Path, first: &str, stalled: &str) -> (MetadataStore, Proposal) {
    let store = MetadataStore::open(dir, NODE).await.expect("open");
    store.propose(topic(first)).await.expect("propose on a free disk");
    fill(filler);
    let proposal = tokio::spawn({
        let store = store.clone();
        let records = topic(stalled);
        async move { store.propose(records).await }
    });
    tokio::time::sleep(STALLED).await;
    assert!(!proposal.is_finished(), "a proposal on a full disk waits for space: {:?}", proposal.await);
    (store, proposal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_proposals_which_commit_once_space_frees() {
    let Some(tmpfs) = Tmpfs::mount("1m") else { return };
    let dir = tmpfs.mount_point.join("metadata");
    let filler = tmpfs.mount_point.join("filler");

    let (store, stalled) = stall_a_proposal(&dir, &filler, "before", "during").await;
    // Reads of the image go on meanwhile.
    assert_eq!(topic_names(&store), BTreeSet::from(["before".to_string()]));

    fs::remove_file(&filler).expect("free space");
    tokio::time::timeout(RESUMES_WITHIN, stalled)
        .await
        .expect("the stalled proposal commits once space frees")
        .expect("join")
        .expect("commit after the disk full");
    store.propose(topic("after")).await.expect("raft still runs: a new proposal commits");
    let expected: BTreeSet<String> = ["before", "during", "after"].map(String::from).into();
    assert_eq!(topic_names(&store), expected);
    store.shutdown().await.expect("shutdown");

    let reopened = MetadataStore::open(&dir, NODE).await.expect("reopen");
    assert_eq!(topic_names(&reopened), expected, "everything committed after the stall is durable");
    reopened.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_write_stalled_on_a_full_disk() {
    let Some(tmpfs) = Tmpfs::mount("1m") else { return };
    let dir = tmpfs.mount_point.join("metadata");
    let filler = tmpfs.mount_point.join("filler");

    let (store, stalled) = stall_a_proposal(&dir, &filler, "kept", "never-acknowledged").await;
    tokio::time::timeout(RESUMES_WITHIN, store.shutdown())
        .await
        .expect("shutdown does not wait for disk space")
        .expect("shutdown");
    let outcome = tokio::time::timeout(RESUMES_WITHIN, stalled).await.expect("the proposal ends").expect("join");
    assert!(outcome.is_err(), "an unacknowledged proposal fails at shutdown: {outcome:?}");

    fs::remove_file(&filler).expect("free space");
    let reopened = MetadataStore::open(&dir, NODE).await.expect("reopen after a stalled shutdown");
    assert!(topic_names(&reopened).contains("kept"));
    reopened.propose(topic("next")).await.expect("propose after reopen");
    reopened.shutdown().await.expect("shutdown");
}
