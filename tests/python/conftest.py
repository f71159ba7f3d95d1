"""Pytest fixtures: Keel broker processes on loopback ports.

- `broker`: a fresh broker with its own data dir, for tests that restart or kill it.
- `broker_factory`: start brokers with extra `--set key=value` broker configs.
- `shared_broker`: one broker for the whole session, for the many cheap tests
  (each test uses its own uniquely named topics).

On a test failure the broker log tail is attached to the report.
"""

from __future__ import annotations

import uuid

import pytest

from keel_helpers import Broker


class BrokerFactory:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.brokers: list[Broker] = []

    def __call__(self, sets: dict | None = None, name: str = "broker", advertise: str | None = None) -> Broker:
        b = Broker(self.tmp_path / f"{name}-data", self.tmp_path / f"{name}.log", sets=sets, advertise=advertise)
        self.brokers.append(b)
        return b.start()


@pytest.fixture
def broker_factory(tmp_path):
    factory = BrokerFactory(tmp_path)
    yield factory
    for b in factory.brokers:
        b.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory) -> Broker:
    d = tmp_path_factory.mktemp("shared-broker")
    b = Broker(d / "data", d / "keel.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def topic_name(request) -> str:
    """A unique, valid topic name derived from the test name."""
    base = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    brokers: list[Broker] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Broker):
            brokers.append(value)
        elif isinstance(value, BrokerFactory):
            brokers.extend(value.brokers)
    for b in dict.fromkeys(brokers):
        report.sections.append((f"keel log ({b.bootstrap})", b.log_tail(80)))
