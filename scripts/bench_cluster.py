#!/usr/bin/env python3
"""Cluster metadata benchmark: a three-node Keel cluster on this machine.

Creates --topics topics of --partitions partitions with replication factor --rf through the
admin API (one CreateTopics per topic, confluent-kafka), then reports:
- the time per CreateTopics (mean, p50, p99, max) and topics/s;
- each node's metadata log and snapshot size;
- each node's resident memory before and after, per partition replica it hosts;
- a broker's restart time with that metadata (SIGTERM, start, until /readyz);
- the controller failover time after kill -9, --failovers times: until a survivor's /health
  names a new quorum leader, and until a CreateTopics through a survivor succeeds.

Usage: .venv/bin/python scripts/bench_cluster.py [--topics 1000] [--partitions 10] [--rf 3]
(needs a release build: cargo build --release -p keel). Everything runs on 127.0.0.1 and stops
by itself; the data goes to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from keel_helpers import Cluster  # noqa: E402

FDS_PER_PARTITION = 3  # the log, offset index and time index of the active segment


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, soft), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            return limit
        except (ValueError, OSError):
            continue
    return soft


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def health(node) -> dict:
    with urllib.request.urlopen(f"{node.http}/health", timeout=2) as r:
        return json.load(r)


def health_or_none(node) -> dict | None:
    try:
        return health(node)
    except urllib.error.HTTPError as e:  # 503 still carries the summary
        return json.load(e)
    except OSError:
        return None


def quorum_leader(node) -> int | None:
    h = health_or_none(node)
    return None if h is None else h["metadata_quorum"]["leader"]


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def create(client: AdminClient, name: str, partitions: int, rf: int, timeout: float = 30) -> None:
    client.create_topics([NewTopic(name, partitions, rf)], operation_timeout=timeout, request_timeout=timeout)[name].result(
        timeout=timeout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--rf", type=int, default=3)
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    replicas_per_node = args.topics * args.partitions * args.rf // 3
    wanted_fds = replicas_per_node * FDS_PER_PARTITION + 4096
    limit = raise_fd_limit(wanted_fds)
    if limit < wanted_fds:
        sys.exit(f"open-file limit {limit} is below the {wanted_fds} this run needs; run as root or raise `ulimit -n`")

    with tempfile.TemporaryDirectory(prefix="keel-bench-cluster-") as tmp:
        cluster = Cluster(Path(tmp), 3, sets={"log.segment.bytes": str(1 << 20)})
        try:
            cluster.start()
            print(f"three nodes up; open-file limit {limit}")
            rss_before = {n.node_id: rss_bytes(n.proc.pid) for n in cluster.nodes}
            client = AdminClient({"bootstrap.servers": cluster.bootstrap})

            latencies = []
            started = time.monotonic()
            for i in range(args.topics):
                t0 = time.monotonic()
                create(client, f"bench-{i:05d}", args.partitions, args.rf)
                latencies.append(time.monotonic() - t0)
                if (i + 1) % 100 == 0:
                    print(f"  {i + 1} topics, last 100 at {statistics.mean(latencies[-100:]) * 1000:.1f} ms each")
            total = time.monotonic() - started
            ms = [x * 1000 for x in latencies]
            print(f"\nCreateTopics ({args.topics} x {args.partitions} partitions, RF {args.rf}): {total:.1f} s, "
                  f"{args.topics / total:.1f} topics/s; per request mean {statistics.mean(ms):.1f} ms, "
                  f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms")

            time.sleep(2)  # the followers apply the last entries
            for node in cluster.nodes:
                meta = node.data_dir / "__cluster_metadata"
                log = dir_bytes(meta, "*.log") + dir_bytes(meta, "log*")
                snapshot = dir_bytes(meta, "*snapshot*")
                rss = rss_bytes(node.proc.pid)
                per = (rss - rss_before[node.node_id]) / max(replicas_per_node, 1)
                print(f"node {node.node_id}: metadata log {log / 1e6:.2f} MB, snapshot {snapshot / 1e6:.2f} MB, "
                      f"files {sorted(p.name for p in meta.iterdir())}; RSS {rss_before[node.node_id] / 1e6:.0f} -> "
                      f"{rss / 1e6:.0f} MB, {per / 1024:.1f} KiB per hosted partition replica ({replicas_per_node})")

            # A broker's restart with that metadata.
            controller = quorum_leader(cluster.node(1))
            restarted = next(n for n in cluster.nodes if n.node_id != controller)
            restarted.terminate()
            t0 = time.monotonic()
            restarted.start()
            print(f"\nrestart of node {restarted.node_id} (SIGTERM, start, /readyz): {time.monotonic() - t0:.2f} s")

            # Controller failover after kill -9.
            for round_ in range(args.failovers):
                controller = quorum_leader(cluster.node(1)) or quorum_leader(cluster.node(2))
                victim = cluster.node(controller)
                survivor = next(n for n in cluster.nodes if n is not victim)
                survivor_client = AdminClient({"bootstrap.servers": survivor.bootstrap})
                victim.kill9()
                t0 = time.monotonic()
                while quorum_leader(survivor) in (None, controller):
                    time.sleep(0.01)
                elected = time.monotonic() - t0
                name = f"failover-{round_}"
                while True:
                    try:
                        survivor_client.list_topics(timeout=5)
                        create(survivor_client, name, 1, 2, timeout=3)
                        break
                    except Exception as error:  # noqa: BLE001 - retried until the new controller decides
                        if "already exists" in str(error).lower():
                            break
                        if time.monotonic() - t0 > 60:
                            raise
                created = time.monotonic() - t0
                print(f"failover {round_ + 1}: controller {controller} killed; new leader "
                      f"{quorum_leader(survivor)} after {elected * 1000:.0f} ms, CreateTopics through node "
                      f"{survivor.node_id} after {created * 1000:.0f} ms")
                victim.start()
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
