"""Log compaction (`cleanup.policy=compact`) against a real broker: the cleaner keeps the latest
record of each key at the offset it was produced at, removes tombstones after
`delete.retention.ms`, never disturbs a consumer reading meanwhile, and removes the records of
aborted transactions while committed ones stay.

The broker's cleaner sleeps 200 ms between idle checks (`log.cleaner.backoff.ms`); topics use
small segments, a dirty ratio of 0.01 and a short `segment.ms`, so that a few seconds of writes
make many cleanable segments. Every wait is bounded.
"""

from __future__ import annotations

import random
import threading
import time

from confluent_kafka import KafkaError, Producer, TopicPartition

import keel_helpers
from keel_helpers import consume_partitions, consumer, create_topic

T = 30
BROKER_SETS = {"log.cleaner.backoff.ms": "200", "log.cleaner.dedupe.buffer.size": str(16 << 20)}
KEYS = 1_000
UPDATES = 100_000
SEGMENT_MS = 1_000
DELETE_RETENTION_MS = 3_000


def compacted_topic(broker, name: str, **extra) -> None:
    config = {
        "cleanup.policy": "compact",
        "segment.bytes": "65536",
        "segment.ms": str(SEGMENT_MS),
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS),
        "file.delete.delay.ms": "1000",
    }
    config.update(extra)
    create_topic(broker.bootstrap, name, 1, config=config)


def wait_until(what: str, check, timeout: float, detail=lambda: ""):
    # Each check reads the whole topic: every half second is often enough.
    return keel_helpers.wait_until(what, check, timeout, interval=0.5, detail=detail)


def read_all(bootstrap: str, topic: str, **extra) -> dict[int, tuple[bytes, bytes | None]]:
    """offset → (key, value) of every record a fresh consumer reads from the start."""
    return {m.offset(): (m.key(), m.value()) for m in consume_partitions(bootstrap, topic, [0], timeout=60, **extra)}


def produce(p: Producer, topic: str, records, produced: dict) -> None:
    """Produces (key, value) pairs; `produced` gets offset → (key, value) from the delivery reports."""
    errors = []

    def delivered(err, m):
        if err is not None:
            errors.append(err)
        else:
            produced[m.offset()] = (m.key(), m.value())

    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=0, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(T) == 0
    assert errors == []


def latest_per_key(produced: dict) -> dict[int, tuple[bytes, bytes | None]]:
    latest = {}
    for offset in sorted(produced):
        latest[produced[offset][0]] = offset
    return {offset: produced[offset] for offset in latest.values()}


def test_a_compacted_topic_keeps_the_latest_value_of_each_key_at_its_offset(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    compacted_topic(broker, topic_name)
    produced: dict[int, tuple[bytes, bytes | None]] = {}
    rng = random.Random(7)

    # A consumer reads from the start while the updates go in and the cleaner runs: every
    # record it sees is one that was produced at that offset, in increasing offsets.
    seen: list[tuple[int, bytes, bytes | None]] = []
    stop = threading.Event()
    failures: list[str] = []

    def consume():
        c = consumer(broker.bootstrap, **{"enable.partition.eof": False})
        try:
            c.assign([TopicPartition(topic_name, 0, 0)])
            while not stop.is_set():
                for m in c.consume(num_messages=5000, timeout=0.2):
                    if m.error() is None:
                        seen.append((m.offset(), m.key(), m.value()))
                    elif m.error().code() != KafkaError._PARTITION_EOF and m.topic() is not None:
                        failures.append(str(m.error()))
        finally:
            c.close()

    reader = threading.Thread(target=consume)
    reader.start()
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                  "batch.size": 16384, "acks": "all"})
    try:
        for chunk in range(10):
            records = []
            for i in range(chunk * (UPDATES // 10), (chunk + 1) * (UPDATES // 10)):
                key = f"key-{rng.randrange(KEYS):04}".encode()
                # About one update in 50 deletes its key.
                value = None if rng.random() < 0.02 else f"value-{i}".encode()
                records.append((key, value))
            produce(p, topic_name, records, produced)
        # After segment.ms the next append rolls: the records above are all in cleanable
        # segments, and the active one (never cleaned) holds only this record, of a key of its
        # own so that no update above waits behind it.
        time.sleep(SEGMENT_MS / 1000 + 0.5)
        produce(p, topic_name, [(b"the-active-segment", b"last")], produced)
    finally:
        time.sleep(1)
        stop.set()
        reader.join(T)
    assert len(produced) == UPDATES + 1
    assert failures == []
    offsets = [offset for offset, _, _ in seen]
    assert offsets == sorted(set(offsets)), "the running consumer saw offsets out of order or twice"
    for offset, key, value in seen:
        assert produced[offset] == (key, value), f"the running consumer read a record never produced at {offset}"

    latest = latest_per_key(produced)
    assert len(latest) == KEYS + 1
    live = {o: kv for o, kv in latest.items() if kv[1] is not None}

    last = {}

    def compacted():
        records = read_all(broker.bootstrap, topic_name)
        last["missing"] = sorted(set(live) - set(records))[:10]
        last["extra"] = sorted(set(records) - set(latest))[:10]
        # Tombstones may already be gone if delete.retention.ms passed.
        return records if set(live) <= set(records) <= set(latest) else None

    records = wait_until("the cleaner to keep only the latest record per key", compacted, timeout=30,
                         detail=lambda: f"{last}")
    for offset, (key, value) in records.items():
        assert latest[offset] == (key, value), f"offset {offset} holds another record than was produced there"
    # The log end did not move: offsets were never renumbered.
    c = consumer(broker.bootstrap)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=T, cached=False)
    finally:
        c.close()
    assert high == UPDATES + 1
    # After delete.retention.ms the tombstones go too.
    records = wait_until(
        "the tombstones to be removed",
        lambda: (r := read_all(broker.bootstrap, topic_name)) == live and r,
        timeout=DELETE_RETENTION_MS / 1000 + 60,
    )
    assert len(records) == len(live) < KEYS + 1
    # The first dirty offset is checkpointed for the next start.
    checkpoint = (broker.data_dir / "cleaner-offset-checkpoint").read_text()
    assert any(line.startswith(f"{topic_name} 0 ") for line in checkpoint.splitlines()), checkpoint

    # After a kill -9 the broker reads the same compacted log (replaced segment files still
    # waiting for file.delete.delay.ms are removed at open).
    broker.kill9()
    broker.restart()
    assert read_all(broker.bootstrap, topic_name) == live


def test_compressed_batches_are_compacted_and_stay_compressed(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    compacted_topic(broker, topic_name)
    produced: dict[int, tuple[bytes, bytes | None]] = {}
    rng = random.Random(11)
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 20,
                      "batch.size": 65536, "acks": "all"})
        produce(p, topic_name, [(f"key-{rng.randrange(100):03}".encode(), f"{codec}-{i}".encode() * 4)
                                for i in range(5_000)], produced)
    time.sleep(SEGMENT_MS / 1000 + 0.5)
    produce(Producer({"bootstrap.servers": broker.bootstrap}), topic_name, [(b"the-active-segment", b"last")], produced)
    latest = latest_per_key(produced)
    wait_until("the cleaner to keep only the latest record per key",
               lambda: read_all(broker.bootstrap, topic_name) == latest, timeout=60)
    # The cleaned segments still hold compressed batches (attribute bits 0-2 are not zero).
    data = b"".join(f.read_bytes() for f in sorted((broker.data_dir / f"{topic_name}-0").glob("*.log")))
    position, codecs = 0, set()
    while position + 61 <= len(data):
        length = int.from_bytes(data[position + 8:position + 12], "big")
        codecs.add(int.from_bytes(data[position + 21:position + 23], "big") & 0x07)
        position += 12 + length
    assert codecs & {1, 2, 3, 4}, codecs


def test_compaction_removes_aborted_transactions_and_keeps_committed_ones(broker_factory, topic_name):
    broker = broker_factory(BROKER_SETS)
    compacted_topic(broker, topic_name)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"{topic_name}-txn", "linger.ms": 5})
    p.init_transactions(T)
    committed = {f"c-{i}".encode(): f"committed-{i}".encode() for i in range(50)}
    aborted = {f"a-{i}".encode(): f"aborted-{i}".encode() for i in range(50)}
    p.begin_transaction()
    for key, value in committed.items():
        p.produce(topic_name, key=key, value=value, partition=0)
    p.commit_transaction(T)
    p.begin_transaction()
    for key, value in aborted.items():
        p.produce(topic_name, key=key, value=value, partition=0)
    # The aborted transaction also overwrote a committed key: the committed value must stay.
    p.produce(topic_name, key=b"c-0", value=b"aborted overwrite", partition=0)
    p.flush(T)
    p.abort_transaction(T)
    # Roll, so that both transactions are in cleanable segments.
    time.sleep(SEGMENT_MS / 1000 + 0.5)
    p.begin_transaction()
    p.produce(topic_name, key=b"last", value=b"last", partition=0)
    p.commit_transaction(T)

    def values(isolation: str) -> dict[bytes, bytes]:
        return {k: v for k, v in read_all(broker.bootstrap, topic_name, **{"isolation.level": isolation}).values()}

    expected = {**committed, b"last": b"last"}
    assert values("read_committed") == expected
    # Once cleaned, the aborted records are gone from the log itself: a read_uncommitted
    # consumer no longer sees them either.
    wait_until(
        "the aborted records to be removed from the log",
        lambda: values("read_uncommitted") == expected,
        timeout=60,
    )
    assert values("read_committed") == expected


def test_group_offsets_replay_from_a_compacted_consumer_offsets_partition(broker_factory, topic_name):
    """`__consumer_offsets` is compacted like any topic; after the cleaner has run (and a
    kill -9), the group coordinator's replay gives each group its last committed offsets, and a
    deleted group (tombstones) stays deleted."""
    from confluent_kafka import Consumer
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from keel_helpers import admin

    broker = broker_factory({**BROKER_SETS, "offsets.topic.num.partitions": "1"})
    create_topic(broker.bootstrap, topic_name, 1)
    kept, doomed = f"{topic_name}-kept", f"{topic_name}-doomed"

    def commit(group: str, offset: int) -> None:
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(topic_name, 0, offset)], asynchronous=False)
        finally:
            c.close()

    commit(kept, 1)
    a = admin(broker.bootstrap)
    resource = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets", incremental_configs=[
        ConfigEntry("segment.ms", str(SEGMENT_MS), incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("delete.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([resource])[resource].result(timeout=T)
    for offset in range(2, 60):
        commit(kept, offset)
        commit(doomed, offset)
    a.delete_consumer_groups([doomed], request_timeout=10)[doomed].result(timeout=15)
    # Roll, then wait for the cleaner to pass the commits, and for the tombstones' horizon.
    time.sleep(SEGMENT_MS / 1000 + 0.5)
    commit(kept, 60)
    checkpoint_file = broker.data_dir / "cleaner-offset-checkpoint"

    def cleaned_to() -> int:
        text = checkpoint_file.read_text() if checkpoint_file.exists() else ""
        return max([int(line.split()[2]) for line in text.splitlines() if line.startswith("__consumer_offsets 0 ")],
                   default=0)

    wait_until("the cleaner to compact __consumer_offsets", lambda: cleaned_to() > 100, timeout=60)
    # Past delete.retention.ms a pass may remove the deleted group's tombstones too.
    time.sleep(1.5)

    broker.kill9()
    broker.restart()
    a = admin(broker.bootstrap)

    def committed(group: str) -> dict[int, int]:
        [future] = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10).values()
        return {tp.partition: tp.offset for tp in future.result(timeout=15).topic_partitions if tp.offset >= 0}

    assert committed(kept) == {0: 60}
    assert committed(doomed) == {}
    listed = {g.group_id for g in a.list_consumer_groups(request_timeout=10).result(timeout=15).valid}
    assert kept in listed and doomed not in listed


def test_transaction_state_replays_from_a_compacted_partition(broker_factory, topic_name):
    """`__transaction_state` is compacted too: after the cleaner has kept only each
    transactional id's latest record (and a kill -9), the coordinator still knows the id: a new
    producer with it fences the old one, and its transactions commit."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from keel_helpers import admin

    broker = broker_factory({**BROKER_SETS, "transaction.state.log.num.partitions": "1"})
    create_topic(broker.bootstrap, topic_name, 1)
    txn_id = f"{topic_name}-txn"
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id, "linger.ms": 0})
    p.init_transactions(T)
    a = admin(broker.bootstrap)
    resource = ConfigResource(ConfigResource.Type.TOPIC, "__transaction_state", incremental_configs=[
        ConfigEntry("segment.ms", str(SEGMENT_MS), incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([resource])[resource].result(timeout=T)
    for i in range(20):
        p.begin_transaction()
        p.produce(topic_name, key=b"k", value=str(i).encode(), partition=0)
        p.commit_transaction(T)
    # Roll the transaction log, then one more transaction, and wait for the cleaner.
    time.sleep(SEGMENT_MS / 1000 + 0.5)
    p.begin_transaction()
    p.produce(topic_name, key=b"k", value=b"20", partition=0)
    p.commit_transaction(T)
    checkpoint_file = broker.data_dir / "cleaner-offset-checkpoint"

    def cleaned() -> bool:
        text = checkpoint_file.read_text() if checkpoint_file.exists() else ""
        return any(line.startswith("__transaction_state 0 ") and int(line.split()[2]) > 0 for line in text.splitlines())

    wait_until("the cleaner to compact __transaction_state", cleaned, timeout=60)
    broker.kill9()
    broker.restart()
    # The old producer's epoch was replayed: a new producer bumps it and fences the old one.
    fresh = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id, "linger.ms": 0})
    fresh.init_transactions(T)
    fresh.begin_transaction()
    fresh.produce(topic_name, key=b"k", value=b"fresh", partition=0)
    fresh.commit_transaction(T)
    p.begin_transaction()
    p.produce(topic_name, key=b"k", value=b"zombie", partition=0)
    try:
        p.commit_transaction(T)
        fenced = False
    except KafkaException as e:
        fenced = e.args[0].fatal() or "fenced" in str(e).lower()
    assert fenced, "the old producer was not fenced"
    values = [v for _, v in read_all(broker.bootstrap, topic_name, **{"isolation.level": "read_committed"}).values()]
    assert b"fresh" in values and b"zombie" not in values
