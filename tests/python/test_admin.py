"""The admin API through confluent-kafka's AdminClient (librdkafka).

Topic configs: a config set on the topic reports source DYNAMIC_TOPIC_CONFIG (TOPIC_CONFIG on
the wire), an unset one the Kafka default with source DEFAULT_CONFIG, or STATIC_BROKER_CONFIG
when the broker was started with the matching broker config.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from keel_helpers import admin, consume_partitions, consumer, create_topic, tiny_segment_bytes, wait_for_topic

T = 15  # seconds: every admin call is bounded

KAFKA_TOPIC_DEFAULTS = {
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "cleanup.policy": "delete",
    "max.message.bytes": "1048588",
}


def source(entry) -> ConfigSource:
    return ConfigSource(getattr(entry.source, "value", entry.source))


def describe_topic(a, name: str) -> dict:
    res = ConfigResource(ResourceType.TOPIC, name)
    return a.describe_configs([res], request_timeout=T)[res].result(timeout=T)


def error_code(excinfo) -> int:
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), excinfo.value
    return err.code()


def topic_names(a) -> set[str]:
    return set(a.list_topics(timeout=T).topics)


def test_create_topic_validate_only_creates_nothing(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    fs = a.create_topics([NewTopic(topic_name, 3, 1, config={"retention.ms": "3600000"})], validate_only=True, request_timeout=T)
    fs[topic_name].result(timeout=T)
    assert topic_name not in topic_names(a)


def test_create_topic_with_configs_then_describe(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 3, config={"retention.ms": "3600000", "cleanup.policy": "compact"})
    md = a.list_topics(timeout=T).topics[topic_name]
    assert sorted(md.partitions) == [0, 1, 2]
    assert all(p.leader == 1 and p.replicas == [1] and p.isrs == [1] for p in md.partitions.values())

    configs = describe_topic(a, topic_name)
    for name in ["retention.ms", "segment.bytes", "cleanup.policy", "max.message.bytes"]:
        assert name in configs, f"{name} missing from DescribeConfigs"
    assert (configs["retention.ms"].value, source(configs["retention.ms"])) == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert (configs["cleanup.policy"].value, source(configs["cleanup.policy"])) == ("compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    for name in ["segment.bytes", "max.message.bytes"]:
        if name == "segment.bytes" and tiny_segment_bytes():
            # The tiny-segment switch sets log.segment.bytes, which the topic inherits.
            expected = (str(tiny_segment_bytes()), ConfigSource.STATIC_BROKER_CONFIG)
        else:
            expected = (KAFKA_TOPIC_DEFAULTS[name], ConfigSource.DEFAULT_CONFIG)
        assert (configs[name].value, source(configs[name])) == expected, name
        assert configs[name].is_default == (expected[1] == ConfigSource.DEFAULT_CONFIG)


def test_describe_broker_configs(shared_broker):
    a = admin(shared_broker.bootstrap)
    res = ConfigResource(ResourceType.BROKER, "1")
    configs = a.describe_configs([res], request_timeout=T)[res].result(timeout=T)
    for name in ["num.partitions", "auto.create.topics.enable", "log.segment.bytes", "message.max.bytes", "log.retention.hours"]:
        assert name in configs, f"broker config {name} missing"
    assert configs["auto.create.topics.enable"].value == "true"
    assert configs["num.partitions"].value == "1"


def test_broker_configs_from_command_line(broker_factory, topic_name):
    b = broker_factory(sets={"num.partitions": "3", "log.segment.bytes": "1048576"})
    a = admin(b.bootstrap)
    res = ConfigResource(ResourceType.BROKER, "1")
    configs = a.describe_configs([res], request_timeout=T)[res].result(timeout=T)
    assert (configs["num.partitions"].value, source(configs["num.partitions"])) == ("3", ConfigSource.STATIC_BROKER_CONFIG)

    # auto-creation (Metadata from a producer) uses num.partitions
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": False})
    p.produce(topic_name, value=b"x")
    assert p.flush(T) == 0
    wait_for_topic(b.bootstrap, topic_name, 3, timeout=T)
    # the topic inherits the broker's log.segment.bytes as segment.bytes
    seg = describe_topic(a, topic_name)["segment.bytes"]
    assert (seg.value, source(seg)) == ("1048576", ConfigSource.STATIC_BROKER_CONFIG)


def test_incremental_alter_configs_set_and_delete(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"cleanup.policy": "compact"})
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    a.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    configs = describe_topic(a, topic_name)
    assert (configs["retention.ms"].value, source(configs["retention.ms"])) == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert (configs["cleanup.policy"].value, source(configs["cleanup.policy"])) == ("delete", ConfigSource.DEFAULT_CONFIG)


def test_alter_configs_replaces_the_whole_topic_config(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 1, config={"max.message.bytes": "2000000"})
    res = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.ms": "5000"})
    a.alter_configs([res], request_timeout=T)[res].result(timeout=T)
    configs = describe_topic(a, topic_name)
    assert (configs["retention.ms"].value, source(configs["retention.ms"])) == ("5000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # legacy AlterConfigs is not incremental: configs not listed go back to their defaults
    mmb = configs["max.message.bytes"]
    assert (mmb.value, source(mmb)) == (KAFKA_TOPIC_DEFAULTS["max.message.bytes"], ConfigSource.DEFAULT_CONFIG)


def test_invalid_config_values_are_rejected(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    for config in [{"retention.ms": "not-a-number"}, {"no.such.config": "1"}, {"cleanup.policy": "sometimes"}]:
        fs = a.create_topics([NewTopic(topic_name, 1, 1, config=config)], request_timeout=T)
        with pytest.raises(KafkaException) as e:
            fs[topic_name].result(timeout=T)
        assert error_code(e) == KafkaError.INVALID_CONFIG, (config, e.value)
    assert topic_name not in topic_names(a)


def test_create_partitions(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 2)
    a.create_partitions([NewPartitions(topic_name, 5)], request_timeout=T)[topic_name].result(timeout=T)
    wait_for_topic(shared_broker.bootstrap, topic_name, 5, timeout=T)
    # the new partitions are usable
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "enable.idempotence": False, "topic.metadata.refresh.interval.ms": 500})
    p.produce(topic_name, value=b"in-4", partition=4)
    assert p.flush(T) == 0
    assert [m.value() for m in consume_partitions(shared_broker.bootstrap, topic_name, [4], timeout=T)] == [b"in-4"]

    for fewer_or_same in [2, 5]:
        fs = a.create_partitions([NewPartitions(topic_name, fewer_or_same)], request_timeout=T)
        with pytest.raises(KafkaException) as e:
            fs[topic_name].result(timeout=T)
        assert error_code(e) == KafkaError.INVALID_PARTITIONS, e.value
    assert len(a.list_topics(timeout=T).topics[topic_name].partitions) == 5


def test_describe_cluster(shared_broker):
    a = admin(shared_broker.bootstrap)
    c = a.describe_cluster(request_timeout=T).result(timeout=T)
    assert [(n.id, n.host, n.port) for n in c.nodes] == [(1, "127.0.0.1", shared_broker.port)]
    assert c.controller is not None and c.controller.id == 1
    assert isinstance(c.cluster_id, str) and c.cluster_id
    assert a.list_topics(timeout=T).cluster_id == c.cluster_id


def test_broker_rack_is_registered_and_reported(broker_factory):
    b = broker_factory(sets={"broker.rack": "rack-a"})
    a = admin(b.bootstrap)
    c = a.describe_cluster(request_timeout=T).result(timeout=T)
    assert [(n.id, n.rack) for n in c.nodes] == [(1, "rack-a")]
    # A restart with another rack registers the broker again.
    b.terminate()
    b.sets["broker.rack"] = "rack-b"
    b.restart()
    a = admin(b.bootstrap)
    c = a.describe_cluster(request_timeout=T).result(timeout=T)
    assert [(n.id, n.rack) for n in c.nodes] == [(1, "rack-b")]


def test_delete_records_moves_the_low_watermark(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 1)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "enable.idempotence": False})
    for i in range(10):
        p.produce(topic_name, value=str(i).encode(), partition=0)
        p.flush(T)   # one batch per record, so the cut falls between batches and inside none
    tp = TopicPartition(topic_name, 0, 4)
    deleted = a.delete_records([tp], request_timeout=T, operation_timeout=T)[tp].result(timeout=T)
    assert deleted.low_watermark == 4
    c = consumer(shared_broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=T, cached=False) == (4, 10)
    finally:
        c.close()
    msgs = consume_partitions(shared_broker.bootstrap, topic_name, [0], timeout=T)
    assert [(m.offset(), m.value()) for m in msgs] == [(o, str(o).encode()) for o in range(4, 10)]

    # deleting beyond the high watermark is OFFSET_OUT_OF_RANGE
    tp = TopicPartition(topic_name, 0, 11)
    with pytest.raises(KafkaException) as e:
        a.delete_records([tp], request_timeout=T, operation_timeout=T)[tp].result(timeout=T)
    assert error_code(e) == KafkaError.OFFSET_OUT_OF_RANGE


def test_delete_topic(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 2)
    a.delete_topics([topic_name], request_timeout=T, operation_timeout=T)[topic_name].result(timeout=T)
    assert topic_name not in topic_names(a)
    fs = a.delete_topics([topic_name], request_timeout=T, operation_timeout=T)
    with pytest.raises(KafkaException) as e:
        fs[topic_name].result(timeout=T)
    assert error_code(e) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_existing_topic_fails(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name, 1)
    fs = a.create_topics([NewTopic(topic_name, 1, 1)], request_timeout=T)
    with pytest.raises(KafkaException) as e:
        fs[topic_name].result(timeout=T)
    assert error_code(e) == KafkaError.TOPIC_ALREADY_EXISTS


def test_replication_factor_above_broker_count_fails(shared_broker, topic_name):
    a = admin(shared_broker.bootstrap)
    fs = a.create_topics([NewTopic(topic_name, 1, 3)], request_timeout=T)
    with pytest.raises(KafkaException) as e:
        fs[topic_name].result(timeout=T)
    assert error_code(e) == KafkaError.INVALID_REPLICATION_FACTOR
    assert topic_name not in topic_names(a)


@pytest.mark.parametrize("bad_name", ["bad name!", "a/b", ".", "..", "x" * 250])
def test_invalid_topic_name_fails(shared_broker, bad_name):
    a = admin(shared_broker.bootstrap)
    fs = a.create_topics([NewTopic(bad_name, 1, 1)], request_timeout=T)
    with pytest.raises(KafkaException) as e:
        fs[bad_name].result(timeout=T)
    assert error_code(e) == KafkaError.TOPIC_EXCEPTION   # INVALID_TOPIC_EXCEPTION (17)
