"""Transactions with confluent-kafka: commit and abort visibility, timeouts, zombie fencing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from keel_helpers import consume_partitions, create_topic

# Timed-out transactions are looked for every half second instead of every ten.
TXN_SETS = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"}


def txn_producer(bootstrap: str, transactional_id: str, **extra) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "linger.ms": 5,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def values(bootstrap: str, topic: str, partitions=1, **extra) -> list[str]:
    return [m.value().decode() for m in consume_partitions(bootstrap, topic, range(partitions), **extra)]


def committed(bootstrap: str, topic: str, partitions=1) -> list[str]:
    return values(bootstrap, topic, partitions, **{"isolation.level": "read_committed"})


def uncommitted(bootstrap: str, topic: str, partitions=1) -> list[str]:
    return values(bootstrap, topic, partitions, **{"isolation.level": "read_uncommitted"})


def test_committed_transactions_are_visible_and_aborted_ones_are_not(shared_broker, topic_name):
    b = shared_broker.bootstrap
    create_topic(b, topic_name, 2)
    p = txn_producer(b, f"txn-{uuid.uuid4().hex[:8]}")
    for batch, commit in [("a", True), ("b", False), ("c", True), ("d", False)]:
        p.begin_transaction()
        for i in range(10):
            p.produce(topic_name, value=f"{batch}{i}".encode(), partition=i % 2)
        if commit:
            p.commit_transaction(30)
        else:
            p.flush(30)
            p.abort_transaction(30)
    seen = sorted(committed(b, topic_name, 2))
    assert seen == sorted([f"{x}{i}" for x in "ac" for i in range(10)])
    everything = sorted(uncommitted(b, topic_name, 2))
    assert everything == sorted([f"{x}{i}" for x in "abcd" for i in range(10)])


def test_read_committed_waits_for_open_transactions_and_not_past_their_timeout(broker_factory, topic_name):
    broker = broker_factory(sets=TXN_SETS)
    b = broker.bootstrap
    create_topic(b, topic_name, 1)
    # A producer opens a transaction and then goes silent (as if hung), with a short timeout.
    hung = txn_producer(b, f"hung-{uuid.uuid4().hex[:8]}", **{"transaction.timeout.ms": 3000, "socket.timeout.ms": 3000})
    hung.begin_transaction()
    hung.produce(topic_name, value=b"never-committed")
    hung.flush(10)
    # Another transaction commits after it.
    p = txn_producer(b, f"live-{uuid.uuid4().hex[:8]}")
    p.begin_transaction()
    p.produce(topic_name, value=b"committed")
    p.commit_transaction(30)
    # While the first is open, read_committed stops before it; once it times out and is
    # aborted, the later committed record becomes readable.
    c = Consumer({
        "bootstrap.servers": b,
        "group.id": f"g-{uuid.uuid4().hex[:8]}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        got = []
        started = time.monotonic()
        deadline = started + 30
        while not got and time.monotonic() < deadline:
            for m in c.consume(10, timeout=0.5):
                if m.error() is None:
                    got.append(m.value().decode())
        waited = time.monotonic() - started
        assert got == ["committed"], f"read {got} after {waited:.1f}s"
    finally:
        c.close()
    assert uncommitted(b, topic_name) == ["never-committed", "committed"]


def test_a_zombie_producer_is_fenced_and_its_writes_never_appear(shared_broker, topic_name):
    b = shared_broker.bootstrap
    create_topic(b, topic_name, 1)
    tid = f"zombie-{uuid.uuid4().hex[:8]}"
    zombie = txn_producer(b, tid)
    zombie.begin_transaction()
    zombie.produce(topic_name, value=b"zombie-1")
    zombie.flush(10)
    # A new instance with the same transactional.id fences the old one and aborts its work.
    fresh = txn_producer(b, tid)
    fresh.begin_transaction()
    fresh.produce(topic_name, value=b"fresh-1")
    fresh.commit_transaction(30)
    # The zombie cannot write or commit any more.
    with pytest.raises(KafkaException) as failure:
        zombie.produce(topic_name, value=b"zombie-2")
        zombie.commit_transaction(10)
    assert failure.value.args[0].fatal() or failure.value.args[0].txn_requires_abort(), failure.value
    assert committed(b, topic_name) == ["fresh-1"]


# ------------------------------------------------------------------ exactly-once pipeline

class Supervisor:
    """Keeps one eos_worker.py process running; kill() is a kill -9 of the current one."""

    def __init__(self, args: list[str], log_path):
        self.args = args
        self.log = open(log_path, "ab")
        self.proc = None
        self.starts = 0

    def ensure_running(self):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "eos_worker.py"), *self.args],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            self.starts += 1

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        self.kill()
        self.log.close()


def test_exactly_once_pipeline_survives_app_and_broker_kills(broker_factory, topic_name, tmp_path):
    broker = broker_factory(sets=TXN_SETS)
    b = broker.bootstrap
    source, sink = f"{topic_name}-in", f"{topic_name}-out"
    partitions = 3
    create_topic(b, source, partitions)
    create_topic(b, sink, partitions)
    total = 3000
    p = Producer({"bootstrap.servers": b, "enable.idempotence": True, "linger.ms": 5})
    for i in range(total):
        p.produce(source, key=str(i).encode(), value=f"v{i}".encode(), partition=i % partitions)
    assert p.flush(30) == 0

    def output_count() -> int:
        return len(committed(b, sink, partitions))

    worker = Supervisor([b, source, sink, f"eos-{uuid.uuid4().hex[:8]}", f"eos-tx-{uuid.uuid4().hex[:8]}"],
                        tmp_path / "eos-worker.log")
    try:
        # Kill the app at four points of progress, and the broker once in the middle.
        plan = [(300, "app"), (900, "app"), (1500, "broker"), (2000, "app"), (2600, "app")]
        deadline = time.monotonic() + 240
        for threshold, victim in plan:
            while True:
                worker.ensure_running()
                n = output_count()
                if n >= threshold:
                    break
                assert time.monotonic() < deadline, f"pipeline stuck at {n} of {total} outputs; worker log: {tmp_path}"
                time.sleep(0.2)
            if victim == "app":
                worker.kill()
            else:
                broker.kill9()
                time.sleep(0.5)
                broker.restart()
        while True:
            worker.ensure_running()
            n = output_count()
            if n >= total:
                break
            assert time.monotonic() < deadline, f"pipeline stuck at {n} of {total} outputs"
            time.sleep(0.3)
        # Let a last in-flight transaction finish or abort before judging.
        time.sleep(2)
        worker.kill()
        out = committed(b, sink, partitions)
        counts: dict[str, int] = {}
        for v in out:
            counts[v] = counts.get(v, 0) + 1
        duplicates = {v: c for v, c in counts.items() if c > 1}
        assert not duplicates, f"{len(duplicates)} outputs appear more than once, e.g. {list(duplicates.items())[:5]}"
        assert set(counts) == {f"v{i}-out" for i in range(total)}
        assert worker.starts >= 5
    finally:
        worker.stop()
