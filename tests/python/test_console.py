"""The web console end to end: headless Chromium (driven by Playwright) on the broker's HTTP port,
with real Kafka clients (confluent-kafka) producing, consuming and checking what the UI did.

Chromium is Debian's (/usr/bin/chromium, installed by scripts/test.sh); Playwright only drives it
and never downloads a browser. Every wait is bounded (Playwright's default timeout and explicit
deadlines).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from keel_helpers import admin, create_topic, wait_for_topic

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_TIMEOUT_MS = 15_000
PARTITIONS = 2
PER_PARTITION = 10
JSON_VALUE = {"order": 42, "items": ["tea", "milk"], "paid": True}


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"chromium is not installed at {CHROMIUM} (scripts/test.sh installs it with apt-get)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed (pip install -r tests/python/requirements.txt)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        except Exception as e:  # a browser that cannot start fails the test, it never skips
            pytest.fail(f"cannot start {CHROMIUM}: {e}")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Nothing may be loaded from anywhere but the broker.
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(("http://127.0.0.1:", "data:")) else None)
            yield page
            assert errors == [], f"JavaScript errors in the console: {errors}"
            assert outside == [], f"the console loaded from elsewhere: {outside}"
        finally:
            browser.close()


def produce(bootstrap: str, topic: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for partition in range(PARTITIONS):
        for i in range(PER_PARTITION):
            if partition == 0 and i == 0:
                value = json.dumps(JSON_VALUE, separators=(",", ":")).encode()
                headers = [("trace-id", b"abc-123")]
            else:
                value = f"plain value {partition}-{i}".encode()
                headers = []
            p.produce(topic, key=f"key-{partition}-{i}".encode(), value=value, headers=headers, partition=partition)
    assert p.flush(30) == 0, "records left unsent"


def consume_and_commit_part(bootstrap: str, topic: str, group: str) -> Consumer:
    """A group member that reads everything and commits 4 of partition 0 and all of partition 1."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 45000,
    })
    c.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < PARTITIONS * PER_PARTITION:
        assert time.monotonic() < deadline, f"consumed only {seen} records in 60 s"
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            seen += 1
    c.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, PER_PARTITION)], asynchronous=False)
    return c


def test_console_end_to_end(broker, page, topic_name):
    topic = topic_name[-60:].lstrip("-_")
    group = f"console-group-{topic[-8:]}"
    page.goto(broker.http + "/")
    page.get_by_role("heading", name="Overview").wait_for()
    page.locator(".card", has_text="Nodes").get_by_text("1", exact=True).wait_for()
    # The metadata quorum: this node leads it.
    page.locator("#quorum-line", has_text="leader node 1").wait_for()
    page.locator("tr", has_text="this node").get_by_text("leader", exact=True).wait_for()

    # Create the topic in the UI.
    page.click("a[data-nav=topics]")
    page.get_by_text("No topics yet").wait_for()
    page.click("#new-topic-btn")
    page.fill("#topic-name", topic)
    page.fill("#topic-partitions", str(PARTITIONS))
    page.fill("#topic-configs", "max.message.bytes=2000000")
    page.click("#create-topic")
    page.locator(f"tr[data-topic='{topic}']").wait_for()
    wait_for_topic(broker.bootstrap, topic, PARTITIONS)
    # Kafka's error for a duplicate, shown in the form.
    page.click("#new-topic-btn")
    page.fill("#topic-name", topic)
    page.click("#create-topic")
    page.locator("#create-error").get_by_text("TOPIC_ALREADY_EXISTS").wait_for()
    page.click("#create-cancel")
    # Search.
    page.fill("#topic-search", "no-such-topic-here")
    page.get_by_text("No topic matches").wait_for()
    page.fill("#topic-search", topic[:20])
    page.locator(f"tr[data-topic='{topic}']").wait_for()

    # Produce with a real client, then browse.
    produce(broker.bootstrap, topic)
    page.click(f"tr[data-topic='{topic}'] a")
    page.locator("#topic-summary").get_by_text(f"{PARTITIONS * PER_PARTITION} records").wait_for()
    page.select_option("#msg-partition", "0")
    page.select_option("#msg-from", "beginning")
    page.click("#msg-load")
    first = page.locator(".record[data-partition='0'][data-offset='0']")
    first.wait_for()
    assert first.locator(".rec-key").inner_text().strip() == "key-0-0"
    value = first.locator(".rec-value pre").inner_text()
    assert json.loads(value) == JSON_VALUE
    assert '\n  "order": 42' in value, f"JSON not pretty-printed: {value!r}"
    assert "trace-id=abc-123" in first.locator(".rec-headers").inner_text()
    assert page.locator(".record").count() == PER_PARTITION
    # From an offset, and a text filter over all partitions.
    page.select_option("#msg-from", "offset")
    page.fill("#msg-offset", "7")
    page.click("#msg-load")
    page.locator("#msg-summary").get_by_text("3 records shown").wait_for()
    page.select_option("#msg-partition", "")
    page.select_option("#msg-from", "beginning")
    page.fill("#msg-filter", "value 1-3")
    page.click("#msg-load")
    page.locator("#msg-summary").get_by_text("1 record shown").wait_for()
    assert page.locator(".record .rec-key").inner_text().strip() == "key-1-3"

    # Partitions with their offsets.
    page.click("button[data-tab=partitions]")
    row = page.locator("#partitions-table tr[data-partition='0'] td")
    row.nth(5).get_by_text(str(PER_PARTITION)).wait_for()  # high watermark

    # A consumer group that committed part of the topic: its lag in the UI.
    member = consume_and_commit_part(broker.bootstrap, topic, group)
    try:
        page.click("a[data-nav=groups]")
        page.locator(f"tr[data-group='{group}']").wait_for()
        page.click(f"tr[data-group='{group}'] a")
        page.locator(f"tr[data-partition='{topic}-0'] td.lag").get_by_text(str(PER_PARTITION - 4)).wait_for()
        assert page.locator(f"tr[data-partition='{topic}-1'] td.lag").inner_text().strip() == "0"
        assert page.locator("#total-lag").inner_text().strip() == str(PER_PARTITION - 4)
        # The live member and the partitions assigned to it (decoded from the classic protocol).
        page.locator("#members-table").get_by_text(f"{topic}: 0, 1").wait_for()
        # The lag chart fills from the sampler (every 5 s); the page refreshes on its own.
        page.locator("svg#lag-chart").wait_for(timeout=30_000)
    finally:
        member.close()

    # Edit a config in the UI; an admin client sees it with DescribeConfigs.
    page.goto(f"{broker.http}/#/topic/{topic}/configs")
    row = page.locator("tr[data-config='retention.ms']")
    row.locator(".config-value").fill("not-a-number")
    row.locator(".config-save").click()
    row.locator(".config-error").get_by_text("INVALID_CONFIG").wait_for()
    row.locator(".config-value").fill("3600000")
    row.locator(".config-save").click()
    page.locator("tr[data-config='retention.ms'][data-source='topic']").wait_for()
    resource = ConfigResource(ResourceType.TOPIC, topic)
    client = admin(broker.bootstrap)
    described = client.describe_configs([resource])[resource].result(timeout=30)
    assert described["retention.ms"].value == "3600000"
    assert described["max.message.bytes"].value == "2000000", "the config given at creation"

    # Delete the topic in the UI, with its confirmation.
    page.click("#delete-topic")
    assert page.locator("#confirm-delete").is_disabled()
    page.fill("#confirm-name", topic)
    page.click("#confirm-delete")
    page.wait_for_url("**/#/topics")
    deadline = time.monotonic() + 30
    while topic in client.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} still listed 30 s after the delete"
        time.sleep(0.2)
    page.get_by_text("No topics yet").wait_for()


def test_console_shows_a_kip848_group(broker, page, topic_name):
    """A group on the consumer protocol of KIP-848: ConsumerGroupDescribe's members and their
    assignments, and the lag of what it committed."""
    topic = topic_name[-60:].lstrip("-_")
    group = f"kip848-{topic[-8:]}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic)
    c = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group, "group.protocol": "consumer",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(c.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline, f"not assigned both partitions in 60 s: {c.assignment()}"
            c.poll(0.2)
        c.commit(offsets=[TopicPartition(topic, 0, 1), TopicPartition(topic, 1, 2)], asynchronous=False)
        page.goto(f"{broker.http}/#/groups")
        row = page.locator(f"tr[data-group='{group}']")
        row.get_by_text("Consumer", exact=True).wait_for()
        row.locator("a").click()
        page.locator("#members-table").get_by_text(f"{topic}: 0, 1").wait_for()
        lag = 2 * PER_PARTITION - 3
        page.locator("#total-lag").get_by_text(str(lag), exact=True).wait_for()
    finally:
        c.close()
