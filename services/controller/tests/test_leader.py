"""One leader at a time: a leader that loses its lease stops acting before the next one acts.

The leader reaches the real API server through a TCP proxy on 127.0.0.1 that the test
stalls (connections stay open, bytes stop: a partition, not a crash), while it still
reaches fimd directly. The standby takes the lease; the proof is taken from outside both
controllers: the fake fimd's call log and the API server's audit log (who wrote what, when;
each replica names itself in its User-Agent) must show no overlap in time.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from services.controller.tests.apiserver import eventually
from services.controller.tests.scenario import add_watcher, counts, keys, leader, pod
from tests.cluster.proxy import TcpProxy

if TYPE_CHECKING:  # a pytest plugin: importing it first would stop its assert rewriting
    from services.controller.tests.fixtures import World

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]

WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def audited_writes(log: Path, agent: str) -> list[tuple[float, float, str]]:
    """(received, completed, what) of every write but Lease ones sent by `agent`."""
    writes = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        resource = (event.get("objectRef") or {}).get("resource", "")
        if (
            event.get("stage") == "ResponseComplete"
            and agent in event.get("userAgent", "")
            and event.get("verb") in WRITES
            and resource != "leases"
        ):
            received, completed = event["requestReceivedTimestamp"], event["stageTimestamp"]
            writes.append((_time(received), _time(completed), f"{event['verb']} {resource}"))
    return writes


def proxied_kubeconfig(source: Path, proxy: TcpProxy, target: Path) -> Path:
    config = json.loads(source.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    target.write_text(json.dumps(config))
    return target


def test_a_stalled_leader_stops_acting_before_the_standby_takes_over(world: World) -> None:
    node = f"{world.tag}-n1"
    server = world.add_node(node)
    pod(world, "web-0", node, {"app": 1})
    port = int(world.env.control_plane.server.rsplit(":", 1)[1])
    proxy = TcpProxy(("127.0.0.1", port))
    try:
        kubeconfig = proxied_kubeconfig(
            world.env.kubeconfig, proxy, world.env.tmp / f"proxied-{world.tag}.kubeconfig"
        )
        a, b = f"{world.tag}-a", f"{world.tag}-b"
        first = world.start_controller(
            "--leader-elect", f"--identity={a}", name="a", kubeconfig=kubeconfig
        )
        eventually(lambda: leader(world) == a, what="a leads")
        world.start_controller("--leader-elect", f"--identity={b}", name="b")
        uid = add_watcher(world, "logs", ["/var/log"])
        eventually(lambda: counts(world, "logs") == (1, 1), what="a reconciles")
        web1 = pod(world, "web-1", node, {"app": 2})
        eventually(lambda: counts(world, "logs") == (2, 2), what="a reconciles a change")

        proxy.stall()  # a still reaches fimd directly, and its sweeper keeps running
        web2 = pod(world, "web-2", node, {"app": 3})
        eventually(lambda: leader(world) == b, timeout=30, what="b takes the lease")
        eventually(lambda: (uid, web2, "app") in keys(world)[node], timeout=30, what="b acts")
        eventually(lambda: counts(world, "logs") == (3, 3), what="b writes the status")
        eventually(lambda: first.process.poll() is not None, timeout=30, what="a exits")
        assert first.process.returncode == 1  # lost the lease: the pod restarts
        assert (uid, web1, "app") in keys(world)[node]
    finally:
        proxy.close()

    # fimd's view: every call of a ended before b's first call started.
    by_a, by_b = server.fimd.calls_by(f"/{a}"), server.fimd.calls_by(f"/{b}")
    assert by_a
    assert by_b
    assert max(call.end for call in by_a) < min(call.start for call in by_b), (by_a, by_b)

    # The API server's view: every write of a completed before b's first one arrived.
    time.sleep(1)  # the audit log is written asynchronously
    log = world.env.control_plane.audit_log
    writes_a, writes_b = audited_writes(log, f"/{a}"), audited_writes(log, f"/{b}")
    assert writes_a
    assert writes_b
    assert max(end for _, end, _ in writes_a) < min(start for start, _, _ in writes_b), (
        writes_a[-3:],
        writes_b[:3],
    )
