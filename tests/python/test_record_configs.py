"""Topic configs that act on produced records, seen through real clients:
`message.timestamp.type=LogAppendTime`, broker-side recompression by `compression.type`,
`message.timestamp.before.max.ms` / `after.max.ms` (INVALID_TIMESTAMP), `max.message.bytes`
(MESSAGE_TOO_LARGE) and keys on compacted topics (INVALID_RECORD).

The stored codec is read from the segment file itself: batch attributes bits 0-2.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
from kafka import KafkaConsumer, TopicPartition as KpTopicPartition

from keel_helpers import consume_partitions, create_topic

T = 30
CODEC_IDS = {"none": 0, "uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def now_ms() -> int:
    return int(time.time() * 1000)


def producer(bootstrap: str, **extra) -> Producer:
    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 5, "retries": 0}
    conf.update(extra)
    return Producer(conf)


def produce(p: Producer, topic: str, records: list[dict]) -> list[tuple]:
    """Produces `records` (kwargs of Producer.produce) and returns (error, timestamp) per record."""
    reports: list = [None] * len(records)

    def report(i):
        return lambda err, msg: reports.__setitem__(i, (err, msg.timestamp()))

    for i, record in enumerate(records):
        p.produce(topic, partition=0, on_delivery=report(i), **record)
    assert p.flush(T) == 0
    assert all(r is not None for r in reports)
    return reports


def stored_batches(data_dir: Path, topic: str) -> list[tuple[int, int, int]]:
    """(base offset, attributes, records count) of every batch in the partition's segments."""
    out = []
    for segment in sorted((data_dir / f"{topic}-0").glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base_offset, batch_length = struct.unpack_from(">qi", data, pos)
            attributes, = struct.unpack_from(">h", data, pos + 21)
            count, = struct.unpack_from(">i", data, pos + 57)
            out.append((base_offset, attributes, count))
            pos += 12 + batch_length
    return out


def test_log_append_time_stamps_records_with_the_broker_clock(shared_broker, topic_name):
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"message.timestamp.type": "LogAppendTime"})
    p = producer(shared_broker.bootstrap)
    before = now_ms()
    reports = produce(p, topic_name, [{"value": b"a", "timestamp": 1_000}, {"value": b"b", "timestamp": 2_000}])
    after = now_ms()
    for err, (ts_type, ts) in reports:
        assert err is None
        # The produce response's log_append_time_ms reaches the delivery report.
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (ts_type, ts, before, after)
    msgs = consume_partitions(shared_broker.bootstrap, topic_name, [0], timeout=T)
    assert [m.value() for m in msgs] == [b"a", b"b"]
    for m in msgs:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (ts_type, ts)
    assert all(attributes & 0x08 for _, attributes, _ in stored_batches(shared_broker.data_dir, topic_name))

    # A CreateTime topic keeps the producer's timestamps.
    create_topic(shared_broker.bootstrap, topic_name + "-ct", 1)
    reports = produce(p, topic_name + "-ct", [{"value": b"c", "timestamp": 3_000}])
    assert reports[0][0] is None
    msgs = consume_partitions(shared_broker.bootstrap, topic_name + "-ct", [0], timeout=T)
    assert [m.timestamp() for m in msgs] == [(TIMESTAMP_CREATE_TIME, 3_000)]


RECORDS = [
    {"key": b"k1", "value": b"first value " * 20, "headers": [("h", b"1"), ("h", b"2"), ("n", None)], "timestamp": 1_700_000_000_000},
    {"key": None, "value": b"second", "headers": [], "timestamp": 1_700_000_000_005},
    {"key": b"k3", "value": None, "headers": [("only", b"x" * 100)], "timestamp": 1_700_000_000_001},
]


def as_tuples(msgs):
    return [(m.key(), m.value(), m.headers() or [], m.timestamp()) for m in msgs]


@pytest.mark.parametrize("producer_codec,topic_codec", [
    ("gzip", "zstd"), ("none", "zstd"), ("zstd", "gzip"), ("lz4", "snappy"), ("snappy", "lz4"),
    ("gzip", "uncompressed"), ("zstd", "zstd"), ("none", "producer"),
])
def test_broker_recompresses_to_the_topic_codec(shared_broker, topic_name, producer_codec, topic_codec):
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"compression.type": topic_codec})
    p = producer(shared_broker.bootstrap, **{"compression.type": producer_codec, "linger.ms": 50})
    reports = produce(p, topic_name, RECORDS)
    assert [err for err, _ in reports] == [None] * len(RECORDS)

    expected_codec = CODEC_IDS[producer_codec if topic_codec == "producer" else topic_codec]
    batches = stored_batches(shared_broker.data_dir, topic_name)
    assert sum(count for _, _, count in batches) == len(RECORDS)
    assert [attributes & 0x07 for _, attributes, _ in batches] == [expected_codec] * len(batches)

    msgs = consume_partitions(shared_broker.bootstrap, topic_name, [0], timeout=T)
    assert as_tuples(msgs) == [
        (r["key"], r["value"], r["headers"], (TIMESTAMP_CREATE_TIME, r["timestamp"])) for r in RECORDS
    ]
    assert [m.offset() for m in msgs] == [0, 1, 2]


@pytest.mark.parametrize("topic_codec", ["snappy", "lz4", "zstd", "gzip"])
def test_kafka_python_reads_recompressed_batches(shared_broker, topic_name, topic_codec):
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"compression.type": topic_codec})
    p = producer(shared_broker.bootstrap, **{"compression.type": "none", "linger.ms": 50})
    produce(p, topic_name, [{"key": b"k%d" % i, "value": b"v%d" % i} for i in range(50)])
    c = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=10_000, api_version_auto_timeout_ms=10_000)
    try:
        tp = KpTopicPartition(topic_name, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + T
        while len(got) < 50 and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=1000).values():
                got.extend((r.key, r.value) for r in records)
        assert got == [(b"k%d" % i, b"v%d" % i) for i in range(50)]
    finally:
        c.close()


def test_timestamps_out_of_bounds_are_invalid_timestamp(shared_broker, topic_name):
    create_topic(shared_broker.bootstrap, topic_name, 1, config={
        "message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "60000"})
    p = producer(shared_broker.bootstrap)
    now = now_ms()
    cases = [("now", now, None), ("ten minutes ago", now - 600_000, KafkaError.INVALID_TIMESTAMP),
             ("in ten minutes", now + 600_000, KafkaError.INVALID_TIMESTAMP), ("half a minute ago", now - 30_000, None)]
    for name, timestamp, expected in cases:
        [(err, _)] = produce(p, topic_name, [{"value": name.encode(), "timestamp": timestamp}])
        assert (err.code() if err else None) == expected, (name, err)
    msgs = consume_partitions(shared_broker.bootstrap, topic_name, [0], timeout=T)
    assert [m.value() for m in msgs] == [b"now", b"half a minute ago"]


def test_default_timestamp_bounds_follow_kafka(shared_broker, topic_name):
    # Kafka 4 defaults: no lower bound, at most one hour ahead.
    create_topic(shared_broker.bootstrap, topic_name, 1)
    p = producer(shared_broker.bootstrap)
    now = now_ms()
    reports = produce(p, topic_name, [{"value": b"old", "timestamp": 1_000}])
    assert reports[0][0] is None
    [(err, _)] = produce(p, topic_name, [{"value": b"future", "timestamp": now + 2 * 3_600_000}])
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP


def test_broker_default_timestamp_bound(broker_factory, topic_name):
    broker = broker_factory({"log.message.timestamp.before.max.ms": "60000"})
    create_topic(broker.bootstrap, topic_name, 1)
    p = producer(broker.bootstrap)
    [(err, _)] = produce(p, topic_name, [{"value": b"old", "timestamp": now_ms() - 600_000}])
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP


def test_max_message_bytes_refuses_larger_batches(shared_broker, topic_name):
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"max.message.bytes": "2000"})
    p = producer(shared_broker.bootstrap, **{"compression.type": "none"})
    [(err, _)] = produce(p, topic_name, [{"value": b"x" * 5000}])
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE
    [(err, _)] = produce(p, topic_name, [{"value": b"x" * 500}])
    assert err is None
    msgs = consume_partitions(shared_broker.bootstrap, topic_name, [0], timeout=T)
    assert [len(m.value()) for m in msgs] == [500]


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_compacted_topics_need_keys(shared_broker, topic_name, policy):
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"cleanup.policy": policy})
    p = producer(shared_broker.bootstrap)
    [(err, _)] = produce(p, topic_name, [{"key": None, "value": b"no key"}])
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    reports = produce(p, topic_name, [{"key": b"k", "value": b"keyed"}, {"key": b"k", "value": None}])
    assert [err for err, _ in reports] == [None, None]
    msgs = consume_partitions(shared_broker.bootstrap, topic_name, [0], timeout=T)
    assert [(m.key(), m.value()) for m in msgs] == [(b"k", b"keyed"), (b"k", None)]
