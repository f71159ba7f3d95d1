"""Every record written by a real client comes back exactly once, in order, intact.

One 6-partition topic per (client, compression codec). Records are keyed; record i has
key `key-{i % KEYS}` and value `{i}-{seq}-vvv…` where seq is its sequence number for that key.
Reading all six partitions from offset 0 must give every i exactly once, offsets 0..n-1 in each
partition, i (hence each key's seq) increasing within a partition, and keys, values, headers
(including a repeated header key) and timestamps as written.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest
from confluent_kafka import Producer, TIMESTAMP_CREATE_TIME

from keel_helpers import consume_partitions, create_topic

PARTITIONS = 6
KEYS = 997
N_CONFLUENT = 100_000
N_KCAT = 100_000
# kafka-python is pure Python and roughly 10x slower than librdkafka on both ends;
# 20,000 records per codec keeps this file under ~4 minutes.
N_KAFKA_PYTHON = 20_000

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def key_of(i: int) -> bytes:
    return f"key-{i % KEYS}".encode()


def value_of(i: int) -> bytes:
    return f"{i}-{i // KEYS}-".encode() + b"v" * (i % 64)


def headers_of(i: int) -> list[tuple[str, bytes]]:
    # A repeated key is legal in Kafka and must survive the broker untouched.
    return [("i", str(i).encode()), ("dup", b"a"), ("dup", b"b")]


@dataclass
class Rec:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list
    ts_type: int | None
    ts: int


def verify(records: list[Rec], n: int, headers_of_i, ts_check) -> None:
    count = [0] * n
    by_partition: dict[int, list[Rec]] = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    for p, recs in sorted(by_partition.items()):
        offsets = [r.offset for r in recs]
        assert offsets == list(range(len(recs))), f"partition {p}: offsets not 0..{len(recs) - 1} in order"
        last_i = -1
        for r in recs:
            i_str, seq_str, _ = r.value.decode().split("-", 2)
            i, seq = int(i_str), int(seq_str)
            assert 0 <= i < n, f"partition {p} offset {r.offset}: unknown record {r.value!r}"
            assert r.value == value_of(i), f"partition {p} offset {r.offset}: value corrupted"
            assert r.key == key_of(i), f"partition {p} offset {r.offset}: key {r.key!r} != {key_of(i)!r}"
            assert seq == i // KEYS
            assert i > last_i, f"partition {p} offset {r.offset}: record {i} after {last_i} (per-key order broken)"
            last_i = i
            assert r.headers == headers_of_i(i), f"partition {p} offset {r.offset}: headers {r.headers}"
            ts_check(i, r)
            count[i] += 1
    missing = [i for i, c in enumerate(count) if c == 0]
    dupes = [i for i, c in enumerate(count) if c > 1]
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:10]}"
    assert not dupes, f"{len(dupes)} records duplicated, e.g. {dupes[:10]}"
    assert len(records) == n


def explicit_ts_check(base_ts: int):
    def check(i: int, r: Rec) -> None:
        assert r.ts_type == TIMESTAMP_CREATE_TIME, f"record {i}: timestamp type {r.ts_type}"
        assert r.ts == base_ts + i, f"record {i}: timestamp {r.ts} != {base_ts + i}"
    return check


def base_timestamp() -> int:
    # Explicit, distinct, in the recent past (future timestamps may be rejected).
    return int(time.time() * 1000) - 600_000


def read_back_confluent(bootstrap: str, topic: str) -> list[Rec]:
    msgs = consume_partitions(bootstrap, topic, range(PARTITIONS), timeout=120)
    return [
        Rec(m.partition(), m.offset(), m.key(), m.value(), m.headers() or [], m.timestamp()[0], m.timestamp()[1])
        for m in msgs
    ]


# ---------------------------------------------------------------- confluent-kafka

@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_roundtrip(shared_broker, topic_name, codec):
    create_topic(shared_broker.bootstrap, topic_name, PARTITIONS)
    base_ts = base_timestamp()
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    p = Producer({
        "bootstrap.servers": shared_broker.bootstrap,
        "compression.type": codec,
        "linger.ms": 20,
        "acks": "all",
        "enable.idempotence": False,
        "queue.buffering.max.messages": 200_000,
    })
    for i in range(N_CONFLUENT):
        while True:
            try:
                p.produce(topic_name, key=key_of(i), value=value_of(i), headers=headers_of(i),
                          timestamp=base_ts + i, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "records still undelivered after 60 s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"

    records = read_back_confluent(shared_broker.bootstrap, topic_name)
    verify(records, N_CONFLUENT, headers_of, explicit_ts_check(base_ts))


# ---------------------------------------------------------------- kafka-python

def kafka_python_has(codec: str) -> bool:
    from kafka import codec as kc
    return {
        "none": True, "gzip": kc.has_gzip(), "snappy": kc.has_snappy(), "lz4": kc.has_lz4(), "zstd": kc.has_zstd(),
    }[codec]


def read_back_kafka_python(bootstrap: str, topic: str, timeout: float = 120) -> list[Rec]:
    from kafka import KafkaConsumer, TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=30000)
    try:
        tps = [KTP(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Rec] = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"kafka-python consume timed out with {len(out)} records"
            for tp, recs in c.poll(timeout_ms=500, max_records=10000).items():
                for m in recs:
                    out.append(Rec(m.partition, m.offset, m.key, m.value, list(m.headers or []),
                                   m.timestamp_type + 1 if m.timestamp_type is not None else None, m.timestamp))
        return out
    finally:
        c.close()


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_roundtrip(shared_broker, topic_name, codec):
    from kafka import KafkaProducer

    if not kafka_python_has(codec):
        pytest.skip(f"kafka-python has no {codec} library installed")
    create_topic(shared_broker.bootstrap, topic_name, PARTITIONS)
    base_ts = base_timestamp()
    p = KafkaProducer(
        bootstrap_servers=shared_broker.bootstrap,
        compression_type=None if codec == "none" else codec,
        acks="all",
        linger_ms=20,
        retries=0,
        request_timeout_ms=30000,
    )
    try:
        futures = [
            p.send(topic_name, key=key_of(i), value=value_of(i), headers=headers_of(i), timestamp_ms=base_ts + i)
            for i in range(N_KAFKA_PYTHON)
        ]
        p.flush(timeout=120)
        failed = [f.exception for f in futures if not f.succeeded()]
        assert not failed, f"{len(failed)} sends failed, first: {failed[0]!r}"
    finally:
        p.close(timeout=10)

    # kafka-python's timestamp_type is 0 for CreateTime; Rec stores librdkafka's numbering (1).
    records = read_back_kafka_python(shared_broker.bootstrap, topic_name)
    verify(records, N_KAFKA_PYTHON, headers_of, explicit_ts_check(base_ts))


# ---------------------------------------------------------------- kcat

KCAT_HEADERS = [("src", b"kcat"), ("dup", b"a"), ("dup", b"b")]


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_roundtrip(shared_broker, topic_name, codec, tmp_path):
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed (scripts/test.sh installs it with apt-get)")
    create_topic(shared_broker.bootstrap, topic_name, PARTITIONS)

    # kcat cannot set per-record headers or timestamps: every record gets the same -H headers,
    # and its CreateTime must fall inside the produce window.
    src = tmp_path / "input.txt"
    with open(src, "wb") as f:
        for i in range(N_KCAT):
            f.write(key_of(i) + b":" + value_of(i) + b"\n")
    t0 = int(time.time() * 1000) - 1000
    with open(src, "rb") as stdin:
        produced = subprocess.run(
            [kcat, "-b", shared_broker.bootstrap, "-P", "-t", topic_name, "-K:", "-z", codec,
             *[arg for k, v in KCAT_HEADERS for arg in ("-H", f"{k}={v.decode()}")],
             "-X", "linger.ms=20", "-X", "acks=all"],
            stdin=stdin, capture_output=True, timeout=120,
        )
    t1 = int(time.time() * 1000) + 1000
    assert produced.returncode == 0, f"kcat -P failed: {produced.stderr.decode()[-2000:]}"

    consumed = subprocess.run(
        [kcat, "-b", shared_broker.bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-q",
         "-f", "%p|%o|%T|%k|%s|%h\\n"],
        capture_output=True, timeout=120,
    )
    assert consumed.returncode == 0, f"kcat -C failed: {consumed.stderr.decode()[-2000:]}"
    records = []
    for line in consumed.stdout.splitlines():
        p, o, ts, k, v, h = line.split(b"|", 5)
        headers = [(hk.decode(), hv) for hk, hv in (kv.split(b"=", 1) for kv in h.split(b","))] if h else []
        records.append(Rec(int(p), int(o), k, v, headers, TIMESTAMP_CREATE_TIME, int(ts)))
    # kcat interleaves partitions; verify() needs each partition's records in offset order, which
    # kcat preserves per partition.

    def ts_in_window(i, r):
        assert t0 <= r.ts <= t1, f"record {i}: timestamp {r.ts} outside produce window [{t0}, {t1}]"

    verify(records, N_KCAT, lambda i: KCAT_HEADERS, ts_in_window)
