//! A metadata quorum of three controllers in one process, over the real transport on loopback
//! ports: election, replication, failover, rejoining, a lost majority, and hostile frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_cluster::{MetadataError, MetadataImage, MetadataRecord, MetadataStore, PartitionState, StoreOptions, Voters};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn topic(name: &str) -> Vec<MetadataRecord> {
    let topic_id = Uuid::new_v4();
    let state =
        PartitionState { replicas: vec![1, 2, 3], isr: vec![1, 2, 3], leader: 1, leader_epoch: 0, partition_epoch: 0 };
    vec![
        MetadataRecord::Topic { name: name.to_string(), topic_id },
        MetadataRecord::Partition { topic_id, partition: 0, state },
    ]
}

struct Cluster {
    options: StoreOptions,
    voters: Voters,
    dirs: BTreeMap<i32, PathBuf>,
    nodes: BTreeMap<i32, MetadataStore>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start(count: i32) -> Cluster {
        Cluster::start_with(count, StoreOptions::default()).await
    }

    async fn start_with(count: i32, options: StoreOptions) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut voters = Voters::new();
        for id in 1..=count {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            voters.insert(id, listener.local_addr().expect("addr").to_string());
            listeners.insert(id, listener);
        }
        let dirs: BTreeMap<i32, PathBuf> = (1..=count).map(|id| (id, tmp.path().join(format!("node-{id}")))).collect();
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            let store =
                MetadataStore::open_quorum(&dirs[&id], id, &voters, listener, options, None).await.expect("open");
            nodes.insert(id, store);
        }
        Cluster { options, voters, dirs, nodes, _tmp: tmp }
    }

    /// The leader every running node agrees on.
    async fn leader(&self) -> i32 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut seen = Vec::new();
            for node in self.nodes.values() {
                seen.push(node.wait_for_leader(WAIT).await.expect("a leader"));
            }
            let leader = seen[0];
            if seen.iter().all(|&l| l == leader) && self.nodes.contains_key(&leader) {
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self, id: i32) {
        let node = self.nodes.remove(&id).expect("running");
        node.shutdown().await.expect("shutdown");
    }

    async fn restart(&mut self, id: i32) {
        let listener = TcpListener::bind(&self.voters[&id]).await.expect("bind the same port again");
        let store = MetadataStore::open_quorum(&self.dirs[&id], id, &self.voters, listener, self.options, None)
            .await
            .expect("reopen");
        self.nodes.insert(id, store);
    }

    async fn propose(&self, records: Vec<MetadataRecord>) -> u64 {
        let leader = self.leader().await;
        self.nodes[&leader].propose(records).await.expect("propose on the leader")
    }
}

async fn wait_for_image(store: &MetadataStore, what: &str, check: impl Fn(&MetadataImage) -> bool) {
    let mut images = store.subscribe();
    tokio::time::timeout(WAIT, async {
        loop {
            if check(&images.borrow_and_update()) {
                return;
            }
            images.changed().await.expect("store alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("node {} never saw {what}", store.node_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_elect_one_leader_and_replicate_to_all() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let index = cluster.propose(topic("orders")).await;
    for node in cluster.nodes.values() {
        wait_for_image(node, "orders", |image| image.topic("orders").is_some() && image.applied_index >= index).await;
    }
    // Only the leader decides: a follower refuses, naming the leader.
    let follower = cluster.nodes.keys().copied().find(|&id| id != leader).expect("a follower");
    match cluster.nodes[&follower].propose(topic("elsewhere")).await {
        Err(MetadataError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
        other => panic!("a follower proposed: {other:?}"),
    }
    let quorum = cluster.nodes[&leader].quorum();
    assert_eq!(quorum.leader, Some(leader));
    assert_eq!(quorum.voters.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(quorum.voters.iter().all(|(_, matched)| matched.is_some_and(|m| m >= index)), "{quorum:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_survives_its_leader_and_a_restarted_node_catches_up() {
    let mut cluster = Cluster::start(3).await;
    let first = cluster.leader().await;
    cluster.propose(topic("before")).await;
    cluster.stop(first).await;
    let started = std::time::Instant::now();
    let second = cluster.leader().await;
    assert_ne!(second, first);
    // The survivors saw the first leader and then the second.
    for node in cluster.nodes.values() {
        assert!(node.leader_changes() >= 2, "node {} saw {} leader changes", node.node_id(), node.leader_changes());
    }
    let index = cluster.propose(topic("after")).await;
    eprintln!("new leader {second} after {:?}", started.elapsed());
    // The old leader comes back as a follower and catches up.
    cluster.restart(first).await;
    wait_for_image(&cluster.nodes[&first], "after", |image| {
        image.topic("after").is_some() && image.applied_index >= index
    })
    .await;
    assert!(cluster.nodes[&first].image().topic("before").is_some());

    // With two of three down, nothing commits; once one returns, the waiting proposal does.
    let survivor = cluster.leader().await;
    let others: Vec<i32> = cluster.nodes.keys().copied().filter(|&id| id != survivor).collect();
    for id in &others {
        cluster.stop(*id).await;
    }
    let lonely = cluster.nodes[&survivor].clone();
    let proposal = tokio::spawn(async move { lonely.propose(topic("majority")).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!proposal.is_finished(), "a proposal committed without a majority");
    cluster.restart(others[0]).await;
    let committed = tokio::time::timeout(WAIT, proposal).await.expect("commits once a majority is back").expect("task");
    match committed {
        Ok(_) => {}
        // The survivor may have lost leadership meanwhile; then the proposal was not made.
        Err(MetadataError::NotLeader { .. }) => {
            cluster.propose(topic("majority")).await;
        }
        Err(e) => panic!("{e}"),
    }
    let leader = cluster.leader().await;
    wait_for_image(&cluster.nodes[&leader], "majority", |image| image.topic("majority").is_some()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_on_the_controller_port_close_only_their_connection() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    for (id, addr) in &cluster.voters {
        for frame in [
            vec![0xff, 0xff, 0xff, 0xff],                        // a length past the limit
            [&5u32.to_be_bytes()[..], b"hello"].concat(),        // not JSON
            [&9u32.to_be_bytes()[..], b"{\"Vote\":1}"].concat(), // JSON, not a request
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),       // another protocol
        ] {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(&frame).await.expect("write");
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "node {id} answered a bad frame: {read:?}");
        }
    }
    let index = cluster.propose(topic("still-fine")).await;
    assert!(cluster.nodes[&leader].image().applied_index >= index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_voter_list_other_than_the_one_it_formed_with() {
    let mut cluster = Cluster::start(3).await;
    cluster.leader().await;
    cluster.stop(3).await;
    let dir: &Path = &cluster.dirs[&3];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut other = cluster.voters.clone();
    other.insert(4, "127.0.0.1:1".to_string());
    match MetadataStore::open_quorum(dir, 3, &other, listener, StoreOptions::default(), None).await {
        Err(e @ MetadataError::VotersChanged { .. }) => assert!(e.to_string().contains("controller.quorum.voters")),
        other => panic!("opened with another voter list: {:?}", other.map(|_| ())),
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    match MetadataStore::open_quorum(dir, 5, &cluster.voters, listener, StoreOptions::default(), None).await {
        Err(MetadataError::NotVoter { node_id: 5, .. }) => {}
        other => panic!("a node outside the voters opened: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_purged_log_catches_up_from_a_snapshot() {
    let options = StoreOptions { snapshot_after_entries: 20, entries_kept_after_snapshot: 5 };
    let mut cluster = Cluster::start_with(3, options).await;
    let leader = cluster.leader().await;
    let behind = cluster.nodes.keys().copied().find(|&id| id != leader).expect("a follower");
    cluster.stop(behind).await;
    let mut index = 0;
    for i in 0..150 {
        index = cluster.propose(topic(&format!("t{i}"))).await;
    }
    // The entries it missed are gone from the others' logs: it gets the image as a snapshot.
    cluster.restart(behind).await;
    wait_for_image(&cluster.nodes[&behind], "every topic", |image| {
        image.applied_index >= index && (0..150).all(|i| image.topic(&format!("t{i}")).is_some())
    })
    .await;
    let leader = cluster.leader().await;
    assert_eq!(cluster.nodes[&behind].image().topics, cluster.nodes[&leader].image().topics);
}
