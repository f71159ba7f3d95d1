"""Fetch long polling: a consumer waiting on an empty partition gets a new record at once.

The consumer asks the broker to wait up to 5 s (fetch.wait.max.ms=5000). A broker that only
answers when max_wait expires would deliver after ~5 s; one that wakes the parked fetch when
data arrives delivers within a few milliseconds of the produce being acknowledged.
"""

from __future__ import annotations

import statistics
import threading
import time

from confluent_kafka import KafkaError, Producer, TopicPartition

from keel_helpers import consumer, create_topic, is_group_coordinator_noise

TRIALS = 7
MAX_MEDIAN_LATENCY_S = 0.100


def test_parked_fetch_wakes_up_on_produce(shared_broker, topic_name):
    create_topic(shared_broker.bootstrap, topic_name, 1)
    c = consumer(shared_broker.bootstrap, **{"fetch.wait.max.ms": 5000, "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic_name, 0, 0)])
    arrivals: dict[int, float] = {}
    errors = []
    stop = threading.Event()

    def poll_loop():
        while not stop.is_set():
            m = c.poll(0.01)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF and not is_group_coordinator_noise(m):
                    errors.append(m.error())
                continue
            arrivals[int(m.value())] = time.monotonic()

    t = threading.Thread(target=poll_loop, daemon=True)
    t.start()
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": False})
    delivered: dict[int, float] = {}
    latencies = []
    try:
        p.list_topics(topic_name, timeout=10)   # connect before the first trial
        for trial in range(TRIALS):
            time.sleep(1.0)   # let the consumer's fetch park on the (empty) log end
            p.produce(topic_name, value=str(trial).encode(), partition=0,
                      on_delivery=lambda err, msg, n=trial: delivered.__setitem__(n, time.monotonic()) if err is None else errors.append(err))
            assert p.flush(10) == 0
            assert trial in delivered, f"trial {trial}: not delivered: {errors}"
            deadline = time.monotonic() + 10
            while trial not in arrivals and time.monotonic() < deadline:
                time.sleep(0.001)
            assert trial in arrivals, f"trial {trial}: record not consumed within 10 s (errors: {errors})"
            latencies.append(arrivals[trial] - delivered[trial])
    finally:
        stop.set()
        t.join(timeout=10)
        c.close()
    assert not errors, errors
    median = statistics.median(latencies)
    print(f"produce-ack -> consume latencies (ms): {[round(x * 1000, 1) for x in latencies]}")
    assert median <= MAX_MEDIAN_LATENCY_S, (
        f"median latency {median * 1000:.0f} ms > {MAX_MEDIAN_LATENCY_S * 1000:.0f} ms: "
        f"the parked fetch is not woken by the produce ({[round(x * 1000) for x in latencies]} ms)"
    )
