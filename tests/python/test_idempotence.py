"""Idempotent producers: retries never write a record twice, and order holds per partition.

Two ways to make a client resend batches the broker already wrote:
- a proxy between client and broker drops some produce responses and closes the connection
  (the broker wrote the batch; the client never heard and sends it again);
- kill -9 of the broker while a producer is running, then a restart on the same port.
Either way the log must hold every acknowledged record exactly once, in the order it was sent.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from confluent_kafka import KafkaError, Producer

from fault_proxy import FaultProxy
from keel_helpers import consume_partitions, create_topic, free_port

PARTITIONS = 3


def idempotent_producer(bootstrap: str, **extra) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
        "batch.num.messages": 50,
        "retry.backoff.ms": 50,
        "message.timeout.ms": 60000,
        "socket.timeout.ms": 5000,
    }
    conf.update(extra)
    return Producer(conf)


def check_exactly_once(bootstrap: str, topic: str, sent: int, acked: set[int]) -> None:
    """Every acknowledged sequence number appears exactly once, in send order per partition."""
    records = consume_partitions(bootstrap, topic, range(PARTITIONS))
    seqs = [int(m.value()) for m in records]
    counts: dict[int, int] = defaultdict(int)
    for s in seqs:
        counts[s] += 1
    duplicates = {s: c for s, c in counts.items() if c > 1}
    assert not duplicates, f"{len(duplicates)} records written more than once, e.g. {list(duplicates.items())[:5]}"
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {sorted(missing)[:5]}"
    assert set(counts) <= set(range(sent)), "records that were never sent"
    by_partition: dict[int, list[int]] = defaultdict(list)
    for m in records:
        by_partition[m.partition()].append(int(m.value()))
    for partition, values in by_partition.items():
        assert values == sorted(values), f"partition {partition} out of send order"


def test_lost_produce_responses_do_not_duplicate_records(broker_factory, topic_name):
    # The broker advertises the proxy, so every client connection after bootstrap goes through it.
    proxy_port = free_port()
    broker = broker_factory(advertise=f"127.0.0.1:{proxy_port}")
    proxy = FaultProxy(broker.port, api_key=0, every=4, max_drops=15)
    # The proxy listens on a port of its own choosing; re-advertise it by restarting.
    broker.terminate()
    broker.advertise = proxy.address
    broker.restart()
    try:
        create_topic(proxy.address, topic_name, PARTITIONS)
        p = idempotent_producer(proxy.address)
        acked: set[int] = set()
        errors: list[str] = []

        def on_delivery(err, msg):
            if err is None:
                acked.add(int(msg.value()))
            else:
                errors.append(str(err))

        total = 3000
        for seq in range(total):
            while True:
                try:
                    p.produce(topic_name, value=str(seq).encode(), key=str(seq % 7).encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            if seq % 100 == 0:
                p.poll(0)
        assert p.flush(90) == 0, "records neither acknowledged nor failed"
        assert proxy.dropped > 0, "the proxy dropped no produce response; the test proved nothing"
        assert not errors, f"delivery errors: {errors[:5]}"
        assert len(acked) == total
        check_exactly_once(proxy.address, topic_name, total, acked)
    finally:
        proxy.close()


def test_kill_9_during_idempotent_production_loses_and_duplicates_nothing(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    p = idempotent_producer(broker.bootstrap, **{"acks": "all"})
    acked: set[int] = set()
    errors: list[str] = []
    sent = 0
    stop = threading.Event()

    def on_delivery(err, msg):
        if err is None:
            acked.add(int(msg.value()))
        else:
            errors.append(f"{err.code()}: {err}")

    def produce():
        nonlocal sent
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            if sent >= 20000:
                p.poll(0.05)  # serve delivery reports until told to stop
                continue
            if sent % 20 == 0:
                p.poll(0.004)  # about 5,000 records/s, so that the kill lands mid-stream
            try:
                p.produce(topic_name, value=str(sent).encode(), partition=sent % PARTITIONS, on_delivery=on_delivery)
                sent += 1
            except BufferError:
                p.poll(0.01)
            p.poll(0)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked) >= 2000, "the producer made no progress before the kill"
    assert sent < 20000, "the producer finished before the kill; the test proves nothing"
    broker.kill9()
    time.sleep(1.0)
    broker.restart()
    # Keep producing a while after the restart, then drain.
    time.sleep(2.0)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert p.flush(60) == 0, "records neither acknowledged nor failed"
    # With idempotence on, librdkafka retries through the outage; nothing may fail.
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(acked) == sent
    check_exactly_once(broker.bootstrap, topic_name, sent, acked)
