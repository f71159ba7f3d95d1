"""Retention: `retention.ms` / `retention.bytes` delete whole old segments while producers run,
the log start offset advances (ListOffsets earliest, checkpointed across restarts), consumers
below it reset per `auto.offset.reset`, and DeleteRecords and retention never move the log start
backwards. Segment files go through Kafka's `.deleted` names for `file.delete.delay.ms`.

The broker checks retention every 500 ms (`log.retention.check.interval.ms`); topics use tiny
segments so that a few hundred records make several of them. Every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, ConfigEntry, AlterConfigOpType

from keel_helpers import admin, consume_partitions, consumer, create_topic, wait_until

T = 30
BROKER_SETS = {"log.retention.check.interval.ms": "500"}
VALUE = b"v" * 1000


def producer(bootstrap: str) -> Producer:
    # Small batches, so that segments of a few KiB hold several batches.
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 5,
                     "batch.size": 4096, "acks": "all"})


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=T, cached=False)
    finally:
        c.close()


def partition_dir(broker, topic: str) -> Path:
    return broker.data_dir / f"{topic}-0"


def segments(broker, topic: str) -> list[tuple[int, int]]:
    """(base offset, size) of each `.log` segment file, oldest first."""
    files = sorted(partition_dir(broker, topic).glob("*.log"))
    return [(int(f.name[:20]), f.stat().st_size) for f in files]


def deleted_files(broker, topic: str) -> list[str]:
    return sorted(f.name for f in partition_dir(broker, topic).glob("*.deleted"))


def produce_values(p: Producer, topic: str, start: int, count: int, **kwargs) -> None:
    errors = []
    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, value=str(i).encode() + b":" + VALUE, partition=0,
                          on_delivery=lambda err, _m: err and errors.append(err), **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(T) == 0
    assert errors == []


def index_of(message) -> int:
    return int(message.value().split(b":", 1)[0])


def test_retention_bytes_deletes_old_segments_while_a_producer_runs(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    retention_bytes = 40_000
    create_topic(broker.bootstrap, topic_name, 1, config={
        "segment.bytes": "10000", "retention.bytes": str(retention_bytes), "file.delete.delay.ms": "3000"})
    p = producer(broker.bootstrap)
    lows = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            lows.append(watermarks(broker.bootstrap, topic_name)[0])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # 400 records of ~1 KB in bursts over a few seconds, so retention runs mid-way.
        for burst in range(8):
            produce_values(p, topic_name, burst * 50, 50)
            time.sleep(0.3)
    finally:
        stop.set()
        watcher.join(T)
    assert lows == sorted(lows), f"the log start went backwards: {lows}"

    def settled():
        segs = segments(broker, topic_name)
        total = sum(size for _, size in segs)
        # Kafka's rule: what stays is at least retention.bytes, and dropping the oldest kept
        # segment would leave less.
        return segs if total >= retention_bytes and total - segs[0][1] < retention_bytes else None

    segs = wait_until("retention.bytes to be enforced", settled)
    assert segs[0][0] > 0
    # The `.deleted` files of the last pass wait for file.delete.delay.ms, then go.
    wait_until("the .deleted files to be removed", lambda: deleted_files(broker, topic_name) == [], timeout=15)

    low, high = watermarks(broker.bootstrap, topic_name)
    assert (low, high) == (segs[0][0], 400)
    msgs = consume_partitions(broker.bootstrap, topic_name, [0], timeout=T)
    assert [m.offset() for m in msgs] == list(range(low, 400))
    assert [index_of(m) for m in msgs] == list(range(low, 400))

    # The new log start is checkpointed: a restart keeps it.
    broker.terminate()
    broker.restart()
    assert watermarks(broker.bootstrap, topic_name) == (low, 400)


def test_segment_files_wait_as_deleted_files(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    create_topic(broker.bootstrap, topic_name, 1, config={
        "segment.bytes": "10000", "retention.bytes": "0", "file.delete.delay.ms": "4000"})
    p = producer(broker.bootstrap)
    produce_values(p, topic_name, 0, 40)
    # retention.bytes=0 deletes every non-empty segment, rolling the active one first.
    wait_until("retention to empty the log", lambda: watermarks(broker.bootstrap, topic_name) == (40, 40))
    names = deleted_files(broker, topic_name)
    assert names and all(n.endswith((".log.deleted", ".index.deleted", ".timeindex.deleted")) for n in names)
    assert [base for base, _ in segments(broker, topic_name)] == [40]
    wait_until("the .deleted files to be removed", lambda: deleted_files(broker, topic_name) == [], timeout=15)
    # With retention.bytes back to -1 (unlimited) the log goes on from where it was.
    a = admin(broker.bootstrap)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.bytes", "-1", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([resource])[resource].result(timeout=T)
    produce_values(p, topic_name, 40, 1)
    time.sleep(1.5)  # three retention checks
    msgs = consume_partitions(broker.bootstrap, topic_name, [0], timeout=T)
    assert [(m.offset(), index_of(m)) for m in msgs] == [(40, 40)]


def test_retention_ms_deletes_segments_with_old_records_only(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    create_topic(broker.bootstrap, topic_name, 1, config={"retention.ms": "60000", "segment.ms": "300"})
    p = producer(broker.bootstrap)
    old = int(time.time() * 1000) - 10 * 60 * 1000
    produce_values(p, topic_name, 0, 100, timestamp=old)
    time.sleep(0.6)  # past segment.ms: the next append rolls a new segment
    produce_values(p, topic_name, 100, 100)
    wait_until("the old segment to expire", lambda: watermarks(broker.bootstrap, topic_name)[0] == 100)
    # Recent records stay, however often retention runs.
    time.sleep(1.5)
    assert watermarks(broker.bootstrap, topic_name) == (100, 200)
    msgs = consume_partitions(broker.bootstrap, topic_name, [0], timeout=T)
    assert [index_of(m) for m in msgs] == list(range(100, 200))


def test_consumers_below_the_log_start_reset_by_auto_offset_reset(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    create_topic(broker.bootstrap, topic_name, 1, config={"retention.ms": "60000", "segment.ms": "300"})
    p = producer(broker.bootstrap)
    produce_values(p, topic_name, 0, 50, timestamp=int(time.time() * 1000) - 10 * 60 * 1000)
    time.sleep(0.6)
    produce_values(p, topic_name, 50, 50)
    wait_until("retention to delete the old segment", lambda: watermarks(broker.bootstrap, topic_name)[0] == 50)

    # earliest: a consumer at offset 10 (now deleted) starts again at the new log start.
    msgs = consume_partitions(broker.bootstrap, topic_name, [0], start=10, timeout=T, **{"auto.offset.reset": "earliest"})
    assert [m.offset() for m in msgs] == list(range(50, 100))

    # latest: it jumps to the end and sees only what is produced afterwards.
    c = consumer(broker.bootstrap, **{"auto.offset.reset": "latest"})
    try:
        c.assign([TopicPartition(topic_name, 0, 10)])
        got, deadline, produced = [], time.monotonic() + T, False
        while not got:
            assert time.monotonic() < deadline, "the latest-reset consumer got nothing"
            for m in c.consume(num_messages=100, timeout=0.5):
                if m.error() is None:
                    got.append(m)
                elif m.error().code() == KafkaError._PARTITION_EOF and not produced:
                    # Reset to the end: now produce one more record.
                    assert m.offset() == 100
                    produce_values(p, topic_name, 100, 1)
                    produced = True
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer error: {m.error()}")
        assert [(m.offset(), index_of(m)) for m in got] == [(100, 100)]
    finally:
        c.close()


def test_delete_records_and_retention_never_move_the_log_start_back(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    create_topic(broker.bootstrap, topic_name, 1, config={"segment.bytes": "10000"})
    p = producer(broker.bootstrap)
    produce_values(p, topic_name, 0, 100)
    bases = [base for base, _ in segments(broker, topic_name)]
    assert len(bases) >= 4, bases
    a = admin(broker.bootstrap)
    # Inside the third segment.
    cut = bases[2] + 1
    tp = TopicPartition(topic_name, 0, cut)
    assert a.delete_records([tp], request_timeout=T, operation_timeout=T)[tp].result(timeout=T).low_watermark == cut
    # As in Kafka, the segments below the new start go at the next retention check.
    wait_until("the segments below the cut to go", lambda: segments(broker, topic_name)[0][0] == bases[2])

    # A retention.bytes that would keep more than DeleteRecords left: the start stays.
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.bytes", "1000000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([resource])[resource].result(timeout=T)
    time.sleep(1.5)
    assert watermarks(broker.bootstrap, topic_name)[0] == cut

    # A tighter one, set while the broker runs, takes effect without a restart and moves the
    # start to a segment base above the cut.
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.bytes", "20000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([resource])[resource].result(timeout=T)
    low = wait_until("retention.bytes to apply", lambda: (lambda lo: lo if lo > cut else None)(
        watermarks(broker.bootstrap, topic_name)[0]))
    assert low == segments(broker, topic_name)[0][0]

    # DeleteRecords below the start is a no-op that reports the start.
    tp = TopicPartition(topic_name, 0, cut)
    assert a.delete_records([tp], request_timeout=T, operation_timeout=T)[tp].result(timeout=T).low_watermark == low
    assert watermarks(broker.bootstrap, topic_name) == (low, 100)


def test_compact_only_topics_keep_everything(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    create_topic(broker.bootstrap, topic_name, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "10000", "retention.bytes": "0", "retention.ms": "0"})
    p = producer(broker.bootstrap)
    produce_values(p, topic_name, 0, 50, key=b"k")
    time.sleep(1.5)  # three retention checks
    assert watermarks(broker.bootstrap, topic_name) == (0, 50)
    assert len(segments(broker, topic_name)) > 1
