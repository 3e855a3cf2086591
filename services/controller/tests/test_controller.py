"""The controller process against a real kube-apiserver and fake fimd nodes (real gRPC).

Every controller here runs as `python -m services.controller` with a token of the
fim-controller ServiceAccount, so each scenario also proves that the RBAC of deploy/base
suffices for it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import grpc
import pytest

from fim.v1 import fim_pb2
from services.controller.bounds import MAX_LOGGED
from services.controller.kube import ApiError, Kube
from services.controller.tests import apiserver, faulty
from services.controller.tests.apiserver import container_id, eventually
from services.controller.tests.certs import make_ca
from services.controller.tests.fake_fimd import FakeFimdServer, KeyTuple, capacity_text
from services.controller.tests.scenario import (
    add_watcher,
    calls,
    condition,
    counts,
    delete_pod,
    keys,
    leader,
    patch,
    pod,
    reasons,
)

if TYPE_CHECKING:  # a pytest plugin: importing it first would stop its assert rewriting
    from services.controller.tests.fixtures import Env, World

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]


def test_watches_and_status_follow_every_change(world: World) -> None:
    n1, n2 = f"{world.tag}-n1", f"{world.tag}-n2"
    world.add_node(n1)
    world.add_node(n2)
    web0 = pod(world, "web-0", n1, {"app": 1, "side": 2})
    web1 = pod(world, "web-1", n2, {"app": 3})
    pod(world, "db-0", n1, {"app": 4}, app="db")
    world.start_controller()

    logs = add_watcher(world, "logs", ["/var/log"])
    eventually(
        lambda: (
            keys(world)
            == {n1: {(logs, web0, "app"), (logs, web0, "side")}, n2: {(logs, web1, "app")}}
        ),
        what="watches of 'logs' on both nodes",
    )
    eventually(lambda: counts(world, "logs") == (2, 2), what="status 2 of 2 watched")
    assert condition(world, "logs", "Ready")[:2] == ("True", "AllPodsWatched")
    assert condition(world, "logs", "Degraded")[0] == "False"
    watcher = apiserver.get_watcher(world.kube, world.ns, "logs") or {}
    assert watcher["metadata"]["finalizers"] == ["fim-k8s.io/watches"]
    eventually(lambda: "WatchesAdded" in reasons(world.kube, world.ns, logs), what="event")

    # A second watcher on the same pods gets its own watches.
    audit = add_watcher(world, "audit", ["/etc"])
    eventually(lambda: (audit, web1, "app") in keys(world)[n2], what="second watcher's watch")

    # A pod that stops matching loses its watches, from both watchers.
    patch(
        world, f"/api/v1/namespaces/{world.ns}/pods/web-1", {"metadata": {"labels": {"app": "x"}}}
    )
    eventually(lambda: keys(world)[n2] == set(), what="relabelled pod unwatched")
    eventually(lambda: counts(world, "logs") == (1, 1), what="status follows the relabel")

    # A spec change updates the watch in place (same key, new spec).
    patch(world, apiserver.watcher_path(world.ns, "logs"), {"spec": {"logFormat": "{path}"}})

    def updated() -> bool:
        spec = world.fimds[n1].fimd.snapshot().get((logs, web0, "app"))
        return spec is not None and spec.log_format == "{path}"

    eventually(updated, what="logFormat applied")

    # A container restart (new container ID) retargets the same watch.
    apiserver.set_running(world.kube, world.ns, "web-0", {"app": 7, "side": 2})

    def retargeted() -> bool:
        spec = world.fimds[n1].fimd.snapshot().get((logs, web0, "app"))
        return spec is not None and spec.container_id == container_id(7)

    eventually(retargeted, what="watch follows the restarted container")

    # A pod that starts later is picked up.
    web2 = pod(world, "web-2", n2, {"app": 8})
    eventually(lambda: (logs, web2, "app") in keys(world)[n2], what="new pod watched")

    # Deleting a watcher destroys its watches everywhere, then releases its finalizer.
    world.kube.request("DELETE", apiserver.watcher_path(world.ns, "logs"))
    eventually(
        lambda: all(k[0] != logs for node in keys(world).values() for k in node),
        what="watches of the deleted watcher destroyed",
    )
    eventually(
        lambda: apiserver.get_watcher(world.kube, world.ns, "logs") is None,
        what="finalizer removed",
    )
    assert keys(world) == {
        n1: {(audit, web0, "app"), (audit, web0, "side")},
        n2: {(audit, web2, "app")},
    }

    # Steady state: over two sweeps, no Create/Destroy, only one GetWatchState per node each.
    eventually(lambda: counts(world, "audit") == (2, 2), what="audit status")
    before = {m: calls(world, m) for m in ("CreateWatch", "DestroyWatch", "GetWatchState")}
    time.sleep(7)
    assert calls(world, "CreateWatch") == before["CreateWatch"]
    assert calls(world, "DestroyWatch") == before["DestroyWatch"]
    # Any 7 s holds two or three ticks of the 3 s sweep, each one GetWatchState per node (2).
    swept = calls(world, "GetWatchState") - before["GetWatchState"]
    assert 2 * 2 <= swept <= 2 * 3


def test_killed_controller_restarts_without_duplicate_or_leaked_watches(world: World) -> None:
    nodes = [f"{world.tag}-n{i}" for i in range(3)]
    for node in nodes:
        world.add_node(node)
    pods = {f"web-{i}": pod(world, f"web-{i}", nodes[i % 3], {"app": i}) for i in range(6)}
    first = world.start_controller()
    keep = add_watcher(world, "keep", ["/var/log"])
    eventually(lambda: sum(map(len, keys(world).values())) == 6, what="initial convergence")

    # Killed mid-way: a second watcher was just created.
    gone = add_watcher(world, "gone", ["/srv"])
    time.sleep(0.3)
    first.kill()

    # While no controller runs: a pod goes, a pod comes, the watcher goes, a fimd restarts.
    delete_pod(world, "web-0")
    pods["web-6"] = pod(world, "web-6", nodes[0], {"app": 6})
    world.kube.request("DELETE", apiserver.watcher_path(world.ns, "gone"))
    world.fimds[nodes[2]].fimd.restart()

    expected = {node: set[KeyTuple]() for node in nodes}
    for index, name in enumerate(["web-1", "web-2", "web-3", "web-4", "web-5", "web-6"], 1):
        expected[nodes[index % 3]].add((keep, pods[name], "app"))
    held = keys(world)
    missing = sum(len(expected[n] - held[n]) for n in nodes)
    extra = sum(len(held[n] - expected[n]) for n in nodes)
    created, destroyed = calls(world, "CreateWatch"), calls(world, "DestroyWatch")

    world.start_controller()
    eventually(lambda: keys(world) == expected, what="exactly the desired watches")
    eventually(
        lambda: apiserver.get_watcher(world.kube, world.ns, "gone") is None,
        what="deleted watcher finalized",
    )
    eventually(lambda: counts(world, "keep") == (6, 6), what="status after restart")
    # Only the differences were called: nothing recreated, nothing destroyed twice.
    assert calls(world, "CreateWatch") - created == missing
    assert calls(world, "DestroyWatch") - destroyed == extra
    assert all(k[0] != gone for node in keys(world).values() for k in node)


def test_unreachable_fimd_degrades_only_its_node_and_recovers(world: World) -> None:
    n1, n2 = f"{world.tag}-n1", f"{world.tag}-n2"
    world.add_node(n1)
    second = world.add_node(n2)
    pod(world, "web-0", n1, {"app": 1})
    pod(world, "web-1", n2, {"app": 2})
    pod(world, "db-0", n1, {"app": 3}, app="db")
    world.start_controller()
    add_watcher(world, "web", ["/var/log"])
    add_watcher(world, "db", ["/var/lib/db"], {"app": "db"})
    eventually(lambda: counts(world, "web") == (2, 2) and counts(world, "db") == (1, 1))

    second.stop()
    eventually(
        lambda: condition(world, "web", "Degraded")[:2] == ("True", "FimdUnreachable"),
        what="web degraded by its unreachable node",
    )
    assert n2 in condition(world, "web", "Degraded")[2]
    assert condition(world, "db", "Degraded")[0] == "False"
    assert condition(world, "db", "Ready")[0] == "True"

    # fimd comes back on the same address with empty state: the watches are rebuilt.
    world.fimds[n2] = FakeFimdServer(second.fimd, port=second.port)
    second.fimd.restart()
    eventually(lambda: len(keys(world)[n2]) == 1, what="watches rebuilt on the returned fimd")
    eventually(lambda: condition(world, "web", "Degraded")[0] == "False", what="recovered")
    eventually(lambda: counts(world, "web") == (2, 2))


def test_rejected_and_failed_watches_are_reported(world: World) -> None:
    node = f"{world.tag}-n1"
    server = world.add_node(node)
    server.fimd.reject = lambda spec: (
        (grpc.StatusCode.FAILED_PRECONDITION, "container not found on this node")
        if spec.identity.pod_name == "web-1"
        else None
    )
    pod(world, "web-0", node, {"app": 1})
    pod(world, "web-1", node, {"app": 2})
    world.start_controller()
    uid = add_watcher(world, "logs", ["/var/log"])
    eventually(
        lambda: condition(world, "logs", "Degraded")[:2] == ("True", "WatchRejected"),
        what="rejection reported",
    )
    assert "web-1" in condition(world, "logs", "Degraded")[2]
    assert counts(world, "logs") == (2, 1)
    eventually(lambda: "WatchesFailed" in reasons(world.kube, world.ns, uid), what="event")

    # fimd accepts it on a retry (the container appeared): Ready without any other change.
    server.fimd.reject = None
    eventually(lambda: counts(world, "logs") == (2, 2), timeout=30, what="retried after backoff")

    # A watch fimd holds as FAILED is reported with fimd's reason.
    server.fimd.phase = fim_pb2.WATCH_PHASE_FAILED
    server.fimd.restart()
    eventually(
        lambda: condition(world, "logs", "Degraded")[:2] == ("True", "WatchFailed"),
        what="FAILED phase reported",
    )


def test_node_at_capacity_is_reported_and_clears_once_capacity_frees(world: World) -> None:
    full, roomy = f"{world.tag}-n1", f"{world.tag}-n2"
    server = world.add_node(full)
    server.fimd.capacity = 2  # fimd's admission control: a third watch is RESOURCE_EXHAUSTED
    world.add_node(roomy)
    for i in range(3):
        pod(world, f"web-{i}", full, {"app": i + 1})
    pod(world, "db-0", roomy, {"app": 10}, app="db")
    controller = world.start_controller()
    uid = add_watcher(world, "web", ["/var/log"])
    add_watcher(world, "db", ["/var/lib/db"], {"app": "db"})

    eventually(
        lambda: condition(world, "web", "Degraded")[:2] == ("True", "NodeCapacity"),
        what="capacity refusal reported",
    )
    message = condition(world, "web", "Degraded")[2]
    assert f"no capacity on node {full}: NodeCapacity: {capacity_text(2, 2)}" in message
    # Only the create beyond the budget was refused: the node is reachable and its two
    # watches count.
    eventually(lambda: counts(world, "web") == (3, 2), what="two of three pods watched")
    assert condition(world, "web", "Ready")[:2] == ("False", "WatchesPending")
    assert len(keys(world)[full]) == 2
    unreachable = [
        line
        for line in controller.log_lines()
        if line.get("msg") == "fimd unreachable" and line.get("node") == full
    ]
    assert unreachable == []
    eventually(lambda: "NodeCapacity" in reasons(world.kube, world.ns, uid), what="event")

    # Other watchers are not affected, and the controller keeps reconciling.
    eventually(lambda: counts(world, "db") == (1, 1), what="db watched")
    assert condition(world, "db", "Degraded")[:2] == ("False", "AsExpected")
    pod(world, "db-1", roomy, {"app": 11}, app="db")
    eventually(lambda: counts(world, "db") == (2, 2), what="a new pod elsewhere is watched")

    # Capacity frees up: the refused create is retried and the condition clears.
    server.fimd.capacity = 10
    eventually(lambda: counts(world, "web") == (3, 3), timeout=30, what="retried after backoff")
    eventually(
        lambda: condition(world, "web", "Degraded")[:2] == ("False", "AsExpected"),
        what="Degraded cleared",
    )
    assert condition(world, "web", "Ready")[:2] == ("True", "AllPodsWatched")
    assert len(keys(world)[full]) == 3


FAULTY = "services.controller.tests.faulty"


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metric(controller: apiserver.ControllerProcess, series: str) -> float:
    """The value of one series (`name{labels}` as exposed) on the controller's /metrics."""
    for line in http_get(controller.url("/metrics"))[1].splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def test_a_sync_that_raises_costs_only_its_node_and_is_retried_until_the_fault_goes(
    world: World,
) -> None:
    poisoned, fine = f"{world.tag}-n1", f"{world.tag}-n2"
    bad = world.add_node(poisoned)
    world.add_node(fine)
    # fimd reports a watch whose message (a file name a pod chose) the controller cannot
    # handle: reading it raises an exception that is neither ApiError nor FimdError.
    long_name = "/var/log/" + "x" * 50_000
    bad.fimd.message = faulty.RAISE + long_name
    leftover = fim_pb2.WatchSpec(
        key=fim_pb2.WatchKey(watcher_uid="gone", pod_uid="gone", container_name="app")
    )
    bad.fimd.watches[("gone", "gone", "app")] = leftover
    pod(world, "web-0", poisoned, {"app": 1})
    web1 = pod(world, "web-1", fine, {"app": 2})
    db0 = pod(world, "db-0", fine, {"app": 3}, app="db")
    controller = world.start_controller(module=FAULTY)
    web = add_watcher(world, "web", ["/var/log"])
    db = add_watcher(world, "db", ["/var/lib/db"], {"app": "db"})

    # Every other key is reconciled: the healthy node's watches, and every status (the
    # poisoned node, never read, does not hold back the statuses of all watchers).
    eventually(
        lambda: keys(world)[fine] == {(web, web1, "app"), (db, db0, "app")}, what="n2 watched"
    )
    eventually(lambda: counts(world, "db") == (1, 1), what="db status written")
    assert condition(world, "db", "Degraded")[:2] == ("False", "AsExpected")
    eventually(
        lambda: condition(world, "web", "Degraded")[:2] == ("True", "NodeSyncFailed"),
        what="web reports the node that cannot be synced",
    )
    message = condition(world, "web", "Degraded")[2]
    assert f"watches on node {poisoned} not reconciled" in message
    assert "(InjectedError)" in message
    assert "x" * 100 not in message  # the exception's message (fimd data) stays in the log
    assert counts(world, "web") == (2, 1)

    # Counted, and retried with backoff: the queue's per-key delays, 0.05 s doubling, capped
    # at the resync period (3 s here), never a hot loop.
    errors = 'fim_controller_sync_errors_total{error="InjectedError",kind="node"}'
    eventually(lambda: metric(controller, errors) >= 5, what="errors counted")
    assert http_get(controller.url("/healthz")) == (200, "ok\n")
    failed = [
        line
        for line in controller.log_lines()
        if line.get("msg") == "sync failed unexpectedly" and line.get("key") == f"node:{poisoned}"
    ]
    delays = [line["retry_in"] for line in failed]
    assert delays == [min(0.05 * 2**i, 3.0) for i in range(len(delays))]
    assert failed[0]["error_type"] == "InjectedError"
    assert failed[0]["level"] == "error"
    assert "fragile" in failed[0]["traceback"]
    error = failed[0]["error"]
    assert error.startswith("InjectedError: cannot handle watch message 'fault:raise /var/log/x")
    assert len(error) == MAX_LOGGED
    full = f"InjectedError: cannot handle watch message {faulty.RAISE + long_name!r}"
    assert error.endswith(f"x... [truncated, {len(full)} characters]")
    assert max(len(raw) for raw in controller.log.read_text().splitlines()) < 8 * MAX_LOGGED

    # While the fault lasts, new work elsewhere is still done.
    web2 = pod(world, "web-2", fine, {"app": 4})
    eventually(lambda: (web, web2, "app") in keys(world)[fine], what="new pod on n2 watched")
    eventually(lambda: counts(world, "web") == (3, 2), what="web status follows")

    # The fault goes: a retry reads the node, removes the leftover and creates the watch.
    bad.fimd.message = ""
    eventually(lambda: counts(world, "web") == (3, 3), what="converged after the fault")
    assert condition(world, "web", "Degraded")[:2] == ("False", "AsExpected")
    assert set(keys(world)[poisoned]) == {
        (web, apiserver.pod_uid(world.kube, world.ns, "web-0"), "app")
    }
    assert http_get(controller.url("/healthz")) == (200, "ok\n")


def test_healthz_fails_when_a_worker_thread_dies(world: World) -> None:
    node = f"{world.tag}-n1"
    server = world.add_node(node)
    pod(world, "web-0", node, {"app": 1})
    controller = world.start_controller(module=FAULTY)
    add_watcher(world, "web", ["/var/log"])
    eventually(lambda: counts(world, "web") == (1, 1), what="converged")
    assert http_get(controller.url("/healthz")) == (200, "ok\n")
    assert metric(controller, "fim_controller_workers_alive") == 4

    # fimd now reports data whose handling raises a BaseException no sync catches: the
    # next GetWatchState (the 3 s sweep) kills the worker that reads it.
    server.fimd.message = faulty.KILL + "/var/log/x"
    eventually(lambda: http_get(controller.url("/healthz"))[0] == 503, what="/healthz fails")
    code, body = http_get(controller.url("/healthz"))
    assert code == 503
    assert body.startswith("not ok\n")
    assert "of 4 workers alive" in body
    assert metric(controller, "fim_controller_workers_alive") < 4
    died = [line for line in controller.log_lines() if line.get("msg") == "worker died"]
    assert died
    assert (died[0]["level"], died[0]["error_type"]) == ("critical", "WorkerKiller")
    # The readiness probe is about caches, not workers: the pod is restarted, not unrouted.
    assert http_get(controller.url("/readyz")) == (200, "ok\n")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/namespaces/fim-system/secrets"),
        ("DELETE", "/api/v1/namespaces/default/pods/x"),
        ("PATCH", "/api/v1/namespaces/default/pods/x"),
        ("GET", apiserver.watcher_path("default", "x")),
        ("DELETE", apiserver.watcher_path("default", "x")),
        ("GET", "/api/v1/nodes"),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/fim-system/leases/other"),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/fim-controller"),
    ],
)
def test_service_account_has_nothing_beyond_its_role(env: Env, method: str, path: str) -> None:
    controller = Kube.connect(str(env.kubeconfig))
    with pytest.raises(ApiError) as denied:
        controller.request(method, path, body={} if method == "PATCH" else None)
    assert denied.value.status == 403


def test_controller_calls_fimd_over_mtls_with_its_client_certificate(world: World) -> None:
    directory = world.env.tmp / f"pki-{world.tag}"
    directory.mkdir()
    ca = make_ca(directory, "ca")
    server_name = "fimd.fim-system.svc"
    fimd = ca.issue(directory, "fimd", server_names=(server_name,))
    client = ca.issue(directory, "controller")
    credentials = grpc.ssl_server_credentials(
        [(fimd.key.read_bytes(), fimd.cert.read_bytes())],
        root_certificates=ca.cert.read_bytes(),
        require_client_auth=True,
    )
    node = f"{world.tag}-n1"
    world.add_node(node, credentials)
    web0 = pod(world, "web-0", node, {"app": 1})
    world.start_controller(
        f"--fimd-ca={ca.cert}",
        f"--fimd-cert={client.cert}",
        f"--fimd-key={client.key}",
        f"--fimd-server-name={server_name}",
    )
    uid = add_watcher(world, "logs", ["/var/log"])
    eventually(lambda: keys(world)[node] == {(uid, web0, "app")}, what="watch created over mTLS")
    eventually(lambda: counts(world, "logs") == (1, 1), what="status over mTLS")


def test_leader_failover_within_15_seconds(world: World) -> None:
    node = f"{world.tag}-n1"
    world.add_node(node)
    web0 = pod(world, "web-0", node, {"app": 1})
    replicas = {
        name: world.start_controller("--leader-elect", f"--identity={world.tag}-{name}", name=name)
        for name in ("a", "b")
    }
    uid = add_watcher(world, "logs", ["/var/log"])
    eventually(lambda: keys(world)[node] == {(uid, web0, "app")}, what="leader reconciles")
    first = eventually(lambda: leader(world).removeprefix(f"{world.tag}-"), what="a leader")
    standby = "b" if first == "a" else "a"

    replicas[first].kill()
    killed = time.monotonic()
    web1 = pod(world, "web-1", node, {"app": 2})
    eventually(lambda: (uid, web1, "app") in keys(world)[node], timeout=15, what="failover")
    took = time.monotonic() - killed
    assert leader(world) == f"{world.tag}-{standby}"
    assert took < 15
    # A clean shutdown releases the lease at once.
    assert replicas[standby].stop() == 0
    assert leader(world) == ""
