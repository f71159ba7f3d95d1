"""A full disk: producers get KAFKA_STORAGE_ERROR, reads go on, and writes resume by themselves.

The broker's data directory is a small tmpfs that the test mounts (root only; the test is
skipped with the reason otherwise) next to a filler file. A non-idempotent producer with
retries off writes sequence-numbered 1 KiB records with acks=all until the disk is full, so
every record is either acknowledged at an offset or failed with the broker's error. Then:

- every failure is KAFKA_STORAGE_ERROR, and the broker is still up;
- an offset commit fails (NOT_COORDINATOR) and is not applied; after space frees it works;
- a consumer reads, with the disk still full, exactly the acknowledged records at their
  offsets (a failed append leaves nothing behind), each value intact, and ListOffsets gives
  the end;
- the filler is deleted and producing succeeds again without a restart;
- after kill -9 and a restart on the same tmpfs, every acknowledged record is still there, in
  order, at its offset, and new records continue from the end.

The cluster metadata log rides out a full disk too: a CreateTopics answers REQUEST_TIMED_OUT at
its timeout instead of hanging, an idempotent producer's InitProducerId is answered with a
retriable error, and once space frees both go through without a restart.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from keel_helpers import STOP_TIMEOUT_S, Broker, admin, consume_partitions, consumer, create_topic, wait_for_topic, wait_until

TMPFS_SIZE = "16m"
FILLER_BYTES = 4 << 20
RECORD_BYTES = 1024
# Bounds of the fill phase: far more bytes than the tmpfs holds, and a time limit.
FILL_RECORDS_MAX = 40_000
FILL_TIMEOUT_S = 90
FAILURES_WANTED = 50


@pytest.fixture
def tmpfs(tmp_path):
    """A TMPFS_SIZE tmpfs mounted on a fresh directory, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill_disk(path: Path) -> None:
    """Writes `path` until the file system refuses with ENOSPC: not one page is left free."""
    chunk = b"\xa5" * (64 << 10)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return
    finally:
        os.close(fd)


def metrics_text(broker: Broker) -> str:
    with urllib.request.urlopen(broker.http + "/metrics", timeout=10) as response:
        return response.read().decode()


def value_of(seq: int) -> bytes:
    """RECORD_BYTES bytes that name their sequence number and check themselves."""
    head = f"{seq:012d}".encode()
    body = hashlib.sha256(head).digest() * (RECORD_BYTES // 32)
    return head + body[: RECORD_BYTES - len(head)]


def producer(bootstrap: str) -> Producer:
    return Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "retries": 0,
        "linger.ms": 2,
        "batch.num.messages": 16,
        "message.timeout.ms": 10000,
        "socket.timeout.ms": 10000,
    })


def idempotent_producer(bootstrap: str, config: dict) -> Producer:
    """An idempotent acks=all producer that retries quickly, with `config` on top."""
    return Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 500,
        **config,
    })


class Deliveries:
    """A delivery callback: the offset of each acknowledged record by its sequence, and the
    errors of the others."""

    def __init__(self) -> None:
        self.acked: dict[int, int] = {}
        self.errors: list = []

    def __call__(self, err, msg) -> None:
        if err is None:
            self.acked[int(msg.value()[:12])] = msg.offset()
        else:
            self.errors.append(err)


class Writer:
    """Produces value_of(seq) for increasing seq and records what the broker answered."""

    def __init__(self, bootstrap: str, topic: str, first_seq: int = 0):
        self.topic = topic
        self.p = producer(bootstrap)
        self.next_seq = first_seq
        self.acked: dict[int, int] = {}  # seq -> offset
        self.errors: list[KafkaError] = []

    def _on_delivery(self, err, msg):
        seq = int(msg.value()[:12])
        if err is None:
            self.acked[seq] = msg.offset()
        else:
            self.errors.append(err)

    def produce(self, seq: int) -> None:
        while True:
            try:
                self.p.produce(self.topic, value=value_of(seq), partition=0, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.p.poll(0.05)
        self.p.poll(0)

    def write(self, count: int, stop_after_failures: int | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            if stop_after_failures is not None and len(self.errors) >= stop_after_failures:
                break
            self.produce(self.next_seq)
            self.next_seq += 1
        assert self.p.flush(30) == 0, "records neither acknowledged nor failed"


def read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    return [(m.offset(), m.value()) for m in consume_partitions(bootstrap, topic, [0], timeout=60, **{"check.crcs": True})]


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """A synchronous offset commit as a simple consumer (no group membership)."""
    c = consumer(bootstrap, **{"group.id": group})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    c = consumer(bootstrap, **{"group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=30)[0].offset
    finally:
        c.close()


def check_log_holds(bootstrap: str, topic: str, acked: dict[int, int]) -> None:
    """The partition holds exactly the acknowledged records, each intact at its offset."""
    by_offset = {offset: seq for seq, offset in acked.items()}
    assert len(by_offset) == len(acked), "two records acknowledged at one offset"
    records = read_all(bootstrap, topic)
    assert [offset for offset, _ in records] == list(range(len(records))), "offsets not contiguous from 0"
    assert sorted(by_offset) == [offset for offset, _ in records], (
        f"log holds {len(records)} records, {len(acked)} were acknowledged"
    )
    for offset, value in records:
        assert value == value_of(by_offset[offset]), f"record at offset {offset} is not the one acknowledged there"
    # Acknowledged in produce order: a later sequence never sits before an earlier one.
    seqs = [by_offset[offset] for offset, _ in records]
    assert seqs == sorted(seqs)
    c = consumer(bootstrap)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()
    assert (low, high) == (0, len(records))


def test_full_disk_fails_writes_keeps_reads_and_recovers(tmpfs: Path, tmp_path: Path, topic_name: str):
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * FILLER_BYTES)
    broker = Broker(tmpfs / "data", tmp_path / "keel.log")
    try:
        broker.start()
        # Small segments: the fill runs through rolls and producer snapshots too.
        create_topic(broker.bootstrap, topic_name, config={"segment.bytes": str(1 << 20)})
        read_all(broker.bootstrap, topic_name)

        writer = Writer(broker.bootstrap, topic_name)
        writer.write(FILL_RECORDS_MAX, stop_after_failures=FAILURES_WANTED, timeout=FILL_TIMEOUT_S)
        codes = {e.code() for e in writer.errors}
        print(f"{len(writer.acked)} acknowledged, {len(writer.errors)} failed: {sorted(e.name() for e in writer.errors)[:3]}")
        assert writer.errors, f"the disk never filled ({shutil.disk_usage(tmpfs)})"
        assert codes == {KafkaError.KAFKA_STORAGE_ERROR}, f"unexpected errors: {set(writer.errors)}"
        assert broker.proc.poll() is None, "the broker died on the full disk"
        assert shutil.disk_usage(tmpfs).free < 64 << 10, "the disk is not full"

        # Reads while the disk is still full.
        check_log_holds(broker.bootstrap, topic_name, writer.acked)
        # The group coordinator's writes fail too, and change nothing.
        group = f"{topic_name}-group"
        with pytest.raises(KafkaException) as refused:
            commit(broker.bootstrap, group, topic_name, 5)
        print(f"offset commit on the full disk: {refused.value}")
        assert committed(broker.bootstrap, group, topic_name) < 0

        # Space frees: writes resume by themselves.
        pid = broker.proc.pid
        filler.unlink()
        writer.errors.clear()
        writer.write(500)
        assert not writer.errors, f"produce still failing after space freed: {writer.errors[:3]}"
        assert broker.proc.pid == pid and broker.proc.poll() is None
        check_log_holds(broker.bootstrap, topic_name, writer.acked)
        commit(broker.bootstrap, group, topic_name, 7)
        assert committed(broker.bootstrap, group, topic_name) == 7

        # A crash and a restart on the same disk: everything acknowledged is there.
        broker.kill9()
        broker.restart()
        check_log_holds(broker.bootstrap, topic_name, writer.acked)
        after = Writer(broker.bootstrap, topic_name, first_seq=writer.next_seq)
        after.write(100)
        assert not after.errors
        assert sorted(after.acked.values()) == list(range(len(writer.acked), len(writer.acked) + 100))
        log = broker.log_path.read_text(errors="replace")
        assert "panicked" not in log
    finally:
        broker.stop()


def test_idempotent_producer_rides_out_a_full_disk(tmpfs: Path, tmp_path: Path, topic_name: str):
    """An idempotent producer retries KAFKA_STORAGE_ERROR; once space frees every record is
    written exactly once, in order: a failed append never advanced the producer's sequence.
    The producer gets its id before the disk fills, so that only its appends meet the full disk
    (test_metadata_log_rides_out_a_full_disk covers InitProducerId on a full disk)."""
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * FILLER_BYTES)
    broker = Broker(tmpfs / "data", tmp_path / "keel.log")
    try:
        broker.start()
        create_topic(broker.bootstrap, topic_name)
        read_all(broker.bootstrap, topic_name)
        p = idempotent_producer(
            broker.bootstrap, {"linger.ms": 2, "batch.num.messages": 16, "message.timeout.ms": 60000}
        )
        on_delivery = Deliveries()
        acked, errors = on_delivery.acked, on_delivery.errors

        p.produce(topic_name, value=value_of(0), partition=0, on_delivery=on_delivery)
        assert p.flush(30) == 0 and acked == {0: 0}, errors

        fill = Writer(broker.bootstrap, topic_name, first_seq=1)
        fill.write(FILL_RECORDS_MAX, stop_after_failures=FAILURES_WANTED, timeout=FILL_TIMEOUT_S)
        assert fill.errors, "the disk never filled"

        first = fill.next_seq
        for seq in range(first, first + 300):
            p.produce(topic_name, value=value_of(seq), partition=0, on_delivery=on_delivery)
            p.poll(0)
        # While the disk is full the records fail with KAFKA_STORAGE_ERROR and are retried.
        p.poll(2)
        assert len(acked) == 1, "records were acknowledged on a full disk"
        filler.unlink()
        assert p.flush(60) == 0
        assert not errors, errors[:3]
        assert len(acked) == 301
        expected = dict(fill.acked)
        expected.update(acked)
        check_log_holds(broker.bootstrap, topic_name, expected)
    finally:
        broker.stop()


def test_metadata_log_rides_out_a_full_disk(tmpfs: Path, tmp_path: Path, topic_name: str):
    """With the disk full, a CreateTopics (a write to the cluster metadata log) answers
    REQUEST_TIMED_OUT at its timeout and the broker keeps serving; once space frees, without a
    restart, the stalled topic appears, new topics are created, produced to and consumed, and an
    idempotent producer started on the full disk gets its producer id. Topics created after the
    recovery survive kill -9."""
    filler = tmpfs / "filler"
    broker = Broker(tmpfs / "data", tmp_path / "keel.log")
    stalled_topic, after_topic = f"{topic_name}-stalled", f"{topic_name}-after"
    try:
        broker.start()
        create_topic(broker.bootstrap, topic_name)
        fill_disk(filler)
        assert shutil.disk_usage(tmpfs).free < 64 << 10, "the disk is not full"

        # Many partitions: the topic's log entry needs new pages, not just the log's slack.
        a = admin(broker.bootstrap)
        futures = a.create_topics([NewTopic(stalled_topic, 64, 1)], operation_timeout=3, request_timeout=30)
        with pytest.raises(KafkaException) as refused:
            futures[stalled_topic].result(timeout=40)
        print(f"CreateTopics on the full disk: {refused.value}")
        assert refused.value.args[0].code() == KafkaError.REQUEST_TIMED_OUT, refused.value
        # A second one waits for the first within its own timeout, no longer.
        futures = a.create_topics([NewTopic(f"{topic_name}-queued", 1, 1)], operation_timeout=2, request_timeout=30)
        with pytest.raises(KafkaException) as refused:
            futures[f"{topic_name}-queued"].result(timeout=40)
        assert refused.value.args[0].code() == KafkaError.REQUEST_TIMED_OUT, refused.value

        # The broker is up and serves metadata and reads of what exists.
        assert broker.proc.poll() is None, "the broker died on the full disk"
        assert topic_name in a.list_topics(timeout=10).topics
        read_all(broker.bootstrap, topic_name)

        # An idempotent producer starts on the full disk: its InitProducerId needs a new
        # producer-id block, which the client retries until the metadata log commits again.
        on_delivery = Deliveries()
        acked, errors = on_delivery.acked, on_delivery.errors
        p = idempotent_producer(broker.bootstrap, {"message.timeout.ms": 90000})
        p.produce(topic_name, value=value_of(0), partition=0, on_delivery=on_delivery)
        # The broker answers InitProducerId with Kafka's retriable "no block yet" error.
        init_refused = 'keel_request_errors_total{api="InitProducerId",error="COORDINATOR_LOAD_IN_PROGRESS"}'

        def init_refused_yet() -> bool:
            p.poll(0.5)
            return init_refused in metrics_text(broker)

        wait_until("InitProducerId answered COORDINATOR_LOAD_IN_PROGRESS", init_refused_yet, timeout=60)
        assert not acked, "a record was acknowledged before the producer could get an id"

        # Space frees: the metadata log resumes by itself.
        pid = broker.proc.pid
        filler.unlink()
        wait_for_topic(broker.bootstrap, stalled_topic, 64, timeout=30, client=a)
        # Its late commit opened its partitions: it takes records.
        stalled_writer = Writer(broker.bootstrap, stalled_topic)
        stalled_writer.write(5)
        assert not stalled_writer.errors, stalled_writer.errors[:3]
        assert p.flush(60) == 0 and not errors, errors[:3]
        assert acked == {0: 0}
        create_topic(broker.bootstrap, after_topic)
        writer = Writer(broker.bootstrap, after_topic)
        writer.write(20)
        assert not writer.errors, writer.errors[:3]
        check_log_holds(broker.bootstrap, after_topic, writer.acked)
        assert broker.proc.pid == pid and broker.proc.poll() is None
        log = broker.log_path.read_text(errors="replace")
        assert "metadata log: disk full" in log and "disk space is back" in log

        # A crash and a restart: the topics created after the recovery are still there.
        broker.kill9()
        broker.restart()
        wait_for_topic(broker.bootstrap, after_topic, 1)
        wait_for_topic(broker.bootstrap, stalled_topic, 64)
        check_log_holds(broker.bootstrap, after_topic, writer.acked)
        assert "panicked" not in broker.log_path.read_text(errors="replace")
    finally:
        broker.stop()


def test_shutdown_ends_a_metadata_write_waiting_for_space(tmpfs: Path, tmp_path: Path, topic_name: str):
    """SIGTERM while the metadata log waits for space: the broker exits (the stalled write gives
    up; it was never acknowledged) instead of waiting for space forever."""
    filler = tmpfs / "filler"
    broker = Broker(tmpfs / "data", tmp_path / "keel.log")
    try:
        broker.start()
        create_topic(broker.bootstrap, topic_name)
        fill_disk(filler)
        a = admin(broker.bootstrap)
        stalled = f"{topic_name}-stalled"
        futures = a.create_topics([NewTopic(stalled, 64, 1)], operation_timeout=2, request_timeout=30)
        with pytest.raises(KafkaException) as refused:
            futures[stalled].result(timeout=40)
        assert refused.value.args[0].code() == KafkaError.REQUEST_TIMED_OUT, refused.value

        broker.proc.terminate()
        rc = broker.proc.wait(timeout=STOP_TIMEOUT_S)
        print(f"exit code {rc} after SIGTERM on the full disk")
        assert "metadata log: stopped while waiting for disk space" in broker.log_path.read_text(errors="replace")

        filler.unlink()
        broker.restart()
        assert topic_name in a.list_topics(timeout=10).topics
        create_topic(broker.bootstrap, f"{topic_name}-after")
    finally:
        broker.stop()
