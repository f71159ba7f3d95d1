"""ListOffsets: earliest, latest and by-timestamp answers match what was written.

Partitions 0-2 each get 50 records written as 5 separate batches of 10, with explicit
timestamps: record at offset o of partition p has timestamp BASE + p*100_000 + o*1000.
Partition 3 stays empty. A timestamp lookup returns the first offset whose timestamp is
>= the target (also inside a batch), or "no offset" past the last record.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from keel_helpers import admin, consumer, create_topic

PARTITIONS = 4
FILLED = [0, 1, 2]
EMPTY = 3
PER_PARTITION = 50
BATCH = 10
BASE = int(time.time() * 1000) - 3_600_000


def ts(p: int, offset: int) -> int:
    return BASE + p * 100_000 + offset * 1000


@pytest.fixture(scope="module")
def written(shared_broker):
    """(bootstrap, topic) with the records described above."""
    topic = f"list-offsets-{int(time.time() * 1000)}"
    create_topic(shared_broker.bootstrap, topic, PARTITIONS)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 50, "enable.idempotence": False})
    errors = []
    for b in range(PER_PARTITION // BATCH):
        for part in FILLED:
            for j in range(BATCH):
                o = b * BATCH + j
                p.produce(topic, value=f"{part}-{o}".encode(), partition=part, timestamp=ts(part, o),
                          on_delivery=lambda err, msg: err and errors.append(err))
        assert p.flush(30) == 0
    assert not errors, errors
    return shared_broker.bootstrap, topic


def lookups(p: int):
    """(target timestamp, expected offset or None) pairs for partition p."""
    cases = [
        (0, 0),                                 # before everything
        (ts(p, 0), 0),                          # exactly the first record
        (ts(p, 7), 7),                          # exactly a record inside the first batch
        (ts(p, 7) - 500, 7),                    # between records 6 and 7
        (ts(p, 10), 10),                        # first record of the second batch
        (ts(p, 9) + 1, 10),                     # just after the last record of a batch
        (ts(p, 33) - 1, 33),
        (ts(p, PER_PARTITION - 1), PER_PARTITION - 1),
        (ts(p, PER_PARTITION - 1) + 1, None),   # after the last record
    ]
    return cases


def test_confluent_watermarks(written):
    bootstrap, topic = written
    c = consumer(bootstrap)
    try:
        for p in FILLED:
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) == (0, PER_PARTITION)
        assert c.get_watermark_offsets(TopicPartition(topic, EMPTY), timeout=10, cached=False) == (0, 0)
    finally:
        c.close()


def test_confluent_offsets_for_times(written):
    bootstrap, topic = written
    c = consumer(bootstrap)
    try:
        for p in FILLED:
            for target, expected in lookups(p):
                [got] = c.offsets_for_times([TopicPartition(topic, p, target)], timeout=10)
                assert got.error is None, got.error
                want = -1 if expected is None else expected   # librdkafka: -1 (OFFSET_END) = no such record
                assert got.offset == want, f"partition {p}, timestamp {target}: offset {got.offset}, want {want}"
        [got] = c.offsets_for_times([TopicPartition(topic, EMPTY, BASE)], timeout=10)
        assert got.offset == -1
    finally:
        c.close()


def test_admin_list_offsets(written):
    bootstrap, topic = written
    a = admin(bootstrap)

    def one(p, spec):
        tp = TopicPartition(topic, p)
        return a.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=15)

    for p in FILLED:
        assert one(p, OffsetSpec.earliest()).offset == 0
        assert one(p, OffsetSpec.latest()).offset == PER_PARTITION
        for target, expected in lookups(p):
            r = one(p, OffsetSpec.for_timestamp(target))
            if expected is None:
                assert r.offset == -1, f"partition {p}, timestamp {target}: offset {r.offset}, want -1"
            else:
                assert (r.offset, r.timestamp) == (expected, ts(p, expected)), f"partition {p}, timestamp {target}"
    assert one(EMPTY, OffsetSpec.earliest()).offset == 0
    assert one(EMPTY, OffsetSpec.latest()).offset == 0


def test_admin_list_offsets_max_timestamp(written):
    bootstrap, topic = written
    a = admin(bootstrap)
    for p in FILLED:
        tp = TopicPartition(topic, p)
        r = a.list_offsets({tp: OffsetSpec.max_timestamp()}, request_timeout=10)[tp].result(timeout=15)
        assert (r.offset, r.timestamp) == (PER_PARTITION - 1, ts(p, PER_PARTITION - 1))


def test_kafka_python_offsets(written):
    from kafka import KafkaConsumer, TopicPartition as KTP

    bootstrap, topic = written
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=30000)
    try:
        tps = [KTP(topic, p) for p in range(PARTITIONS)]
        assert c.beginning_offsets(tps) == {tp: 0 for tp in tps}
        assert c.end_offsets(tps) == {KTP(topic, p): (0 if p == EMPTY else PER_PARTITION) for p in range(PARTITIONS)}
        for p in FILLED:
            tp = KTP(topic, p)
            for target, expected in lookups(p):
                got = c.offsets_for_times({tp: target})[tp]
                if expected is None:
                    assert got is None, f"partition {p}, timestamp {target}: {got}, want None"
                else:
                    assert got is not None and (got.offset, got.timestamp) == (expected, ts(p, expected)), (
                        f"partition {p}, timestamp {target}: {got}, want offset {expected}")
        assert c.offsets_for_times({KTP(topic, EMPTY): BASE})[KTP(topic, EMPTY)] is None
    finally:
        c.close()
