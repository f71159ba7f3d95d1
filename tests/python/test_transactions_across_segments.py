"""An aborted transaction whose records span many segments stays invisible to read_committed
consumers (confluent-kafka and kafka-python, as producers and as consumers), before and after a
kill -9 rebuilds the aborted-transaction index.

A transaction's abort is indexed in the segment of its marker, far past the segments holding its
records; a fetch of the early segments must still learn of it.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from keel_helpers import consume_partitions, create_topic

RECORDS = 1000
VALUE_BYTES = 1000
COMMITTED = [f"committed-{i}".encode() for i in range(10)]


def produce_confluent(bootstrap: str, topic: str) -> None:
    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": f"span-{uuid.uuid4().hex[:8]}",
        "batch.size": 9000,
        "linger.ms": 5,
    })
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(RECORDS):
        p.produce(topic, value=b"%06d" % i + b"x" * (VALUE_BYTES - 6), partition=0)
    p.flush(60)
    p.abort_transaction(30)
    p.begin_transaction()
    for value in COMMITTED:
        p.produce(topic, value=value, partition=0)
    p.commit_transaction(30)


def produce_kafka_python(bootstrap: str, topic: str) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"span-{uuid.uuid4().hex[:8]}",
                      batch_size=9000, linger_ms=5, request_timeout_ms=30000)
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(RECORDS):
            p.send(topic, value=b"%06d" % i + b"x" * (VALUE_BYTES - 6), partition=0)
        p.flush()
        p.abort_transaction()
        p.begin_transaction()
        for value in COMMITTED:
            p.send(topic, value=value, partition=0)
        p.commit_transaction()
    finally:
        p.close()


def read_confluent(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    return [m.value() for m in consume_partitions(bootstrap, topic, [0], **{"isolation.level": isolation})]


def read_kafka_python(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False,
                      consumer_timeout_ms=5000, request_timeout_ms=30000)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        return [m.value for m in c]
    finally:
        c.close()


def segment_count(broker, topic: str) -> int:
    return len(list((broker.data_dir / f"{topic}-0").glob("*.log")))


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_an_aborted_transaction_over_many_segments_is_not_read_committed(broker, topic_name, client):
    b = broker.bootstrap
    create_topic(b, topic_name, 1, config={"segment.bytes": "20000", "max.message.bytes": "10000"})
    (produce_confluent if client == "confluent-kafka" else produce_kafka_python)(b, topic_name)
    assert segment_count(broker, topic_name) > 40, "the aborted transaction spans many segments"

    for attempt in ["before", "after kill -9"]:
        for reader in [read_confluent, read_kafka_python]:
            committed = reader(b, topic_name, "read_committed")
            aborted = [v for v in committed if v not in COMMITTED]
            assert not aborted, f"{reader.__name__} {attempt}: {len(aborted)} aborted records read_committed"
            assert committed == COMMITTED, f"{reader.__name__} {attempt}"
            uncommitted = reader(b, topic_name, "read_uncommitted")
            assert len(uncommitted) == RECORDS + len(COMMITTED), f"{reader.__name__} {attempt}"
        if attempt == "before":
            # The broker rebuilds the aborted-transaction indexes from its producer snapshots.
            broker.kill9()
            broker.restart()
