//! The metadata store end to end: proposals reach the image, survive reopen and crashes, and
//! concurrent proposers get one total order.

mod common;

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::Path;

use keel_cluster::raft::log_store::LOG_FILE;
use keel_cluster::{
    BrokerRegistration, ConfigResource, MetadataError, MetadataImage, MetadataRecord, MetadataStore, PartitionState,
    StoreOptions,
};
use uuid::Uuid;

const NODE: i32 = 1;

fn topic(name: &str) -> Vec<MetadataRecord> {
    let topic_id = Uuid::new_v4();
    let state =
        PartitionState { replicas: vec![NODE], isr: vec![NODE], leader: NODE, leader_epoch: 0, partition_epoch: 0 };
    vec![
        MetadataRecord::Topic { name: name.to_string(), topic_id },
        MetadataRecord::Partition { topic_id, partition: 0, state: state.clone() },
        MetadataRecord::Partition { topic_id, partition: 1, state },
    ]
}

fn topic_names(image: &MetadataImage) -> BTreeSet<String> {
    image.topics.keys().cloned().collect()
}

/// The image without the applied index, which moves when a reopened node commits a new term's
/// blank entry.
fn content(image: &MetadataImage) -> MetadataImage {
    MetadataImage { applied_index: 0, ..image.clone() }
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(LOG_FILE)).expect("log file exists").len()
}

#[tokio::test]
async fn proposals_reach_the_image_in_index_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    let opened_at = store.image().applied_index;
    assert!(store.image().topics.is_empty());
    let mut images = store.subscribe();

    let first = store.propose(topic("orders")).await.expect("propose orders");
    assert!(first > opened_at, "entry index {first} after the opening index {opened_at}");
    let image = store.image();
    assert_eq!(image.applied_index, first);
    let orders = image.topic("orders").expect("orders applied");
    assert_eq!(orders.partitions.len(), 2);
    assert!(images.has_changed().expect("sender alive"));
    assert_eq!(images.borrow_and_update().applied_index, first);

    let broker =
        BrokerRegistration { node_id: NODE, host: "localhost".into(), port: 9092, rack: None, ..Default::default() };
    let second = store
        .propose(vec![
            MetadataRecord::RegisterBroker(broker.clone()),
            MetadataRecord::Config {
                resource: ConfigResource::Topic("orders".into()),
                name: "retention.ms".into(),
                value: Some("60000".into()),
            },
        ])
        .await
        .expect("propose broker and config");
    assert_eq!(second, first + 1);
    let image = store.image();
    assert_eq!(image.applied_index, second);
    // The broker epoch is the registration's log index.
    assert_eq!(image.brokers.get(&NODE), Some(&BrokerRegistration { epoch: second as i64, ..broker }));
    assert_eq!(image.topic("orders").and_then(|t| t.configs.get("retention.ms")).map(String::as_str), Some("60000"));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn reopen_after_shutdown_replays_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    let mut last = 0;
    for name in ["a", "b", "c"] {
        last = store.propose(topic(name)).await.expect("propose");
    }
    let id_b = store.image().topic("b").expect("b").topic_id;
    store.propose(vec![MetadataRecord::RemoveTopic { topic_id: id_b }]).await.expect("remove b");
    let before = store.image();
    store.shutdown().await.expect("shutdown");
    assert!(matches!(store.propose(topic("late")).await, Err(MetadataError::ShutDown)));
    drop(store);

    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen");
    let after = store.image();
    assert_eq!(content(&after), content(&before));
    assert!(after.applied_index >= before.applied_index);
    assert_eq!(topic_names(&after), BTreeSet::from(["a".to_string(), "c".to_string()]));
    let next = store.propose(topic("d")).await.expect("propose after reopen");
    assert!(next > last);
    store.shutdown().await.expect("shutdown");
}

fn crash_after_proposing(dir: &Path, names: &[&str]) -> MetadataImage {
    let proposals = names.iter().map(|name| topic(name)).collect();
    common::crash_after_proposing(dir, NODE, StoreOptions::default(), proposals)
}

#[tokio::test]
async fn crash_without_shutdown_keeps_acknowledged_proposals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = crash_after_proposing(dir.path(), &["x", "y"]);
    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen after crash");
    assert_eq!(content(&store.image()), content(&before));
    store.shutdown().await.expect("shutdown");

    // A second crash on top of the recovered log.
    let before = crash_after_proposing(dir.path(), &["z"]);
    assert_eq!(topic_names(&before), BTreeSet::from(["x".into(), "y".into(), "z".into()]));
    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen after second crash");
    assert_eq!(content(&store.image()), content(&before));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn torn_unacknowledged_write_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    store.propose(topic("kept")).await.expect("propose");
    let before = store.image();
    store.shutdown().await.expect("shutdown");
    drop(store);

    // What a crash in the middle of an append leaves: the start of a frame (a length, a CRC and
    // part of the payload), then nothing.
    let len = log_len(dir.path());
    {
        use std::io::Write;
        let mut file = OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).expect("open log");
        file.write_all(&[0, 0, 0, 200, 0xde, 0xad, 0xbe, 0xef, b'{', b'"']).expect("write torn frame");
    }

    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen with a torn tail");
    assert_eq!(content(&store.image()), content(&before));
    // The torn bytes are gone; new entries follow the last good frame.
    store.propose(topic("after")).await.expect("propose after recovery");
    store.shutdown().await.expect("shutdown");
    drop(store);
    assert!(log_len(dir.path()) > len);

    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen again");
    assert_eq!(topic_names(&store.image()), BTreeSet::from(["kept".into(), "after".into()]));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn log_cut_mid_entry_reopens_with_the_surviving_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    store.propose(topic("first")).await.expect("propose first");
    let after_first = log_len(dir.path());
    store.propose(topic("second")).await.expect("propose second");
    let after_second = log_len(dir.path());
    store.shutdown().await.expect("shutdown");
    drop(store);

    // Cut the file in the middle of the last entry (a disk that lost an fsynced write, or a
    // file cut by hand): the committed index now points past the log.
    let file = OpenOptions::new().write(true).open(dir.path().join(LOG_FILE)).expect("open log");
    file.set_len(after_first + (after_second - after_first) / 2).expect("truncate");
    drop(file);

    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen with a cut log");
    assert_eq!(topic_names(&store.image()), BTreeSet::from(["first".into()]));
    let index = store.propose(topic("third")).await.expect("propose after recovery");
    assert_eq!(store.image().applied_index, index);
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen again");
    assert_eq!(topic_names(&store.image()), BTreeSet::from(["first".into(), "third".into()]));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_commit_in_one_order() {
    const TASKS: usize = 6;
    const PER_TASK: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            for i in 0..PER_TASK {
                let value = format!("{task}-{i}");
                let mut records = topic(&format!("t-{value}"));
                records.push(MetadataRecord::Config {
                    resource: ConfigResource::Broker(None),
                    name: "last.writer".into(),
                    value: Some(value.clone()),
                });
                let index = store.propose(records).await.expect("propose");
                // Applied before the proposer hears back.
                assert!(store.image().applied_index >= index);
                committed.push((index, value));
            }
            committed
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        let mine = task.await.expect("task");
        // One proposer's entries commit in the order it proposed them.
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
        committed.extend(mine);
    }
    committed.sort();
    let indexes: BTreeSet<u64> = committed.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes.len(), TASKS * PER_TASK, "every proposal has its own index");

    let image = store.image();
    assert_eq!(image.topics.len(), TASKS * PER_TASK);
    let (_, last_value) = committed.last().expect("some proposals");
    // The last entry in log order wins: the image applied them in index order.
    assert_eq!(image.broker_config(NODE, "last.writer"), Some((last_value.as_str(), false)));
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = MetadataStore::open(dir.path(), NODE).await.expect("reopen");
    assert_eq!(content(&store.image()), content(&image));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn invalid_or_foreign_node_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(MetadataStore::open(dir.path(), -1).await, Err(MetadataError::InvalidNodeId { node_id: -1 })));
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    store.shutdown().await.expect("shutdown");
    drop(store);
    match MetadataStore::open(dir.path(), NODE + 1).await {
        Err(MetadataError::NotVoter { node_id, voters }) => {
            assert_eq!(node_id, NODE + 1);
            assert_eq!(voters, vec![NODE as u64]);
        }
        other => panic!("expected NotVoter, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_proposal_is_refused_before_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    let huge = "x".repeat(keel_cluster::store::PROPOSAL_BYTES_MAX);
    let result = store
        .propose(vec![MetadataRecord::Config {
            resource: ConfigResource::Broker(None),
            name: "huge".into(),
            value: Some(huge),
        }])
        .await;
    assert!(matches!(result, Err(MetadataError::ProposalTooLarge { .. })));
    // Raft is unharmed.
    store.propose(topic("fine")).await.expect("propose after refusal");
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn corrupt_vote_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MetadataStore::open(dir.path(), NODE).await.expect("open");
    store.shutdown().await.expect("shutdown");
    drop(store);
    std::fs::write(dir.path().join("vote"), b"garbage").expect("damage vote");
    match MetadataStore::open(dir.path(), NODE).await {
        Err(e @ MetadataError::Corrupt { .. }) => {
            assert!(e.to_string().contains("vote"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
