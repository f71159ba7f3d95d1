"""A three-node Keel cluster with real clients: confluent-kafka and kafka-python see every
broker, create topics through any broker (kafka-python sends them to the controller Metadata
names), produce to and consume from the leaders spread across the brokers, run a consumer
group whose coordinator may live on any broker, and keep creating topics after the active
controller is killed with -9.

One cluster serves the whole module (its nodes run in parallel); each test uses its own topics.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KafkaPythonNewTopic

from keel_helpers import Cluster, admin, keel_bin, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), 3).start()
    yield c
    c.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def placement(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int]]]:
    md = admin(bootstrap).list_topics(topic, timeout=10)
    return {p.id: (p.leader, list(p.replicas)) for p in md.topics[topic].partitions.values()}


def test_every_broker_shows_the_whole_cluster(cluster):
    controllers = set()
    for node in cluster.nodes:
        md = admin(node.bootstrap).list_topics(timeout=10)
        assert sorted(md.brokers) == [1, 2, 3], f"brokers seen through node {node.node_id}"
        controllers.add(md.controller_id)
    assert len(controllers) == 1 and controllers <= {1, 2, 3}, controllers

    info = subprocess.run(
        [str(keel_bin()), "cluster", "info", "--format", "json", "-b", cluster.node(2).bootstrap],
        capture_output=True, text=True, timeout=30,
    )
    assert info.returncode == 0, info.stderr
    info = json.loads(info.stdout)
    assert [(n["node_id"], n["state"]) for n in info["nodes"]] == [(1, "unfenced"), (2, "unfenced"), (3, "unfenced")]
    assert [v["node_id"] for v in info["quorum"]["voters"]] == [1, 2, 3]
    assert info["quorum"]["leader_id"] == controllers.pop()


def test_replicas_spread_and_records_round_trip_through_every_leader(cluster):
    topic = unique("spread")
    a = admin(cluster.node(3).bootstrap)
    a.create_topics([NewTopic(topic, 6, 3)], operation_timeout=30)[topic].result(timeout=30)
    placed = wait_until("the topic in metadata", lambda: placement(cluster.node(1).bootstrap, topic) or None)
    assert sorted(placed) == list(range(6))
    for partition, (leader, replicas) in placed.items():
        assert sorted(replicas) == [1, 2, 3], partition
        assert replicas[0] == leader
    assert sorted(leader for leader, _ in placed.values()) == [1, 1, 2, 2, 3, 3], "leaders balanced"

    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(300):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 6)
    assert producer.flush(30) == 0

    # kafka-python in a consumer group: its coordinator is the leader of the group's
    # __consumer_offsets partition, on whichever broker that is.
    consumer = KafkaConsumer(
        topic, bootstrap_servers=cluster.bootstrap, group_id=unique("group"), auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=20000,
    )
    seen = []
    try:
        for message in consumer:
            seen.append(message.value.decode())
            if len(seen) == 300:
                break
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(seen) == sorted(f"v{i}" for i in range(300))


def test_kafka_python_admin_creates_through_the_controller(cluster):
    topic = unique("kp-admin")
    client = KafkaAdminClient(bootstrap_servers=cluster.node(1).bootstrap, request_timeout_ms=30000)
    try:
        client.create_topics([KafkaPythonNewTopic(topic, 3, 2)])
    finally:
        client.close()
    placed = wait_until("the topic in metadata", lambda: placement(cluster.node(2).bootstrap, topic) or None)
    assert all(len(set(replicas)) == 2 for _, replicas in placed.values())


def test_metadata_changes_go_on_after_the_controller_is_killed(cluster):
    controller = admin(cluster.node(1).bootstrap).list_topics(timeout=10).controller_id
    victim = cluster.node(controller)
    victim.kill9()
    survivor = next(n for n in cluster.nodes if n is not victim)
    topic = unique("after-kill")
    started = time.monotonic()

    client = admin(survivor.bootstrap)

    def created():
        # librdkafka sends admin requests to the controller it last saw in Metadata; a refresh
        # names the new one (Keel forwards from any broker, so any answer would do).
        client.list_topics(timeout=10)
        futures = client.create_topics([NewTopic(topic, 2, 2)], operation_timeout=2, request_timeout=3)
        try:
            futures[topic].result(timeout=5)
            return True
        except Exception as error:  # retried until the new controller decides
            if "already exists" in str(error).lower():
                return True
            return False

    wait_until("a topic created after the controller was killed", created, timeout=30, interval=0.2)
    elapsed = time.monotonic() - started
    print(f"controller failover after kill -9: CreateTopics succeeded after {elapsed:.2f} s")
    new_controller = admin(survivor.bootstrap).list_topics(timeout=10).controller_id
    assert new_controller != controller

    victim.restart()
    md = admin(victim.bootstrap).list_topics(timeout=10)
    assert topic in md.topics, "the restarted node caught up with the metadata log"
    assert sorted(md.brokers) == [1, 2, 3]

    # confluent-kafka consumer reads what a producer wrote after the failover.
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    producer.produce(topic, value=b"after", partition=0)
    assert producer.flush(30) == 0
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        got = wait_until("the record written after failover", lambda: c.poll(1.0), timeout=30)
        assert got.error() is None and got.value() == b"after"
    finally:
        c.close()
