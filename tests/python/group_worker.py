"""A consumer-group member in its own process, so a test can kill -9 it.

    python group_worker.py '<json spec>'

The spec: bootstrap, topic, group, mode ("at-least-once" or "at-most-once"), and optionally
commit_every (at-least-once: commit after every N processed records), batch (at-most-once:
records per consume() call), stall_after_records (at-least-once: after processing that many
records, stop without committing them), stall_after_commits (at-most-once: after that many
commits, stop before processing the batch just committed), record_delay_s, conf (extra
librdkafka settings).

"Processing" a record means printing it. Every event is one JSON line on stdout, flushed:
  {"ev": "assigned", "partitions": [...]}      the full assignment after a rebalance
  {"ev": "revoked", "partitions": [...]}
  {"ev": "record", "p": p, "o": o, "v": "..."}  the record was processed
  {"ev": "committing", "offsets": {p: next}}    an OffsetCommit is about to be sent
  {"ev": "committed", "offsets": {p: next}}     ... and the broker acknowledged it
  {"ev": "commit_failed", "error": "..."}
  {"ev": "stalled"}                              the simulated crash point: nothing more happens
  {"ev": "closed"}                               after SIGTERM: consumer closed (LeaveGroup sent)

The two delivery semantics come from the same two primitives, only their order differs:
at-least-once processes, then commits (a crash in between re-delivers the processed tail);
at-most-once commits, then processes (a crash in between loses the committed batch).
"""

from __future__ import annotations

import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def stall() -> None:
    emit(ev="stalled")
    while True:        # the test kill -9s us here
        time.sleep(3600)


def main() -> None:
    spec = json.loads(sys.argv[1])
    topic = spec["topic"]
    mode = spec["mode"]
    assert mode in ("at-least-once", "at-most-once"), mode
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    conf = {
        "bootstrap.servers": spec["bootstrap"],
        "group.id": spec["group"],
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "socket.timeout.ms": 10000,
        "partition.assignment.strategy": "range",
    }
    conf.update(spec.get("conf", {}))
    c = Consumer(conf)
    uncommitted: dict[int, int] = {}   # partition -> next offset, processed but not committed

    def commit(offsets: dict[int, int]) -> bool:
        if not offsets:
            return True
        emit(ev="committing", offsets=offsets)
        try:
            res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        except KafkaException as e:
            emit(ev="commit_failed", error=str(e))
            return False
        errors = [f"{tp.partition}: {tp.error}" for tp in res if tp.error is not None]
        if errors:
            emit(ev="commit_failed", error="; ".join(errors))
            return False
        emit(ev="committed", offsets=offsets)
        return True

    def on_assign(consumer, partitions):
        emit(ev="assigned", partitions=sorted(tp.partition for tp in partitions))

    def on_revoke(consumer, partitions):
        revoked = {tp.partition for tp in partitions}
        # At-least-once: what was processed must be committed before someone else owns it.
        if commit({p: o for p, o in uncommitted.items() if p in revoked}):
            for p in revoked:
                uncommitted.pop(p, None)
        emit(ev="revoked", partitions=sorted(revoked))

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    processed = commits = 0
    record_delay = spec.get("record_delay_s", 0)
    while not stopping:
        msgs = c.consume(num_messages=spec.get("batch", 100), timeout=0.2)
        msgs = [m for m in msgs if m.error() is None]   # errors (e.g. broker down) are retried by librdkafka
        if not msgs:
            continue
        if mode == "at-most-once":
            batch = {}
            for m in msgs:
                batch[m.partition()] = max(batch.get(m.partition(), 0), m.offset() + 1)
            if commit(batch):
                commits += 1
                if commits == spec.get("stall_after_commits"):
                    stall()
            for m in msgs:
                emit(ev="record", p=m.partition(), o=m.offset(), v=m.value().decode())
                time.sleep(record_delay)
        else:
            for m in msgs:
                emit(ev="record", p=m.partition(), o=m.offset(), v=m.value().decode())
                time.sleep(record_delay)
                uncommitted[m.partition()] = m.offset() + 1
                processed += 1
                if processed == spec.get("stall_after_records"):
                    stall()
                if processed % spec.get("commit_every", 1) == 0 and commit(dict(uncommitted)):
                    uncommitted.clear()
    commit(dict(uncommitted))
    c.close()
    emit(ev="closed")


if __name__ == "__main__":
    main()
