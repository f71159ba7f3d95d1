"""Consumer groups through real clients (classic protocol): Keel as the group coordinator.

- Members of one group split a topic's partitions: disjoint assignments covering every
  partition, every record read exactly once (range, roundrobin, cooperative-sticky; kafka-python).
- A member killed with kill -9 loses its partitions to the others after its session timeout.
- Delivery semantics are the client's choice, built from the same two primitives (process,
  commit): process-then-commit is at-least-once (a crash in between re-delivers exactly the
  processed-but-uncommitted records), commit-then-process is at-most-once (a crash in between
  loses exactly the committed-but-unprocessed records). Nothing else is lost or duplicated.
- Two groups read one topic independently.
- Committed offsets survive kill -9 of the broker mid-commit; a new member resumes from them.
- Static membership (KIP-345): a restarted static member gets its partitions back with no rebalance.
- The admin APIs (confluent-kafka and kafka-python) list, describe, fetch offsets, delete.

Consumers that must be killed run as separate processes (group_worker.py); the others run in
this process. Brokers start with group.initial.rebalance.delay.ms=0, members use the broker's
minimum session timeout (6 s) where expiry matters. Every wait is bounded.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer,
    TopicPartition,
)

from keel_helpers import admin, create_topic

FAST_GROUPS = {"group.initial.rebalance.delay.ms": "0"}
SESSION_MS = 6000            # the broker's group.min.session.timeout.ms
WORKER = Path(__file__).with_name("group_worker.py")


# ------------------------------------------------------------------ helpers

def wait_until(cond, timeout: float, what: str, step: float = 0.1, tick=None):
    """Poll `cond` (calling `tick` between tries, e.g. to drive consumers) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if tick is not None:
            tick()
        else:
            time.sleep(step)


def group_name() -> str:
    return f"group-{uuid.uuid4().hex[:10]}"


def produce(bootstrap: str, topic: str, partitions: int, per_partition: int, flush_every: int = 0) -> dict[tuple[int, int], str]:
    """Write `per_partition` records to each partition; returns (partition, offset) -> value.
    With `flush_every`, records go out in batches of that many per partition."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    written: dict[tuple[int, int], str] = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            written[(msg.partition(), msg.offset())] = msg.value().decode()

    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{part}-{i}".encode(), partition=part, on_delivery=on_delivery)
        if flush_every and (i + 1) % flush_every == 0:
            assert p.flush(30) == 0
    assert p.flush(30) == 0 and not errors, f"produce failed: {errors[:3]}"
    assert len(written) == partitions * per_partition
    return written


def describe(a, group: str):
    return a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def member_partitions(member) -> set[int]:
    return {tp.partition for tp in member.assignment.topic_partitions}


def group_settled(a, group: str, members: int, partitions: int):
    """The group is Stable with `members` members whose assignments split all partitions."""
    d = describe(a, group)
    if d.state != ConsumerGroupState.STABLE or len(d.members) != members:
        return None
    assigned = [member_partitions(m) for m in d.members]
    if not all(assigned) or sum(map(len, assigned)) != partitions or set().union(*assigned) != set(range(partitions)):
        return None
    return d


def committed_offsets(a, group: str, topic: str) -> dict[int, int]:
    """AdminClient.list_consumer_group_offsets, as partition -> offset for `topic`."""
    [res] = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10).values()
    got = res.result(timeout=15)
    assert got.group_id == group
    out = {}
    for tp in got.topic_partitions:
        assert tp.error is None, f"{tp}: {tp.error}"
        if tp.topic == topic:
            out[tp.partition] = tp.offset
    return out


def cgmd_generation(c: Consumer) -> int:
    """The generation id from librdkafka's serialized consumer group metadata
    ("CGMDv2:" followed by the generation id as a native int32)."""
    md = c.consumer_group_metadata()
    assert md[:7] == b"CGMDv2:", md
    return struct.unpack("=i", md[7:11])[0]


class Member:
    """An in-process confluent-kafka group member that records its rebalance callbacks and records."""

    def __init__(self, bootstrap: str, group: str, topic: str, **conf):
        self.events: list[tuple[str, list[int]]] = []
        self.records: list[tuple[int, int, str]] = []
        self.c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            "socket.timeout.ms": 10000,
            **conf,
        })
        # With an eager assignor these get the whole assignment; with cooperative-sticky only the
        # increment (confluent-kafka then does incremental_assign/unassign itself).
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.closed = False

    def _on_assign(self, consumer, partitions):
        self.events.append(("assign", sorted(tp.partition for tp in partitions)))

    def _on_revoke(self, consumer, partitions):
        self.events.append(("revoke", sorted(tp.partition for tp in partitions)))

    def poll(self, timeout: float = 0.05) -> None:
        for m in self.c.consume(num_messages=1000, timeout=timeout):
            if m.error() is not None:
                raise AssertionError(f"consumer error: {m.error()}")
            self.records.append((m.partition(), m.offset(), m.value().decode()))

    @property
    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.c.close()


def poll_all(members):
    def tick():
        for m in members:
            if not m.closed:
                m.poll(0.05)
    return tick


class Worker:
    """group_worker.py in a subprocess; its JSON event lines are collected by a reader thread."""

    def __init__(self, tmp_path: Path, name: str, bootstrap: str, topic: str, group: str, **spec):
        self.name = name
        spec.update(bootstrap=bootstrap, topic=topic, group=group)
        self.stderr_path = tmp_path / f"worker-{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
        )
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            event = json.loads(line)
            if "offsets" in event:
                event["offsets"] = {int(p): o for p, o in event["offsets"].items()}
            with self._lock:
                self._events.append(event)

    def events(self, ev: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self._events if ev is None or e["ev"] == ev]

    def records(self) -> list[tuple[int, int, str]]:
        return [(e["p"], e["o"], e["v"]) for e in self.events("record")]

    def assignment(self) -> set[int]:
        current: set[int] = set()
        for e in self.events():
            if e["ev"] == "assigned":
                current = set(e["partitions"])
            elif e["ev"] == "revoked":
                current -= set(e["partitions"])
        return current

    def committed(self) -> dict[int, int]:
        """partition -> highest offset the broker acknowledged as committed."""
        out: dict[int, int] = {}
        for e in self.events("committed"):
            for p, o in e["offsets"].items():
                out[p] = max(out.get(p, o), o)
        return out

    def wait_for(self, ev: str, timeout: float) -> dict:
        return wait_until(lambda: (self.events(ev) or [None])[0], timeout, f"worker {self.name}: {ev}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def terminate(self) -> None:
        """SIGTERM: the worker commits what it processed, closes (LeaveGroup) and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        assert rc == 0, f"worker {self.name} exited {rc}: {self.stderr_path.read_text(errors='replace')[-2000:]}"
        assert self.events("closed"), f"worker {self.name} did not close"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def assert_no_commit_failures(*ws: Worker) -> None:
    for w in ws:
        assert not w.events("commit_failed"), f"worker {w.name}: {w.events('commit_failed')}"


# ------------------------------------------------------------------ 1. partitions split among members

@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_three_members_split_six_partitions_confluent(broker_factory, topic_name, strategy):
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 6)
    group = group_name()
    a = admin(b.bootstrap)
    members = [Member(b.bootstrap, group, topic_name, **{"partition.assignment.strategy": strategy}) for _ in range(3)]
    try:
        tick = poll_all(members)

        def settled():
            d = group_settled(a, group, 3, 6)
            mine = [m.assignment for m in members]
            if d is None or not all(mine):
                return None
            # Each consumer holds exactly what the coordinator says it was assigned.
            by_id = {dm.member_id: member_partitions(dm) for dm in d.members}
            if any(by_id.get(m.c.memberid()) != m.assignment for m in members):
                return None
            return d

        d = wait_until(settled, 30, f"group Stable with 3 members splitting 6 partitions ({strategy})", tick=tick)
        assert d.partition_assignor == strategy
        owner = {p: i for i, m in enumerate(members) for p in m.assignment}
        assert sorted(owner) == list(range(6))
        assert sum(len(m.assignment) for m in members) == 6, "assignments overlap"

        if strategy == "cooperative-sticky":
            # on_assign/on_revoke got increments; they add up to the current assignment.
            for m in members:
                current: set[int] = set()
                for kind, parts in m.events:
                    assert kind == "assign" or set(parts) <= current, (m.events, "revoked what it did not own")
                    current = current | set(parts) if kind == "assign" else current - set(parts)
                assert current == m.assignment, m.events

        written = produce(b.bootstrap, topic_name, 6, 50)
        before = [list(m.events) for m in members]
        wait_until(lambda: sum(len(m.records) for m in members) >= len(written), 30, "all records consumed", tick=tick)
        for _ in range(10):   # a little longer, to catch late duplicates
            tick()
        assert [m.events for m in members] == before, "a rebalance happened while consuming"

        got = Counter((p, o) for m in members for p, o, _ in m.records)
        assert set(got) == set(written), f"missing {sorted(set(written) - set(got))[:10]}"
        assert max(got.values()) == 1, f"read twice: {[k for k, n in got.items() if n > 1][:10]}"
        for i, m in enumerate(members):
            for p, o, v in m.records:
                assert owner[p] == i, f"member {i} read partition {p} owned by member {owner[p]}"
                assert v == written[(p, o)]
    finally:
        for m in members:
            m.close()


def test_three_members_split_six_partitions_kafka_python(broker_factory, topic_name):
    from kafka import KafkaConsumer

    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 6)
    group = group_name()
    a = admin(b.bootstrap)
    stop = threading.Event()
    lock = threading.Lock()
    assignments: list[set[int]] = [set(), set(), set()]
    records: list[list[tuple[int, int, str]]] = [[], [], []]
    failures: list[BaseException] = []

    def run(i: int):
        try:
            c = KafkaConsumer(
                topic_name, bootstrap_servers=b.bootstrap, group_id=group, client_id=f"kp-{i}",
                auto_offset_reset="earliest", enable_auto_commit=False,
                session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500, request_timeout_ms=15000,
            )
            try:
                while not stop.is_set():
                    batch = c.poll(timeout_ms=100)
                    with lock:
                        assignments[i] = {tp.partition for tp in c.assignment()}
                        for recs in batch.values():
                            records[i].extend((r.partition, r.offset, r.value.decode()) for r in recs)
            finally:
                c.close()
        except BaseException as e:   # reported by the main thread
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        def settled():
            assert not failures, failures
            d = group_settled(a, group, 3, 6)
            with lock:
                mine = [set(s) for s in assignments]
            if d is None or not all(mine):
                return None
            # What the coordinator assigned is what the consumers hold.
            if sorted(map(sorted, mine)) != sorted(sorted(member_partitions(m)) for m in d.members):
                return None
            return mine

        mine = wait_until(settled, 30, "kafka-python group Stable with 3 members splitting 6 partitions")
        assert sum(map(len, mine)) == 6 and set().union(*mine) == set(range(6))
        owner = {p: i for i, s in enumerate(mine) for p in s}

        written = produce(b.bootstrap, topic_name, 6, 50)

        def total():
            with lock:
                return sum(map(len, records))
        wait_until(lambda: total() >= len(written), 30, "all records consumed")
        time.sleep(0.5)   # catch late duplicates
        assert not failures, failures
        with lock:
            assert [set(s) for s in assignments] == mine, "a rebalance happened while consuming"
            got = Counter((p, o) for rs in records for p, o, _ in rs)
            assert set(got) == set(written), f"missing {sorted(set(written) - set(got))[:10]}"
            assert max(got.values()) == 1, f"read twice: {[k for k, n in got.items() if n > 1][:10]}"
            for i, rs in enumerate(records):
                for p, o, v in rs:
                    assert owner[p] == i and v == written[(p, o)]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a kafka-python consumer did not close"
    assert not failures, failures


# ------------------------------------------------------------------ 2. a member dies

def test_killed_member_partitions_move_and_its_uncommitted_tail_is_redelivered(broker_factory, topic_name, tmp_path, workers):
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 6)
    group = group_name()
    a = admin(b.bootstrap)
    # At-least-once members: process (print) each record, commit after every 5, and commit what
    # they processed when partitions are revoked. The victim stops after 13 records: 10 committed,
    # 3 processed but not committed; then it is killed.
    victim = Worker(tmp_path, "victim", b.bootstrap, topic_name, group,
                    mode="at-least-once", commit_every=5, stall_after_records=13)
    survivors = [Worker(tmp_path, f"survivor{i}", b.bootstrap, topic_name, group, mode="at-least-once", commit_every=5)
                 for i in range(2)]
    workers += [victim, *survivors]

    def settled():
        mine = [w.assignment() for w in workers]
        return group_settled(a, group, 3, 6) and all(mine) and sum(map(len, mine)) == 6
    wait_until(settled, 30, "3 workers splitting 6 partitions")
    victim_partitions = victim.assignment()

    written = produce(b.bootstrap, topic_name, 6, 30)
    victim.wait_for("stalled", 30)
    victim.kill9()
    killed_at = time.monotonic()
    committed = victim.committed()
    tail = {(p, o) for p, o, _ in victim.records() if o >= committed.get(p, 0)}
    assert len(tail) == 3, (victim.records(), committed)
    assert sum(committed.values()) == 10 and len(victim.records()) == 13

    def everything_read():
        return {(p, o) for w in workers for p, o, _ in w.records()} >= set(written)
    wait_until(everything_read, 45, "the victim's partitions to be read by the survivors")
    moved_after = time.monotonic() - killed_at
    assert set().union(*(w.assignment() for w in survivors)) == set(range(6))
    assert victim_partitions <= set().union(*(w.assignment() for w in survivors))
    d = wait_until(lambda: group_settled(a, group, 2, 6), 15, "group Stable with the 2 survivors")
    assert len(d.members) == 2

    for w in survivors:
        w.terminate()
    assert_no_commit_failures(victim, *survivors)
    got = Counter((p, o) for w in workers for p, o, _ in w.records())
    assert set(got) == set(written), f"skipped {sorted(set(written) - set(got))[:10]}"
    duplicates = {k for k, n in got.items() if n > 1}
    assert duplicates == tail, f"duplicates {sorted(duplicates)} != the victim's uncommitted tail {sorted(tail)}"
    assert all(got[k] == 2 for k in tail)
    for w in workers:
        for p, o, v in w.records():
            assert v == written[(p, o)]
    # Everything was committed in the end: the group's offsets are the log ends.
    assert committed_offsets(a, group, topic_name) == {p: 30 for p in range(6)}
    print(f"victim's partitions {sorted(victim_partitions)} were read again {moved_after:.1f}s after kill -9")


# ------------------------------------------------------------------ 3. at-least-once vs at-most-once

@pytest.mark.parametrize("mode", ["at-least-once", "at-most-once"])
def test_crash_between_process_and_commit(broker_factory, topic_name, tmp_path, workers, mode):
    """The same crash point, two orders of the same two steps.
    at-least-once (process, then commit): the crash re-delivers exactly the processed-but-uncommitted records.
    at-most-once (commit, then process): the crash loses exactly the committed-but-unprocessed records."""
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 2)
    group = group_name()
    a = admin(b.bootstrap)
    written = produce(b.bootstrap, topic_name, 2, 30)

    if mode == "at-least-once":
        first = Worker(tmp_path, "first", b.bootstrap, topic_name, group, mode=mode, commit_every=7, stall_after_records=17)
    else:
        first = Worker(tmp_path, "first", b.bootstrap, topic_name, group, mode=mode, batch=7, stall_after_commits=3)
    workers.append(first)
    first.wait_for("stalled", 30)
    first.kill9()

    commits = [e["offsets"] for e in first.events("committed")]
    processed = {(p, o) for p, o, _ in first.records()}
    if mode == "at-least-once":
        assert len(commits) == 2 and len(processed) == 17
        committed = first.committed()
        at_risk = {(p, o) for (p, o) in processed if o >= committed.get(p, 0)}      # processed, not committed
        assert len(at_risk) == 3
    else:
        assert len(commits) == 3
        before_last: dict[int, int] = {}
        for offsets in commits[:-1]:
            before_last.update(offsets)
        at_risk = {(p, o) for p, end in commits[-1].items() for o in range(before_last.get(p, 0), end)}
        assert len(at_risk) >= 1 and not (at_risk & processed), "the last committed batch was not processed"
        assert len(processed) == sum(before_last.values())

    second = Worker(tmp_path, "second", b.bootstrap, topic_name, group, mode=mode, batch=7, commit_every=7)
    workers.append(second)
    accounted = (lambda: {(p, o) for p, o, _ in first.records() + second.records()} | at_risk) if mode == "at-most-once" \
        else (lambda: {(p, o) for p, o, _ in first.records() + second.records()})
    wait_until(lambda: accounted() >= set(written), 30, "the second member to read to the end")
    second.terminate()
    assert_no_commit_failures(first, second)

    got = Counter((p, o) for p, o, _ in first.records() + second.records())
    if mode == "at-least-once":
        assert set(got) == set(written), "a record was skipped"
        assert {k for k, n in got.items() if n > 1} == at_risk, "duplicates other than the uncommitted tail"
        assert all(got[k] == 2 for k in at_risk)
    else:
        assert set(got) == set(written) - at_risk, "lost records other than the committed-but-unprocessed batch"
        assert max(got.values()) == 1, "an at-most-once record was delivered twice"
    assert committed_offsets(a, group, topic_name) == {0: 30, 1: 30}


# ------------------------------------------------------------------ 4. independent groups

def test_two_groups_read_one_topic_independently(broker_factory, topic_name):
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 3)
    a = admin(b.bootstrap)
    written = produce(b.bootstrap, topic_name, 3, 40)
    group_a, group_b = group_name(), group_name()

    def read_all(group: str, expect: set) -> Member:
        m = Member(b.bootstrap, group, topic_name)
        try:
            wait_until(lambda: {(p, o) for p, o, _ in m.records} >= expect, 30, f"{group} to read {len(expect)} records",
                       tick=poll_all([m]))
            for _ in range(5):
                m.poll(0.05)
            m.c.commit(asynchronous=False)
        finally:
            m.close()
        return m

    ma = read_all(group_a, set(written))
    # Group A has committed the whole topic; group B still starts from the beginning.
    mb = read_all(group_b, set(written))
    for m in (ma, mb):
        got = Counter((p, o) for p, o, _ in m.records)
        assert set(got) == set(written) and max(got.values()) == 1
    assert committed_offsets(a, group_a, topic_name) == {0: 40, 1: 40, 2: 40}
    assert committed_offsets(a, group_b, topic_name) == {0: 40, 1: 40, 2: 40}

    # A new member of group A resumes from A's offsets: it reads only what is new.
    more = produce(b.bootstrap, topic_name, 3, 5)
    new = set(more) - set(written)
    ma2 = read_all(group_a, new)
    assert sorted((p, o) for p, o, _ in ma2.records) == sorted(new)
    assert committed_offsets(a, group_a, topic_name) == {0: 45, 1: 45, 2: 45}
    assert committed_offsets(a, group_b, topic_name) == {0: 40, 1: 40, 2: 40}


# ------------------------------------------------------------------ 5. broker kill -9 mid-commit

def test_committed_offsets_survive_broker_kill9_mid_commit(broker_factory, topic_name, tmp_path, workers):
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 3)
    per_partition = 300
    # Small batches and small fetches, so the consumer moves through all partitions at once.
    written = produce(b.bootstrap, topic_name, 3, per_partition, flush_every=10)
    group = group_name()
    # Commits synchronously after every 2 records, ~3 ms per record: a steady stream of commits.
    w = Worker(tmp_path, "committer", b.bootstrap, topic_name, group, mode="at-least-once", commit_every=2,
               record_delay_s=0.003, conf={"max.partition.fetch.bytes": 1024})
    workers.append(w)
    wait_until(lambda: len(w.events("committed")) >= 40 and len(w.committed()) == 3, 30,
               "40 acknowledged commits, on every partition")
    b.kill9()
    w.kill9()
    assert len(w.records()) < len(written), "the worker finished before the broker was killed"

    acked = w.committed()
    attempted: dict[int, int] = {}
    for e in w.events("committing"):
        for p, o in e["offsets"].items():
            attempted[p] = max(attempted.get(p, o), o)

    b.restart()
    a = admin(b.bootstrap)
    m = Member(b.bootstrap, group, topic_name)
    try:
        # committed() asks the coordinator (OffsetFetch) before any partition is read.
        tps = m.c.committed([TopicPartition(topic_name, p) for p in range(3)], timeout=30)
        recovered = {tp.partition: tp.offset for tp in tps}
        for tp in tps:
            assert tp.error is None, tp
        for p in range(3):
            if p in attempted:
                assert acked.get(p, 0) <= recovered[p] <= attempted[p], \
                    f"partition {p}: committed {recovered[p]} outside [acknowledged {acked.get(p)}, attempted {attempted[p]}]"
            else:
                assert recovered[p] < 0, f"partition {p} was never committed but has offset {recovered[p]}"
        print(f"acknowledged {acked}, attempted {attempted}, recovered {recovered}")
        assert all(o > 0 for o in recovered.values()), "the test wants commits on every partition before the kill"
        assert committed_offsets(a, group, topic_name) == {p: o for p, o in recovered.items() if o >= 0}

        # The new member resumes from the recovered offsets: nothing skipped, nothing before them re-read.
        start = {p: max(recovered[p], 0) for p in range(3)}
        expect = {(p, o) for p in range(3) for o in range(start[p], per_partition)}
        wait_until(lambda: {(p, o) for p, o, _ in m.records} >= expect, 45, "the new member to read from the committed offsets",
                   tick=poll_all([m]))
        got = Counter((p, o) for p, o, _ in m.records)
        assert set(got) == expect and max(got.values()) == 1
        for p, o, v in m.records:
            assert v == written[(p, o)]
    finally:
        m.close()


# ------------------------------------------------------------------ 6. static membership

def test_static_member_restart_keeps_partitions_without_rebalance(broker_factory, topic_name):
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 4)
    group = group_name()
    a = admin(b.bootstrap)
    static = {"partition.assignment.strategy": "range"}
    first = Member(b.bootstrap, group, topic_name, **static, **{"group.instance.id": "static-a"})
    other = Member(b.bootstrap, group, topic_name, **static, **{"group.instance.id": "static-b"})
    members = [first, other]
    try:
        def settled():
            d = group_settled(a, group, 2, 4)
            return d if d and first.assignment and other.assignment else None
        d = wait_until(settled, 30, "2 static members splitting 4 partitions", tick=poll_all(members))
        assert {m.group_instance_id for m in d.members} == {"static-a", "static-b"}
        old_ids = {m.group_instance_id: m.member_id for m in d.members}
        generation = cgmd_generation(other.c)
        assert generation == cgmd_generation(first.c) and generation > 0
        first_partitions = first.assignment
        other_events = list(other.events)

        # A static member does not send LeaveGroup on close: its partitions stay reserved for it.
        first.close()
        for _ in range(5):
            other.poll(0.05)
        again = Member(b.bootstrap, group, topic_name, **static, **{"group.instance.id": "static-a"})
        members.append(again)
        wait_until(lambda: again.assignment, 15, "the restarted static member to get its partitions",
                   tick=poll_all([other, again]))
        assert again.assignment == first_partitions
        assert again.events == [("assign", sorted(first_partitions))]
        assert cgmd_generation(again.c) == generation, "the static member's rejoin started a new generation"

        # Past the old member's session timeout, still no rebalance: the old member id was replaced.
        deadline = time.monotonic() + SESSION_MS / 1000 + 2
        while time.monotonic() < deadline:
            poll_all([other, again])()
        assert other.events == other_events, f"the other member saw a rebalance: {other.events[len(other_events):]}"
        assert cgmd_generation(other.c) == generation
        d = describe(a, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 2
        by_instance = {m.group_instance_id: m for m in d.members}
        assert set(by_instance) == {"static-a", "static-b"}
        assert by_instance["static-a"].member_id != old_ids["static-a"], "the rejoined member kept its old member id"
        assert by_instance["static-b"].member_id == old_ids["static-b"]
        assert member_partitions(by_instance["static-a"]) == first_partitions
        assert member_partitions(by_instance["static-b"]) == other.assignment

        # Both keep consuming their own partitions.
        written = produce(b.bootstrap, topic_name, 4, 10)
        wait_until(lambda: len(other.records) + len(again.records) >= len(written), 20, "records after the restart",
                   tick=poll_all([other, again]))
        assert {p for p, _, _ in again.records} == first_partitions
        assert {p for p, _, _ in other.records} == other.assignment
    finally:
        for m in members:
            m.close()


# ------------------------------------------------------------------ 7. admin APIs

def test_admin_list_describe_offsets_delete_confluent(broker_factory, topic_name):
    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 3)
    a = admin(b.bootstrap)
    active, simple = group_name(), group_name()

    # A "simple" group: offsets committed by a consumer that never joins (manual assignment).
    s = Consumer({"bootstrap.servers": b.bootstrap, "group.id": simple, "enable.auto.commit": False})
    s.commit(offsets=[TopicPartition(topic_name, 0, 7)], asynchronous=False)
    s.close()

    members = [Member(b.bootstrap, active, topic_name, **{"partition.assignment.strategy": "range", "client.id": f"c{i}"})
               for i in range(2)]
    try:
        tick = poll_all(members)
        wait_until(lambda: group_settled(a, active, 2, 3) and all(m.assignment for m in members), 30,
                   "2 members splitting 3 partitions", tick=tick)
        written = produce(b.bootstrap, topic_name, 3, 10)
        wait_until(lambda: sum(len(m.records) for m in members) >= len(written), 30, "records", tick=tick)
        for m in members:
            m.c.commit(offsets=[TopicPartition(topic_name, p, 10) for p in m.assignment], asynchronous=False)

        listed = a.list_consumer_groups(request_timeout=10).result(timeout=15)
        assert not listed.errors
        by_id = {g.group_id: g for g in listed.valid}
        assert by_id[active].state == ConsumerGroupState.STABLE and not by_id[active].is_simple_consumer_group
        assert by_id[simple].state == ConsumerGroupState.EMPTY and by_id[simple].is_simple_consumer_group
        stable = a.list_consumer_groups(states={ConsumerGroupState.STABLE}, request_timeout=10).result(timeout=15)
        assert active in {g.group_id for g in stable.valid} and simple not in {g.group_id for g in stable.valid}
        empty = a.list_consumer_groups(states={ConsumerGroupState.EMPTY}, request_timeout=10).result(timeout=15)
        assert simple in {g.group_id for g in empty.valid} and active not in {g.group_id for g in empty.valid}

        d = describe(a, active)
        assert d.group_id == active and d.state == ConsumerGroupState.STABLE
        assert d.partition_assignor == "range" and not d.is_simple_consumer_group
        assert d.coordinator.id == 1
        assert sorted(m.client_id for m in d.members) == ["c0", "c1"]
        assert sorted(m.member_id for m in d.members) == sorted(m.c.memberid() for m in members)
        assert all(m.host for m in d.members)
        for dm in d.members:
            [mine] = [m for m in members if m.c.memberid() == dm.member_id]
            assert member_partitions(dm) == mine.assignment
            assert {tp.topic for tp in dm.assignment.topic_partitions} == {topic_name}
        ds = describe(a, simple)
        assert ds.state == ConsumerGroupState.EMPTY and ds.members == [] and ds.is_simple_consumer_group

        assert committed_offsets(a, active, topic_name) == {0: 10, 1: 10, 2: 10}
        assert committed_offsets(a, simple, topic_name) == {0: 7}
        # Only the requested partitions.
        [res] = a.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(active, [TopicPartition(topic_name, 1)])], request_timeout=10).values()
        assert [(tp.topic, tp.partition, tp.offset) for tp in res.result(timeout=15).topic_partitions] == [(topic_name, 1, 10)]

        # A group with members cannot be deleted.
        with pytest.raises(KafkaException) as e:
            a.delete_consumer_groups([active], request_timeout=10)[active].result(timeout=15)
        assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, e.value
        with pytest.raises(KafkaException) as e:
            a.delete_consumer_groups(["no-such-group"], request_timeout=10)["no-such-group"].result(timeout=15)
        assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e.value

        for m in members:   # close() sends LeaveGroup
            m.close()
        wait_until(lambda: describe(a, active).state == ConsumerGroupState.EMPTY, 10, "the group to be Empty")
        assert describe(a, active).members == []
        assert committed_offsets(a, active, topic_name) == {0: 10, 1: 10, 2: 10}, "offsets outlive the members"

        a.delete_consumer_groups([active, simple], request_timeout=10)[active].result(timeout=15)
        listed = {g.group_id for g in a.list_consumer_groups(request_timeout=10).result(timeout=15).valid}
        assert active not in listed and simple not in listed
        assert committed_offsets(a, active, topic_name) == {}
    finally:
        for m in members:
            m.close()


def test_admin_kafka_python(broker_factory, topic_name):
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient

    b = broker_factory(sets=FAST_GROUPS)
    create_topic(b.bootstrap, topic_name, 2)
    group = group_name()
    a = admin(b.bootstrap)
    members = [Member(b.bootstrap, group, topic_name, **{"partition.assignment.strategy": "roundrobin", "client.id": f"k{i}"})
               for i in range(2)]
    kadmin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=15000, client_id="keel-tests")
    try:
        tick = poll_all(members)
        wait_until(lambda: group_settled(a, group, 2, 2) and all(m.assignment for m in members), 30,
                   "2 members with one partition each", tick=tick)
        written = produce(b.bootstrap, topic_name, 2, 5)
        wait_until(lambda: sum(len(m.records) for m in members) >= len(written), 30, "records", tick=tick)
        for m in members:
            m.c.commit(offsets=[TopicPartition(topic_name, p, 5) for p in m.assignment], asynchronous=False)

        assert (group, "consumer") in kadmin.list_consumer_groups()

        [info] = kadmin.describe_consumer_groups([group])
        assert (info.error_code, info.group, info.state, info.protocol_type, info.protocol) == \
            (0, group, "Stable", "consumer", "roundrobin")
        assert sorted(m.client_id for m in info.members) == ["k0", "k1"]
        assigned = {}
        for km in info.members:
            assert km.member_metadata.topics == [topic_name]
            [(t, parts)] = km.member_assignment.assignment
            assert t == topic_name
            assigned[km.member_id] = set(parts)
        assert assigned == {m.c.memberid(): m.assignment for m in members}

        offsets = kadmin.list_consumer_group_offsets(group)
        assert {tp: om.offset for tp, om in offsets.items()} == {KTP(topic_name, 0): 5, KTP(topic_name, 1): 5}
        offsets = kadmin.list_consumer_group_offsets(group, partitions=[KTP(topic_name, 1)])
        assert {tp: om.offset for tp, om in offsets.items()} == {KTP(topic_name, 1): 5}
    finally:
        kadmin.close()
        for m in members:
            m.close()


def test_three_members_split_six_partitions_kip848(broker_factory, topic_name):
    """The consumer group protocol of KIP-848 (`group.protocol=consumer`): the broker assigns."""
    b = broker_factory(sets={**FAST_GROUPS, "group.consumer.heartbeat.interval.ms": "500"})
    create_topic(b.bootstrap, topic_name, 6)
    group = group_name()
    consumers = [
        Consumer({
            "bootstrap.servers": b.bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })
        for _ in range(3)
    ]
    records: list[list[tuple[int, int, str]]] = [[] for _ in consumers]
    try:
        for c in consumers:
            c.subscribe([topic_name])

        def tick():
            for i, c in enumerate(consumers):
                for m in c.consume(num_messages=1000, timeout=0.05):
                    assert m.error() is None, m.error()
                    records[i].append((m.partition(), m.offset(), m.value().decode()))

        def settled():
            parts = [{tp.partition for tp in c.assignment()} for c in consumers]
            if all(parts) and sum(len(p) for p in parts) == 6 and set().union(*parts) == set(range(6)):
                return parts
            return None

        parts = wait_until(settled, 60, "3 KIP-848 members share 6 partitions", tick=tick)
        written = produce(b.bootstrap, topic_name, 6, 50)
        wait_until(lambda: sum(len(r) for r in records) >= len(written), 30, "all records consumed", tick=tick)
        for _ in range(10):   # a little longer, to catch late duplicates
            tick()
        got = Counter((p, o) for r in records for p, o, _ in r)
        assert set(got) == set(written), f"missing {sorted(set(written) - set(got))[:10]}"
        assert max(got.values()) == 1, f"read twice: {[k for k, n in got.items() if n > 1][:10]}"
        for i, r in enumerate(records):
            for p, o, v in r:
                assert p in parts[i], f"member {i} read partition {p} it does not own"
                assert v == written[(p, o)]

        # Committed offsets carry the member epoch (OffsetCommit v9) and are visible to admins.
        for c in consumers:
            c.commit(asynchronous=False)
        a = admin(b.bootstrap)
        assert sum(committed_offsets(a, group, topic_name).values()) == len(written)
    finally:
        for c in consumers:
            c.close()
