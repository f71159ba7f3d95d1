"""The admin path through a second client family: kafka-python's KafkaAdminClient (pure Python,
its own protocol codec and its own broker-version inference from ApiVersions)."""

from __future__ import annotations

import time

import pytest
from kafka import errors as Errors
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

from keel_helpers import tiny_segment_bytes

SOURCE_TOPIC_CONFIG = 1
SOURCE_STATIC_BROKER_CONFIG = 4
SOURCE_DEFAULT_CONFIG = 5


@pytest.fixture
def kadmin(shared_broker):
    a = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=15000, client_id="keel-tests")
    yield a
    a.close()


def wait_until(cond, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def topic_configs(kadmin, topic: str) -> dict[str, tuple[str, int]]:
    [resp] = kadmin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [res] = resp.to_object()["resources"]
    assert res["error_code"] == 0, res
    return {e["config_names"]: (e["config_value"], e["config_source"]) for e in res["config_entries"]}


def test_create_list_describe_delete(kadmin, topic_name):
    resp = kadmin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=1,
                                          topic_configs={"retention.ms": "7200000"})], timeout_ms=15000)
    assert [tuple(t[:2]) for t in resp.topic_errors] == [(topic_name, 0)]
    wait_until(lambda: topic_name in kadmin.list_topics(), what="topic in list_topics")

    [desc] = kadmin.describe_topics([topic_name])
    assert desc["topic"] == topic_name and desc["error_code"] == 0
    assert sorted(p["partition"] for p in desc["partitions"]) == [0, 1, 2]
    for p in desc["partitions"]:
        assert (p["error_code"], p["leader"], p["replicas"], p["isr"]) == (0, 1, [1], [1])

    configs = topic_configs(kadmin, topic_name)
    assert configs["retention.ms"] == ("7200000", SOURCE_TOPIC_CONFIG)
    assert configs["cleanup.policy"] == ("delete", SOURCE_DEFAULT_CONFIG)
    if tiny_segment_bytes():
        # The tiny-segment switch sets log.segment.bytes, which the topic inherits.
        assert configs["segment.bytes"] == (str(tiny_segment_bytes()), SOURCE_STATIC_BROKER_CONFIG)
    else:
        assert configs["segment.bytes"] == ("1073741824", SOURCE_DEFAULT_CONFIG)

    kadmin.delete_topics([topic_name], timeout_ms=15000)
    wait_until(lambda: topic_name not in kadmin.list_topics(), what="topic gone from list_topics")


def test_create_existing_topic_raises(kadmin, topic_name):
    kadmin.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=15000)
    with pytest.raises(Errors.TopicAlreadyExistsError):
        kadmin.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=15000)


def test_create_partitions(kadmin, topic_name):
    kadmin.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=15000)
    kadmin.create_partitions({topic_name: NewPartitions(total_count=4)}, timeout_ms=15000)
    wait_until(lambda: len(kadmin.describe_topics([topic_name])[0]["partitions"]) == 4, what="4 partitions")
    with pytest.raises(Errors.InvalidPartitionsError):
        kadmin.create_partitions({topic_name: NewPartitions(total_count=2)}, timeout_ms=15000)


def test_describe_broker_configs(kadmin):
    [resp] = kadmin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    [res] = resp.to_object()["resources"]
    assert res["error_code"] == 0, res
    names = {e["config_names"] for e in res["config_entries"]}
    assert {"num.partitions", "auto.create.topics.enable", "message.max.bytes"} <= names


def test_describe_cluster(kadmin, shared_broker):
    c = kadmin.describe_cluster()
    assert [(b["node_id"], b["host"], b["port"]) for b in c["brokers"]] == [(1, "127.0.0.1", shared_broker.port)]
    assert c["controller_id"] == 1
    assert c["cluster_id"]


def test_describe_log_dirs_v0_is_refused_as_by_kafka_4(kadmin, topic_name):
    # kafka-python only speaks DescribeLogDirs v0, which Kafka 4.x (KIP-896) no longer offers;
    # the client must see that from ApiVersions instead of a broken answer. DescribeLogDirs
    # v1+ is checked over the wire by crates/keel/tests/admin_wire.rs.
    kadmin.create_topics([NewTopic(topic_name, 2, 1)], timeout_ms=15000)
    with pytest.raises(Errors.IncompatibleBrokerVersion):
        kadmin.describe_log_dirs()
