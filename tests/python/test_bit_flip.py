"""A flipped bit in a stored batch is caught by the batch's CRC-32C, never served as good data.

The broker is stopped, one byte inside the records of a stored batch is flipped in the
segment file, and the broker is started again:

- after kill -9 (unclean: recovery re-validates every batch after the recovery point, here
  the whole log), recovery cuts the log at the corrupt batch as Kafka's recovery does: the
  batches before it are served intact, nothing from it on is served, later segments are
  deleted, and new records continue from the cut;
- after a clean shutdown (recovery trusts the segments and does not scan them; Kafka's broker
  does not check CRCs on fetch either), a consumer with check.crcs=true gets an error at the
  corrupt batch instead of its records, the records before it are intact, and the broker
  keeps serving.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from confluent_kafka import KafkaError, Producer, TopicPartition

from keel_helpers import consumer, consume_partitions, create_topic

RECORDS = 3000
RECORD_BYTES = 200
# A few segments: the corruption is placed in a closed one and in the active one.
SEGMENT_BYTES = 64 << 10
# No recovery-point checkpoint during the test: an unclean restart re-validates everything.
SETS = {"log.flush.offset.checkpoint.interval.ms": "3600000"}


def value_of(seq: int) -> bytes:
    head = f"{seq:08d}".encode()
    return head + bytes((seq + i) % 251 for i in range(RECORD_BYTES - len(head)))


def produce(bootstrap: str, topic: str, first: int, count: int) -> dict[int, int]:
    """seq -> offset of each acknowledged record (acks=all); every record must be acknowledged."""
    acked: dict[int, int] = {}
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.num.messages": 20,
                  "enable.idempotence": False})

    def on_delivery(err, msg):
        if err is None:
            acked[int(msg.value()[:8])] = msg.offset()
        else:
            errors.append(err)

    for seq in range(first, first + count):
        p.produce(topic, value=value_of(seq), partition=0, on_delivery=on_delivery)
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors[:3]
    return acked


def segment_files(data_dir: Path, topic: str) -> list[Path]:
    return sorted((data_dir / f"{topic}-0").glob("*.log"))


def batches(path: Path) -> list[tuple[int, int, int]]:
    """(position, base offset, size) of each batch in a segment file."""
    data = path.read_bytes()
    out = []
    position = 0
    while position + 12 <= len(data):
        base_offset, length = struct.unpack(">qi", data[position:position + 12])
        out.append((position, base_offset, length + 12))
        position += length + 12
    assert position == len(data), f"{path} does not end at a batch boundary"
    return out


def flip_inside_batch(path: Path, which: int) -> int:
    """Flips one byte in the records of batch number `which` of `path`; returns its base offset."""
    position, base_offset, size = batches(path)[which]
    at = position + 61 + (size - 61) // 2  # past the 61-byte header: covered by the CRC only
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    return base_offset


def check_prefix(records, acked: dict[int, int], end: int) -> None:
    """`records` are exactly the acknowledged records at offsets [0, end), intact."""
    by_offset = {offset: seq for seq, offset in acked.items()}
    assert [m.offset() for m in records] == list(range(end))
    for m in records:
        assert m.value() == value_of(by_offset[m.offset()]), f"record at {m.offset()} differs"


def high_watermark(bootstrap: str, topic: str) -> int:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def setup(broker_factory, topic: str):
    broker = broker_factory(sets=SETS)
    create_topic(broker.bootstrap, topic, config={"segment.bytes": str(SEGMENT_BYTES)})
    acked = produce(broker.bootstrap, topic, 0, RECORDS)
    assert sorted(acked.values()) == list(range(RECORDS))
    assert len(segment_files(broker.data_dir, topic)) >= 3
    return broker, acked


def test_recovery_cuts_the_log_at_a_flipped_byte_in_the_active_segment(broker_factory, topic_name):
    broker, acked = setup(broker_factory, topic_name)
    broker.kill9()
    active = segment_files(broker.data_dir, topic_name)[-1]
    cut = flip_inside_batch(active, len(batches(active)) // 2)
    broker.restart()
    assert high_watermark(broker.bootstrap, topic_name) == cut
    check_prefix(consume_partitions(broker.bootstrap, topic_name, [0], **{"check.crcs": True}), acked, cut)
    more = produce(broker.bootstrap, topic_name, RECORDS, 50)
    assert sorted(more.values()) == list(range(cut, cut + 50))


def test_recovery_cuts_the_log_at_a_flipped_byte_in_a_closed_segment(broker_factory, topic_name):
    broker, acked = setup(broker_factory, topic_name)
    broker.kill9()
    files = segment_files(broker.data_dir, topic_name)
    cut = flip_inside_batch(files[0], 3)
    broker.restart()
    # As Kafka's recovery: the corrupt batch and everything after it go, later segments too.
    assert high_watermark(broker.bootstrap, topic_name) == cut
    assert segment_files(broker.data_dir, topic_name) == files[:1]
    check_prefix(consume_partitions(broker.bootstrap, topic_name, [0], **{"check.crcs": True}), acked, cut)


def read_until_error(bootstrap: str, topic: str, timeout: float = 30):
    """Reads from offset 0 with check.crcs=true until the first error; returns (records, error)."""
    c = consumer(bootstrap, **{"check.crcs": True})
    records = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                err = m.error()
                if err is None:
                    records.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    return records, None
                elif m.topic() is None and "coordinator" in err.str().lower():
                    continue
                else:
                    return records, err
        raise AssertionError(f"no error and no end of partition after {timeout}s; {len(records)} records")
    finally:
        c.close()


def test_a_flipped_byte_after_a_clean_shutdown_is_reported_by_crc_checking_clients(broker_factory, topic_name):
    broker, acked = setup(broker_factory, topic_name)
    broker.terminate()
    files = segment_files(broker.data_dir, topic_name)
    closed_cut = flip_inside_batch(files[0], 3)
    flip_inside_batch(files[-1], len(batches(files[-1])) // 2)
    broker.restart()
    # A clean shutdown: recovery does not scan, the log keeps its end.
    assert high_watermark(broker.bootstrap, topic_name) == RECORDS
    records, error = read_until_error(broker.bootstrap, topic_name)
    assert error is not None, "the corrupt batch was delivered as data"
    print(f"consumer error: {error}")
    assert error.code() == KafkaError._BAD_MSG, error
    assert "crc" in error.str().lower()
    # Everything delivered before the error is intact and stops before the corrupt batch.
    assert records and records[-1].offset() < closed_cut
    check_prefix(records, acked, len(records))
    assert broker.proc.poll() is None, "the broker died serving a corrupt batch"
    # The broker still takes writes and serves other offsets.
    produce(broker.bootstrap, topic_name, RECORDS, 10)
