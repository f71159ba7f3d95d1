//! Metadata snapshots: the image is snapshotted every few entries, the log behind it is purged
//! and its file rewritten, and a restart loads the snapshot and replays only the short tail,
//! after a clean shutdown and after a crash.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use keel_cluster::raft::log_store::{LOG_FILE, LOG_HEADER_BYTES};
use keel_cluster::raft::state_machine::SNAPSHOT_FILE;
use keel_cluster::{MetadataImage, MetadataRecord, MetadataStore, PartitionState, StoreOptions};
use uuid::Uuid;

const NODE: i32 = 1;
const OPTIONS: StoreOptions = StoreOptions { snapshot_after_entries: 40, entries_kept_after_snapshot: 10 };
/// The most entries the log can hold with `OPTIONS`: a snapshot's worth plus what is kept
/// behind it, twice (the file is rewritten once half of it is purged), and a little slack for
/// a snapshot still being built.
const MOST_ENTRIES: usize = 2 * (40 + 10) + 20;

fn topic(name: &str) -> Vec<MetadataRecord> {
    let topic_id = Uuid::new_v4();
    let state =
        PartitionState { replicas: vec![NODE], isr: vec![NODE], leader: NODE, leader_epoch: 0, partition_epoch: 0 };
    vec![
        MetadataRecord::Topic { name: name.to_string(), topic_id },
        MetadataRecord::Partition { topic_id, partition: 0, state },
    ]
}

/// Frames in the log file: a u32 length, a u32 CRC and the payload each.
fn entries_in_log(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join(LOG_FILE)).expect("log file");
    let mut at = LOG_HEADER_BYTES as usize;
    let mut count = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 8 + len;
        count += 1;
    }
    count
}

fn topic_names(image: &MetadataImage) -> BTreeSet<String> {
    image.topics.keys().cloned().collect()
}

async fn wait_until_cut(dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while entries_in_log(dir) > MOST_ENTRIES {
        assert!(tokio::time::Instant::now() < deadline, "the log still holds {} entries", entries_in_log(dir));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_a_restart_replays_only_its_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open_with(dir.path(), NODE, OPTIONS).await.expect("open");
    let names: Vec<String> = (0..400).map(|i| format!("topic-{i}")).collect();
    let mut most = 0;
    for name in &names {
        store.propose(topic(name)).await.expect("propose");
        most = most.max(entries_in_log(dir.path()));
    }
    wait_until_cut(dir.path()).await;
    assert!(most <= MOST_ENTRIES + 40, "the log grew to {most} entries between snapshots");
    assert!(dir.path().join(SNAPSHOT_FILE).exists());
    let before = store.image();
    assert_eq!(topic_names(&before), names.iter().cloned().collect());
    store.shutdown().await.expect("shutdown");

    let store = MetadataStore::open_with(dir.path(), NODE, OPTIONS).await.expect("reopen");
    assert!(entries_in_log(dir.path()) <= MOST_ENTRIES, "a restart replays only the tail");
    assert_eq!(topic_names(&store.image()), topic_names(&before));
    assert_eq!(store.image().topics, before.topics);
    store.propose(topic("after-restart")).await.expect("propose after the restart");
    assert!(store.image().topic("after-restart").is_some());
    store.shutdown().await.expect("shutdown");
}

fn crash_after_proposing(dir: &Path, names: Vec<String>) -> MetadataImage {
    let proposals = names.iter().map(|name| topic(name)).collect();
    common::crash_after_proposing(dir, NODE, OPTIONS, proposals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_among_snapshots_and_rewrites_keeps_every_acknowledged_proposal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = BTreeSet::new();
    for round in 0..4 {
        let names: Vec<String> = (0..70).map(|i| format!("r{round}-{i}")).collect();
        expected.extend(names.iter().cloned());
        let crashed = crash_after_proposing(dir.path(), names);
        assert_eq!(topic_names(&crashed), expected);
        let store = MetadataStore::open_with(dir.path(), NODE, OPTIONS).await.expect("reopen after a crash");
        assert_eq!(topic_names(&store.image()), expected, "round {round}");
        store.shutdown().await.expect("shutdown");
    }
    assert!(entries_in_log(dir.path()) <= MOST_ENTRIES + 70);
}
