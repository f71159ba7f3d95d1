"""Durability across restarts: nothing acknowledged with acks=all is lost, even after kill -9.

A producer writes sequence-numbered records to a 4-partition topic and records each
acknowledged one with the offset the broker gave it. Retries are off, so a record the broker
never acknowledged is simply unacknowledged: it may or may not be in the log, but nothing can
be in it twice. After the restart the log must hold every acknowledged record at its
acknowledged offset, contiguous offsets from 0, no duplicates, no consumer errors (no torn
batch), and new records must get offsets continuing from the recovered end.
(kill -9 kills the process only; the page cache survives, so this does not test fsync.)
"""

from __future__ import annotations

import signal
import threading
import time

from confluent_kafka import Producer

from keel_helpers import admin, consume_partitions, create_topic

PARTITIONS = 4


def producer(bootstrap: str) -> Producer:
    return Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "retries": 0,
        "message.timeout.ms": 5000,
        "socket.timeout.ms": 5000,
    })


class SequenceWriter:
    """Background thread producing value=str(seq) to partition seq % PARTITIONS."""

    def __init__(self, bootstrap: str, topic: str, first_seq: int = 0):
        self.topic = topic
        self.p = producer(bootstrap)
        self.next_seq = first_seq
        self.acked: dict[int, tuple[int, int]] = {}   # seq -> (partition, offset)
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked[int(msg.value())] = (msg.partition(), msg.offset())
        else:
            self.failed += 1

    def _run(self):
        while not self.stop.is_set():
            seq = self.next_seq
            try:
                self.p.produce(self.topic, value=str(seq).encode(), partition=seq % PARTITIONS, on_delivery=self._on_delivery)
                self.next_seq += 1
            except BufferError:
                self.p.poll(0.01)
            self.p.poll(0)

    def start(self):
        self.thread.start()
        return self

    def finish(self):
        """Stop producing; wait for every outstanding record to be acked or failed."""
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        remaining = self.p.flush(15)
        assert remaining == 0, f"{remaining} records neither acknowledged nor failed"


def read_log(bootstrap: str, topic: str) -> dict[int, list[int]]:
    """partition -> list of seqs in offset order, checking offsets are 0..n-1."""
    out = {p: [] for p in range(PARTITIONS)}
    for m in consume_partitions(bootstrap, topic, range(PARTITIONS), timeout=60):
        seqs = out[m.partition()]
        assert m.offset() == len(seqs), f"partition {m.partition()}: offset {m.offset()} after {len(seqs)} records (gap or reorder)"
        seqs.append(int(m.value()))
    return out


def check_acked_present(log: dict[int, list[int]], acked: dict[int, tuple[int, int]]):
    all_seqs = [s for seqs in log.values() for s in seqs]
    assert len(all_seqs) == len(set(all_seqs)), "a record is in the log twice"
    lost = []
    for seq, (p, off) in acked.items():
        if off >= len(log[p]) or log[p][off] != seq:
            lost.append((seq, p, off))
    assert not lost, f"{len(lost)} acknowledged records missing or moved, e.g. (seq, partition, offset) {sorted(lost)[:10]}"


def produce_more_and_check_offsets(bootstrap: str, topic: str, log: dict[int, list[int]], first_seq: int):
    p = producer(bootstrap)
    got = {}
    for i in range(PARTITIONS * 10):
        seq = first_seq + i
        p.produce(topic, value=str(seq).encode(), partition=seq % PARTITIONS,
                  on_delivery=lambda err, msg: got.__setitem__(int(msg.value()), (err, msg.partition(), msg.offset())))
    assert p.flush(15) == 0
    per_partition = {q: len(log[q]) for q in range(PARTITIONS)}
    for seq in sorted(got):
        err, q, off = got[seq]
        assert err is None, f"produce after restart failed: {err}"
        assert off == per_partition[q], f"partition {q}: new record at offset {off}, expected {per_partition[q]} (log end)"
        per_partition[q] += 1
    after = read_log(bootstrap, topic)
    for q in range(PARTITIONS):
        assert after[q][: len(log[q])] == log[q], f"partition {q}: old records changed"
        assert len(after[q]) == per_partition[q]


def test_kill9_loses_nothing_acknowledged(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    w = SequenceWriter(broker.bootstrap, topic_name).start()
    time.sleep(2.0)
    broker.kill9()
    w.finish()
    assert len(w.acked) > 100, f"only {len(w.acked)} records acknowledged in 2 s; the crash test needs traffic"
    print(f"acknowledged {len(w.acked)}, failed {w.failed}, attempted {w.next_seq}")

    broker.restart()
    log = read_log(broker.bootstrap, topic_name)
    check_acked_present(log, w.acked)
    produce_more_and_check_offsets(broker.bootstrap, topic_name, log, w.next_seq)


def test_clean_restart_keeps_everything(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTITIONS, config={"retention.ms": "86400000"})
    cluster_id = admin(broker.bootstrap).list_topics(timeout=10).cluster_id
    w = SequenceWriter(broker.bootstrap, topic_name).start()
    time.sleep(1.0)
    w.finish()
    assert w.failed == 0 and len(w.acked) == w.next_seq
    before = read_log(broker.bootstrap, topic_name)
    check_acked_present(before, w.acked)
    assert sum(len(s) for s in before.values()) == w.next_seq

    broker.terminate()   # SIGTERM: must exit 0
    broker.restart()

    md = admin(broker.bootstrap).list_topics(timeout=10)
    assert md.cluster_id == cluster_id, "cluster id changed across restart"
    assert len(md.topics[topic_name].partitions) == PARTITIONS
    after = read_log(broker.bootstrap, topic_name)
    assert after == before
    produce_more_and_check_offsets(broker.bootstrap, topic_name, after, w.next_seq)


def test_sigint_is_a_clean_shutdown(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    p = producer(broker.bootstrap)
    p.produce(topic_name, value=b"0", partition=0)
    assert p.flush(10) == 0
    broker.terminate(signal.SIGINT)
    broker.restart()
    msgs = consume_partitions(broker.bootstrap, topic_name, [0], timeout=30)
    assert [m.value() for m in msgs] == [b"0"]

