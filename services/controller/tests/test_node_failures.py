"""Nodes that fail: deletions never hang on a dead node, and what fimd answers is checked.

Against the real API server with fake fimds (real gRPC); the controller runs as a process.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import TYPE_CHECKING

from fim.v1 import fim_pb2
from services.controller.fimd_client import MAX_RECONNECT_BACKOFF_MS
from services.controller.kube import ApiError
from services.controller.tests import apiserver
from services.controller.tests.apiserver import eventually
from services.controller.tests.fake_fimd import FakeFimd, FakeFimdServer
from services.controller.tests.scenario import add_watcher, calls, condition, counts, keys, pod

if TYPE_CHECKING:  # a pytest plugin: importing it first would stop its assert rewriting
    from services.controller.tests.fixtures import World

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]

GRACE = 8.0
SWEEP = 3.0


def deleted(world: World, name: str) -> bool:
    return apiserver.get_watcher(world.kube, world.ns, name) is None


def test_deletion_never_hangs_on_a_dead_node_and_its_orphans_go_when_it_returns(
    world: World,
) -> None:
    n1, n2, n3 = (f"{world.tag}-n{i}" for i in (1, 2, 3))
    world.add_node(n1)
    second, third = world.add_node(n2), world.add_node(n3)
    pod(world, "web-0", n1, {"app": 1})
    web1 = pod(world, "web-1", n2, {"app": 2})
    db0 = pod(world, "db-0", n3, {"app": 3}, app="db")
    world.start_controller(f"--node-grace-period={GRACE:g}")
    logs = add_watcher(world, "logs", ["/var/log"])
    audit = add_watcher(world, "audit", ["/etc"])
    db = add_watcher(world, "db", ["/var/lib/db"], {"app": "db"})
    eventually(lambda: counts(world, "logs") == counts(world, "audit") == (2, 2), what="web")
    eventually(lambda: counts(world, "db") == (1, 1), what="db watched")

    # n3 is down but never held (nor was asked to hold) a watch of "logs": no wait at all.
    third.stop()
    eventually(
        lambda: condition(world, "db", "Degraded")[1] == "FimdUnreachable", what="n3 noticed"
    )
    started = time.monotonic()
    world.kube.request("DELETE", apiserver.watcher_path(world.ns, "logs"))
    eventually(lambda: deleted(world, "logs"), timeout=GRACE, what="logs finalized")
    assert time.monotonic() - started < GRACE / 2
    assert all(key[0] != logs for node in (n1, n2) for key in keys(world)[node])

    # n2 goes down holding a watch of "audit": it blocks the deletion for the grace period
    # only (measured from its first failed contact), then the next sweep finalizes.
    second.stop()
    down = time.monotonic()
    world.kube.request("DELETE", apiserver.watcher_path(world.ns, "audit"))
    eventually(lambda: deleted(world, "audit"), timeout=GRACE + SWEEP + 5, what="audit finalized")
    took = time.monotonic() - down
    # metav1.Time has second precision, so the controller's clock may cut up to 1 s.
    assert GRACE - 1.5 <= took <= GRACE + SWEEP + 3, took
    assert keys(world)[n1] == set()  # the reachable node's watches went at once
    assert set(second.fimd.snapshot()) == {(audit, web1, "app")}  # the dead one still has it

    # n2 returns with its state (same fimd instance): the sweep destroys the orphan, once
    # gRPC's next reconnection attempt finds it (capped at 10 s, with 20% jitter).
    world.fimds[n2] = FakeFimdServer(second.fimd, port=second.port)
    reconnect = MAX_RECONNECT_BACKOFF_MS / 1000 * 1.2
    eventually(
        lambda: keys(world)[n2] == set(), timeout=reconnect + SWEEP + 3, what="orphan destroyed"
    )
    assert set(third.fimd.snapshot()) == {(db, db0, "app")}  # n3 is still down: untouched


def _namespace_controller(world: World) -> subprocess.Popen[bytes]:
    """kube-controller-manager running only its namespace controller, as admin."""
    cp = world.env.control_plane
    kubeconfig = str(cp.kubeconfig)
    argv = [
        str(cp.binaries.kube("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--controllers=namespace",
        "--v=1",
    ]
    log = (world.env.tmp / f"kcm-{world.tag}.log").open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=log)


def test_deleting_a_namespace_with_fimwatchers_completes_while_a_node_is_down(
    world: World,
) -> None:
    n1, n2 = f"{world.tag}-n1", f"{world.tag}-n2"
    world.add_node(n1)
    second = world.add_node(n2)
    pod(world, "web-0", n1, {"app": 1})
    pod(world, "web-1", n2, {"app": 2})
    world.start_controller(f"--node-grace-period={GRACE:g}")
    add_watcher(world, "logs", ["/var/log"])
    add_watcher(world, "audit", ["/etc"])
    eventually(lambda: counts(world, "logs") == counts(world, "audit") == (2, 2), what="web")

    second.stop()
    kcm = _namespace_controller(world)
    try:
        world.kube.request("DELETE", f"/api/v1/namespaces/{world.ns}")

        def gone() -> bool:
            # No kubelet here: confirm the pods' deletion as one would once they stopped.
            pods = world.kube.request("GET", f"/api/v1/namespaces/{world.ns}/pods")["items"]
            for item in pods:
                if item["metadata"].get("deletionTimestamp"):
                    name = item["metadata"]["name"]
                    with contextlib.suppress(ApiError):
                        world.kube.request(
                            "DELETE",
                            f"/api/v1/namespaces/{world.ns}/pods/{name}",
                            query={"gracePeriodSeconds": "0"},
                        )
            try:
                world.kube.request("GET", f"/api/v1/namespaces/{world.ns}")
            except ApiError as err:
                return err.status == 404
            return False

        eventually(gone, timeout=GRACE + SWEEP + 30, what="namespace deleted")
        assert keys(world)[n1] == set()
    finally:
        kcm.terminate()
        kcm.wait(20)


def test_a_fimd_that_names_another_node_is_reported_and_never_written_to(world: World) -> None:
    node = f"{world.tag}-n1"
    impostor = FakeFimdServer(FakeFimd("somewhere-else"))
    world.fimds[node] = impostor
    world.fimd_pod(node, impostor.port)
    pod(world, "web-0", node, {"app": 1})
    world.start_controller()
    add_watcher(world, "logs", ["/var/log"])
    eventually(
        lambda: condition(world, "logs", "Degraded")[1] == "FimdUnreachable", what="reported"
    )
    message = condition(world, "logs", "Degraded")[2]
    assert "WRONG_NODE" in message
    assert "says it runs on 'somewhere-else'" in message
    assert counts(world, "logs") == (1, 0)
    assert calls(world, "GetWatchState") >= 1
    assert calls(world, "CreateWatch") == calls(world, "DestroyWatch") == 0


def test_pending_watches_are_read_again_before_the_sweep(world: World) -> None:
    node = f"{world.tag}-n1"
    server = world.add_node(node)
    server.fimd.phase = fim_pb2.WATCH_PHASE_PENDING
    pod(world, "web-0", node, {"app": 1})
    # A sweep every 60 s: only the PENDING recheck (1 s doubling) can notice the change.
    world.start_controller("--resync-period=60")
    add_watcher(world, "logs", ["/var/log"])
    eventually(lambda: server.fimd.calls["CreateWatch"] == 1, what="created")
    eventually(
        lambda: condition(world, "logs", "Ready")[:2] == ("False", "WatchesPending"),
        what="pending reported",
    )
    eventually(lambda: server.fimd.calls["GetWatchState"] >= 3, timeout=10, what="rechecked")
    server.fimd.phase = fim_pb2.WATCH_PHASE_ACTIVE
    flipped = time.monotonic()
    eventually(lambda: counts(world, "logs") == (1, 1), timeout=30, what="active noticed")
    assert time.monotonic() - flipped < 30  # well before the 60 s sweep
    assert server.fimd.calls["CreateWatch"] == 1  # re-read, never re-created
