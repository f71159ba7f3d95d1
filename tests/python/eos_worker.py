"""An exactly-once consume-transform-produce app in its own process, so a test can kill -9 it.

    python eos_worker.py <bootstrap> <input topic> <output topic> <group> <transactional id>

It reads the input with read_committed, writes each record's value + "-out" to the output
topic (same partition), and commits the consumed offsets in the same transaction
(`send_offsets_to_transaction`). Whatever the crash point, each input record appears in the
output exactly once for read_committed readers. It runs until killed; a fatal client error
makes it exit with status 3 so the supervisor starts a new instance (which fences the old
transactional id).
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer, KafkaException, Producer


def main() -> int:
    bootstrap, input_topic, output_topic, group, transactional_id = sys.argv[1:6]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.instance.id": "eos-worker",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "socket.timeout.ms": 10000,
    })
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": 10000,
        "socket.timeout.ms": 10000,
        "linger.ms": 5,
    })
    producer.init_transactions(60)
    consumer.subscribe([input_topic])
    while True:
        records = consumer.consume(200, timeout=0.5)
        records = [m for m in records if m.error() is None]
        if not records:
            continue
        try:
            producer.begin_transaction()
            for m in records:
                producer.produce(output_topic, key=m.key(), value=m.value() + b"-out", partition=m.partition())
            producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                 consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
        except KafkaException as e:
            error = e.args[0]
            if error.txn_requires_abort():
                producer.abort_transaction(30)
                # Rewind to the committed offsets so the aborted records are read again.
                for tp in consumer.committed(consumer.assignment(), timeout=30):
                    if tp.offset >= 0:
                        consumer.seek(tp)
                continue
            print(f"fatal: {error}", file=sys.stderr, flush=True)
            return 3


if __name__ == "__main__":
    sys.exit(main())
