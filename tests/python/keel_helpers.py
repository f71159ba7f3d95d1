"""Helpers shared by the Python client tests: a Keel broker process and small client wrappers.

Everything here talks to 127.0.0.1 only, and every wait is bounded in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0

# The tiny-segment switch: with KEEL_TEST_SEGMENT_BYTES set (say 20000), every broker the tests
# start rolls its segments at that size (log.segment.bytes, and the internal topics' sizes), so
# that every read, recovery, retention and compaction path crosses segment boundaries. A test
# that sets one of these itself keeps its own value.
SEGMENT_BYTES_CONFIGS = ("log.segment.bytes", "offsets.topic.segment.bytes", "transaction.state.log.segment.bytes")


def tiny_segment_bytes() -> int | None:
    value = os.environ.get("KEEL_TEST_SEGMENT_BYTES")
    return int(value) if value else None


def keel_bin() -> Path:
    return Path(os.environ.get("KEEL_BIN", REPO / "target" / "release" / "keel"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerError(AssertionError):
    pass


class Broker:
    """One `keel server` process. Ports are chosen once and kept across restarts."""

    def __init__(self, data_dir: Path, log_path: Path, sets: dict[str, str] | None = None, node_id: int = 1,
                 advertise: str | None = None, controllers: str | None = None):
        self.advertise = advertise
        # `--controllers` (controller.quorum.voters) of a node of a cluster; None for one node.
        self.controllers = controllers
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.sets = dict(sets or {})
        self.node_id = node_id
        self.port = free_port()
        self.http_port = free_port()
        while self.http_port == self.port:
            self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- addresses -------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- lifecycle -------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            str(keel_bin()), "server",
            "--data-dir", str(self.data_dir),
            "--listen", self.bootstrap,
            "--http", f"127.0.0.1:{self.http_port}",
            "--node-id", str(self.node_id),
        ]
        if self.advertise:
            cmd += ["--advertise", self.advertise]
        if self.controllers:
            cmd += ["--controllers", self.controllers]
        sets = dict(self.sets)
        segment_bytes = tiny_segment_bytes()
        if segment_bytes is not None:
            for name in SEGMENT_BYTES_CONFIGS:
                sets.setdefault(name, str(segment_bytes))
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def start(self) -> "Broker":
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> "Broker":
        """Start the process without waiting for it (the nodes of a cluster wait for each other)."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        binary = keel_bin()
        if not binary.exists():
            raise BrokerError(f"keel binary not found at {binary} (run `cargo build --release -p keel` or set KEEL_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== start: {' '.join(self.command())}\n".encode())
        self._log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise BrokerError(f"keel exited with code {rc} before becoming ready\n{self.log_tail()}")
            status = self.http_status("/readyz")
            if status == 200:
                return
            last = f"HTTP {status}" if status else "no answer"
            time.sleep(0.05)
        raise BrokerError(f"keel not ready after {timeout}s (/readyz: {last})\n{self.log_tail()}")

    def http_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.http + path, timeout=1) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, urllib.error.URLError):
            return None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_log()

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Clean shutdown: the broker must exit 0 within STOP_TIMEOUT_S."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            self._close_log()
            raise BrokerError(f"keel did not exit within {STOP_TIMEOUT_S}s of signal {sig}\n{self.log_tail()}")
        self._close_log()
        if rc != 0:
            raise BrokerError(f"keel exited with code {rc} after signal {sig} (expected 0)\n{self.log_tail()}")

    def restart(self) -> "Broker":
        """Start again with the same data dir and ports (after kill9/terminate)."""
        assert self.proc is not None and self.proc.poll() is not None, "stop the broker before restart()"
        return self.start()

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if needed. Never raises."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


class Cluster:
    """`n` `keel server` processes forming one cluster: node ids 1..n, each a broker and a
    controller, on loopback ports, started at once (the command lines the Rust tests' `Cluster`
    starts)."""

    def __init__(self, base_dir: Path, n: int = 3, sets: dict[str, str] | None = None):
        ports = [free_port() for _ in range(n)]
        self.controllers = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
        self.nodes = [
            Broker(Path(base_dir) / f"node{i}", Path(base_dir) / f"node{i}.log", sets=sets, node_id=i,
                   controllers=self.controllers)
            for i in range(1, n + 1)
        ]

    def start(self) -> "Cluster":
        for node in reversed(self.nodes):
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout=READY_TIMEOUT_S * 2)
        return self

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def running(self) -> list[Broker]:
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(node.log_tail(lines) for node in self.nodes)


# -- confluent-kafka helpers ----------------------------------------------

def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None, timeout: float = 30) -> None:
    """Create a topic and wait until metadata shows every partition with a leader."""
    a = admin(bootstrap)
    futures = a.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)
    wait_for_topic(bootstrap, name, partitions, timeout=timeout, client=a)


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30, client=None) -> None:
    a = client or admin(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        md = a.list_topics(timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} not ready with {partitions} partitions after {timeout}s: {t and t.partitions}")
        time.sleep(0.1)


def consumer(bootstrap: str, **extra) -> Consumer:
    """A confluent-kafka consumer for manual assignment (no groups: the group.id is never used)."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "keel-tests-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return Consumer(conf)


def is_group_coordinator_noise(m) -> bool:
    """librdkafka looks up the group coordinator whenever group.id is set, even for a consumer
    that only uses assign(). Until Keel has consumer groups that lookup may fail; such errors
    concern no topic and say nothing about the log. Everything else still fails the test."""
    err = m.error()
    return m.topic() is None and "coordinator" in err.str().lower()


def wait_until(what: str, check, timeout: float = 30, interval: float = 0.1, detail=lambda: ""):
    """Calls `check` every `interval` s until it returns something truthy, which it returns;
    fails after `timeout` s, naming `what` (and `detail()`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} {detail()}".rstrip())
        time.sleep(interval)


def consume_partitions(bootstrap: str, topic: str, partitions, start=OFFSET_BEGINNING, timeout: float = 60, **extra):
    """Read every listed partition from `start` up to its end (partition EOF).

    Returns a list of messages; fails on any consumer error.
    """
    c = consumer(bootstrap, **extra)
    try:
        c.assign([TopicPartition(topic, p, start) for p in partitions])
        pending = set(partitions)
        out = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"consume of {topic} timed out after {timeout}s; partitions not at EOF: {sorted(pending)}; got {len(out)} records")
            for m in c.consume(num_messages=10000, timeout=0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                elif is_group_coordinator_noise(m):
                    print(f"ignored group-coordinator error (no consumer groups yet): {err}")
                else:
                    raise AssertionError(f"consumer error on {m.topic()}[{m.partition()}]: {err}")
        return out
    finally:
        c.close()
