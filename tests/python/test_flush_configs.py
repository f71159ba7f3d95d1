"""`flush.messages` / `flush.ms`: Keel's default fsync-before-ack against Kafka's page-cache mode.

Which offsets were fsynced is read from the broker's `recovery-point-offset-checkpoint`
(every offset below a log's recovery point was fsynced), written every 100 ms here. Three
topics get the same acks=all records:

- defaults (neither config set): every acknowledged record was fsynced before its answer;
- `flush.ms=3600000` (page-cache mode, a flush an hour after the last one): acks=all is
  answered without an fsync, so the recovery point stays at 0 while the records are there;
- `flush.messages=1` (Kafka's fsync on every append): fsynced before each answer.

Then `flush.ms` is lowered with IncrementalAlterConfigs and the background flusher fsyncs the
page-cache topic by itself.
"""

from __future__ import annotations

import time

from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from keel_helpers import admin, create_topic

RECORDS = 500


def produce_acks_all(bootstrap: str, topic: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    errors = []
    for i in range(RECORDS):
        p.produce(topic, value=b"%d" % i, partition=0, on_delivery=lambda err, _: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors[:3]


def recovery_points(broker) -> dict[str, int]:
    path = broker.data_dir / "recovery-point-offset-checkpoint"
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()[2:]
    return {f"{t}-{p}": int(o) for t, p, o in (line.split() for line in lines)}


def wait_for(condition, what: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_flush_configs_choose_between_fsync_on_ack_and_page_cache(broker_factory, topic_name):
    broker = broker_factory(sets={"log.flush.offset.checkpoint.interval.ms": "100"})
    topics = {
        "default": (f"{topic_name}-d", {}),
        "page-cache": (f"{topic_name}-p", {"flush.ms": "3600000"}),
        "every-message": (f"{topic_name}-m", {"flush.messages": "1"}),
    }
    for name, config in topics.values():
        create_topic(broker.bootstrap, name, config=config)
        produce_acks_all(broker.bootstrap, name)
    durable = {key: f"{name}-0" for key, (name, _) in topics.items()}

    def checkpointed(key: str, offset: int):
        return lambda: recovery_points(broker).get(durable[key]) == offset

    wait_for(checkpointed("default", RECORDS), "the default topic's recovery point")
    wait_for(checkpointed("every-message", RECORDS), "the flush.messages=1 topic's recovery point")
    # The page-cache topic's records were acknowledged without an fsync, and none followed.
    assert recovery_points(broker)[durable["page-cache"]] == 0

    page_cache_topic = topics["page-cache"][0]
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, page_cache_topic,
        incremental_configs=[ConfigEntry("flush.ms", "200", incremental_operation=AlterConfigOpType.SET)],
    )
    client = admin(broker.bootstrap)
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    wait_for(checkpointed("page-cache", RECORDS), "the background flush of the page-cache topic")
