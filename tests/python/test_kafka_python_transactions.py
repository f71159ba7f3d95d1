"""kafka-python's idempotent and transactional producers against Keel: commits are visible,
aborts are not, to kafka-python's own read_committed consumer and to confluent-kafka's."""

from __future__ import annotations

import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from keel_helpers import consume_partitions, create_topic


def read(bootstrap: str, topic: str, isolation: str) -> list[str]:
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        request_timeout_ms=30000,
    )
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        return [m.value.decode() for m in c]
    finally:
        c.close()


def test_kafka_python_transactional_producer_commits_and_aborts(shared_broker, topic_name):
    b = shared_broker.bootstrap
    create_topic(b, topic_name, 1)
    p = KafkaProducer(bootstrap_servers=b, transactional_id=f"kp-{uuid.uuid4().hex[:8]}", request_timeout_ms=30000)
    p.init_transactions()
    p.begin_transaction()
    for i in range(5):
        p.send(topic_name, value=f"keep{i}".encode(), partition=0)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(5):
        p.send(topic_name, value=f"drop{i}".encode(), partition=0)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.send(topic_name, value=b"last", partition=0)
    p.commit_transaction()
    p.close()

    wanted = [f"keep{i}" for i in range(5)] + ["last"]
    assert read(b, topic_name, "read_committed") == wanted
    assert read(b, topic_name, "read_uncommitted") == [f"keep{i}" for i in range(5)] + [f"drop{i}" for i in range(5)] + ["last"]
    # librdkafka's read_committed consumer agrees.
    got = [m.value().decode() for m in consume_partitions(b, topic_name, [0], **{"isolation.level": "read_committed"})]
    assert got == wanted


def test_kafka_python_idempotent_producer(shared_broker, topic_name):
    b = shared_broker.bootstrap
    create_topic(b, topic_name, 1)
    p = KafkaProducer(bootstrap_servers=b, enable_idempotence=True, acks="all", request_timeout_ms=30000)
    for i in range(100):
        p.send(topic_name, value=f"r{i}".encode(), partition=0)
    p.flush()
    p.close()
    assert read(b, topic_name, "read_uncommitted") == [f"r{i}" for i in range(100)]
