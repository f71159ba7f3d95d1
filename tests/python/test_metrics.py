"""Prometheus metrics and the JSON health summary on the HTTP port, checked after a known
workload: produced and fetched bytes and records per topic, log sizes and offsets per
partition, consumer group lag, per-API request counts, errors and latency histograms, connections
and fsync latency. The exposition is parsed with the Prometheus project's own OpenMetrics parser,
so a malformed line fails the test.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from keel_helpers import admin, consumer, create_topic

T = 30
RECORDS = 3000
PARTITIONS = 3


def scrape(broker) -> dict[tuple[str, tuple], float]:
    """Every sample, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(broker.http + "/metrics", timeout=T) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    assert key in samples, f"no sample {key}; have {sorted(k for k in samples if k[0] == name)[:20]}"
    return samples[key]


def total(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_metrics_after_a_known_workload(broker, topic_name):
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):
        p.produce(topic_name, key=str(i).encode(), value=b"x" * 100, partition=i % PARTITIONS)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(T) == 0

    # A group commits everything on partitions 1 and 2 and only 100 records of partition 0.
    group = f"{topic_name}-group"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    end0 = RECORDS // PARTITIONS
    c.commit(offsets=[TopicPartition(topic_name, 0, 100), TopicPartition(topic_name, 1, end0),
                      TopicPartition(topic_name, 2, end0)], asynchronous=False)
    c.close()

    # A plain consumer reads the whole topic once.
    reader = consumer(bootstrap)
    reader.assign([TopicPartition(topic_name, i, 0) for i in range(PARTITIONS)])
    seen = 0
    while seen < RECORDS:
        m = reader.poll(T)
        assert m is not None, f"read {seen} of {RECORDS}"
        assert m.error() is None, m.error()
        seen += 1
    # A request that fails: creating the topic again.
    a = admin(bootstrap)
    futures = a.create_topics([NewTopic(topic_name, num_partitions=1)])
    error = futures[topic_name].exception(T)
    assert error is not None and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, error

    s = scrape(broker)  # the reader's connections are still open
    assert value(s, "keel_connections_active") >= 1
    reader.close()

    assert value(s, "keel_produced_records_total", topic=topic_name) == RECORDS
    sizes = [value(s, "keel_log_size_bytes", topic=topic_name, partition=i) for i in range(PARTITIONS)]
    # The log holds exactly the batches producers sent (no recompression on this topic).
    assert value(s, "keel_produced_bytes_total", topic=topic_name) == sum(sizes)
    assert sum(sizes) > RECORDS * 100
    for i in range(PARTITIONS):
        assert value(s, "keel_log_end_offset", topic=topic_name, partition=i) == end0
        assert value(s, "keel_log_start_offset", topic=topic_name, partition=i) == 0
        assert value(s, "keel_log_segments", topic=topic_name, partition=i) == 1
    assert value(s, "keel_fetched_bytes_total", topic=topic_name) >= sum(sizes)
    assert value(s, "keel_fetched_records_total", topic=topic_name) >= RECORDS

    assert value(s, "keel_consumer_group_lag", group=group, topic=topic_name, partition=0) == end0 - 100
    assert value(s, "keel_consumer_group_lag", group=group, topic=topic_name, partition=1) == 0
    assert value(s, "keel_consumer_group_committed_offset", group=group, topic=topic_name, partition=0) == 100

    produces = value(s, "keel_requests_total", api="Produce")
    assert produces >= 1
    assert value(s, "keel_request_duration_seconds_count", api="Produce") == produces
    assert value(s, "keel_request_phase_duration_seconds_count", api="Produce", phase="wait") == produces
    assert value(s, "keel_request_duration_seconds_bucket", api="Produce", le="+Inf") == produces
    assert value(s, "keel_requests_total", api="Fetch") >= 1
    assert value(s, "keel_requests_total", api="OffsetCommit") >= 1
    assert value(s, "keel_request_errors_total", api="CreateTopics", error="TOPIC_ALREADY_EXISTS") >= 1
    assert total(s, "keel_request_errors_total", api="Produce") == 0

    # acks=all waits for fsync: every produce ran at least one flush round.
    assert value(s, "keel_log_flush_duration_seconds_count") >= 1
    assert value(s, "keel_log_flush_duration_seconds_bucket", le="+Inf") == value(s, "keel_log_flush_duration_seconds_count")
    assert value(s, "keel_partitions") >= PARTITIONS
    assert value(s, "keel_leader_partitions") == value(s, "keel_partitions")
    assert value(s, "keel_under_replicated_partitions") == 0
    assert value(s, "keel_offline_partitions") == 0
    assert value(s, "keel_isr_shrinks_total") == 0
    assert value(s, "keel_connections_total") >= 2

    # The one-node metadata quorum: this node leads, and the workload's topics were committed.
    assert value(s, "keel_metadata_quorum_leader") == 1
    assert value(s, "keel_metadata_quorum_epoch") >= 1
    assert value(s, "keel_metadata_leader_changes_total") == 1, "one election, at the start"
    assert value(s, "keel_metadata_commit_duration_seconds_count") >= 1, "the workload created topics"
    high_watermark = value(s, "keel_metadata_high_watermark")
    assert high_watermark >= 3 and value(s, "keel_metadata_log_end_offset") >= high_watermark
    create_topic(broker.bootstrap, topic_name + "-more", 1)
    assert value(scrape(broker), "keel_metadata_high_watermark") > high_watermark


def test_health_summary(shared_broker, topic_name):
    create_topic(shared_broker.bootstrap, topic_name, partitions=2)
    with urllib.request.urlopen(shared_broker.http + "/health", timeout=T) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        health = json.load(response)
    assert health["status"] == "healthy"
    assert health["healthy"] is True and health["ready"] is True
    assert health["metadata_quorum"]["leader"] == 1 and health["metadata_quorum"]["voters"] == [1]
    assert health["metadata_quorum"]["epoch"] >= 1
    assert health["nodes"] == 1
    assert health["partitions"] >= 2
    assert health["under_replicated_partitions"] == [] and health["offline_partitions"] == []
    assert health["node_id"] == 1 and health["cluster_id"]


def test_unknown_http_paths_are_404(shared_broker):
    try:
        urllib.request.urlopen(shared_broker.http + "/metrics/../../etc/passwd", timeout=T)
        raise AssertionError("expected an HTTP error")
    except urllib.error.HTTPError as e:
        assert e.code == 404
