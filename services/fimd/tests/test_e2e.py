"""fimd end to end: the real daemon over mTLS, its pool of real fimnotify engines, real
namespaced "container" processes in real kubepods cgroups, real message queues; the product
is the JSON line on fimd's stdout. Also: a SIGKILLed engine (its watches active again within
2 s, the other engine's watches lose nothing) and admission (a watch beyond a budget is
refused with RESOURCE_EXHAUSTED; fimd and its watches carry on)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import posix_ipc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from libs.auditstream import keys
from libs.auditstream.collect import records
from libs.auditstream.verify import verify
from services.fimd.tests.certs import Pki, make_pki
from services.fimd.tests.container import Container
from services.fimd.tests.fimd_process import FimdProcess
from services.fimd.tests.harness import wait_for
from services.fimd.tests.specs import spec

PREFIX = f"/fimk8s-e2e.{os.getpid()}."
RING = keys.new_ring(datetime.now(UTC))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stale_queue() -> Iterator[str]:
    name = f"{PREFIX}dead.1"
    posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=1).close()
    yield name
    with contextlib.suppress(posix_ipc.ExistentialError):  # fimd did not get to it
        posix_ipc.unlink_message_queue(name)


@pytest.fixture(scope="module")
def fimd(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, stale_queue: str
) -> Iterator[FimdProcess]:
    ring_path = tmp_path_factory.mktemp("audit") / "keys.json"
    ring_path.write_bytes(RING.dumps())
    process = FimdProcess(
        tmp_path_factory.mktemp("fimd"), pki, PREFIX, "--engines", "2", "--audit-key",
        str(ring_path),
    )  # fmt: skip
    yield process
    if process.proc.poll() is None:
        process.stop()


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    ctr = Container(tmp_path).start()
    yield ctr
    ctr.close()


def _create(fimd: FimdProcess, watch: fim_pb2.WatchSpec) -> fim_pb2.WatchStatus:
    fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=10)
    return fimd.wait_active(watch.key)


def _data(container: Container, name: str = "") -> str:
    return str(container.root / "data" / name) if name else str(container.root / "data")


def test_stale_queues_of_a_predecessor_are_removed(fimd: FimdProcess, stale_queue: str) -> None:
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.MessageQueue(stale_queue)
    assert fimd.ops("stale_queues_removed")[0]["queues"] == [stale_queue]


def test_write_in_container_becomes_a_json_line(fimd: FimdProcess, container: Container) -> None:
    watch = spec(
        container_id=container.container_id,
        paths=(_data(container),),
        tags={"team": "payments"},
        pod_uid="e2e-json",
    )
    status = _create(fimd, watch)
    assert status.pid == container.pid
    assert status.inotify_watches == 1
    container.write(_data(container, "app.log"))
    (line,) = wait_for(lambda: fimd.events(_data(container, "app.log"))[:1], what="event line")
    assert line["event"] == "CREATE"
    assert line["tags"] == {"team": "payments"}
    assert (line["node"], line["namespace"], line["pod"], line["container"]) == (
        "node-1",
        "shop",
        "web-0",
        "app",
    )
    assert line["watcher"] == "shop/myapp-logs"
    assert line["isDir"] is False
    assert line["time"].endswith("Z")
    assert not Path(_data(container, "app.log")).exists()  # only inside the container


def test_log_format_update_and_destroy(fimd: FimdProcess, container: Container) -> None:
    watch = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="e2e-up")
    _create(fimd, watch)
    in_use = _inotify_watches(fimd)
    watch.log_format = "FIM {event} {ftype} '{dir}{sep}{file}' ({pod}:{node})"
    response = fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=10)
    assert response.changed
    # The watch stays ACTIVE through the update (the old incarnation watches until the new
    # one is READY): wait until fimd says the new spec is in effect, then write.
    wait_for(lambda: fimd.ops("update_active"), what="update_active line")
    container.write(_data(container, "t.txt"))
    expected = f"FIM CREATE file '{_data(container, 't.txt')}' (web-0:node-1)"
    wait_for(lambda: expected in fimd.bodies(), what="template line")
    # The old incarnation is removed from its engine once the new one is READY (no window
    # without a watch); afterwards only the new one holds inotify watches.
    wait_for(lambda: _inotify_watches(fimd) == in_use, what="old incarnation removed")
    assert fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5).existed
    wait_for(lambda: _inotify_watches(fimd) == in_use - 1, what="watch removed from its engine")
    container.write(_data(container, "after-destroy"))
    time.sleep(0.3)
    assert not any("after-destroy" in line for line in fimd.raw_lines())


def _inotify_watches(fimd: FimdProcess) -> int:
    state = fimd.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    return int(state.limits.inotify_watches_in_use)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def _created(fimd: FimdProcess, directory: str) -> set[str]:
    return {
        e["path"]
        for e in fimd.events()
        if e["event"] == "CREATE" and e["path"].startswith(directory + "/")
    }


def test_killed_engine_is_replaced_and_the_other_engine_loses_nothing(
    fimd: FimdProcess, container: Container, tmp_path: Path
) -> None:
    """kill -9 of one engine: its watch is ACTIVE again within 2 s (restarted engine,
    container resolved again, gap reported), while a watch on the other engine sees every
    file created meanwhile."""
    state = fimd.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    assert state.limits.inotify_instances_in_use == 2  # --engines 2
    victim = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="k-a")
    first = _create(fimd, victim)
    busy = Container(tmp_path / "busy").start()
    try:
        # New watches go to the engine with fewer watches: one lands on the other engine.
        watched: list[fim_pb2.WatchSpec] = []
        for i in range(4):
            watched.append(
                spec(container_id=busy.container_id, paths=(_data(busy),), pod_uid=f"k-b{i}")
            )
            if _create(fimd, watched[-1]).watcher_pid != first.watcher_pid:
                break
        other = fimd.watch(watched[-1].key)
        assert other is not None
        assert other.watcher_pid != first.watcher_pid
        count = 400
        busy.command(f"l {_data(busy)} {count} 400")  # a new file every 2.5 ms, for 1 s
        time.sleep(0.2)
        killed_at = time.monotonic()
        os.kill(first.watcher_pid, signal.SIGKILL)
        while True:
            status = fimd.watch(victim.key)
            assert status is not None
            if status.phase == fim_pb2.WATCH_PHASE_ACTIVE and status.restarts == 1:
                break
            assert time.monotonic() < killed_at + 2.0, f"not ACTIVE within 2 s: {status}"
            time.sleep(0.02)
        reactivated = time.monotonic() - killed_at
        assert status.watcher_pid not in (0, first.watcher_pid)
        busy.result()
        container.write(_data(container, "after-kill"))
        wait_for(lambda: fimd.events(_data(container, "after-kill")), what="event after kill")
        # Every file created while the engine was killed, from the surviving engine's watch.
        names = wait_for(
            lambda: len(_created(fimd, _data(busy))) == count and _created(fimd, _data(busy)),
            what=f"{count} CREATE events",
        )
        assert len(names) == count
        other = fimd.watch(watched[-1].key)
        assert other is not None
        assert other.restarts == 0
        for watch in watched:
            fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5)
    finally:
        busy.close()
    (exited,) = fimd.ops("engine_exited")
    assert (exited["detail"], exited["pid"]) == ("killed by SIGKILL", first.watcher_pid)
    assert fimd.ops("engine_restarted")
    (resumed,) = [line for line in fimd.ops("watch_resumed") if line["pod"] == "web-0"]
    assert resumed["gapStart"] < resumed["gapEnd"]
    assert resumed["gapSeconds"] < 2.0
    print(f"re-activated after {reactivated:.3f} s; gap {resumed['gapSeconds']} s")
    fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=victim.key), timeout=5)


def test_replaced_target_process_is_resolved_again(fimd: FimdProcess, container: Container) -> None:
    watch = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="e2e-r")
    first = _create(fimd, watch)
    container.replace()
    wait_for(lambda: fimd.watch(watch.key).pid == container.pid, what="re-resolved")  # type: ignore[union-attr]
    fimd.wait_active(watch.key)
    assert first.pid != container.pid
    container.write(_data(container, "new-process"))
    wait_for(lambda: fimd.events(_data(container, "new-process")), what="event from new target")
    assert fimd.ops("target_gone")
    fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5)


def test_bad_and_unauthenticated_requests_are_rejected(fimd: FimdProcess, pki: Pki) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=spec(paths=("x",))), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())  # no client certificate
    with grpc.secure_channel(f"localhost:{fimd.port}", creds) as channel:
        with pytest.raises(grpc.RpcError) as err:
            fim_pb2_grpc.FimDaemonStub(channel).GetWatchState(
                fim_pb2.GetWatchStateRequest(), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_metrics_endpoint(fimd: FimdProcess, container: Container) -> None:
    # What it reads is made here (not left by earlier tests): an event and a refused request.
    watch = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="e2e-m")
    _create(fimd, watch)
    container.write(_data(container, "counted"))
    wait_for(lambda: fimd.events(_data(container, "counted"))[:1], what="event line")
    with pytest.raises(grpc.RpcError):
        fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=spec(paths=("x",))), timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{fimd.metrics_port}/metrics") as response:
        text = response.read().decode()
    fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=10)
    assert 'fimd_events_total{event="CREATE",watcher="shop/myapp-logs"}' in text
    assert "fimd_inotify_max_user_watches" in text
    assert "fimd_engines_running 2.0" in text
    assert 'fimd_grpc_requests_total{code="INVALID_ARGUMENT",method="CreateWatch"}' in text


def test_health_listener_answers_plaintext_probes_only(fimd: FimdProcess) -> None:
    """What the kubelet's `grpc:` probe does: plaintext grpc.health.v1 on the health port."""
    assert fimd.ops("started")[0]["health_port"] == fimd.health_port
    with grpc.insecure_channel(f"127.0.0.1:{fimd.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            fim_pb2_grpc.FimDaemonStub(channel).GetWatchState(
                fim_pb2.GetWatchStateRequest(), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(f"127.0.0.1:{fimd.port}") as channel:  # mTLS port: no
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_watch_beyond_a_budget_is_refused_and_fimd_carries_on(
    pki: Pki, container: Container, tmp_path: Path
) -> None:
    small = FimdProcess(tmp_path / "small", pki, f"{PREFIX}small.", "--max-watches", "2")
    try:
        watches = [
            spec(container_id=container.container_id, paths=(_data(container),), pod_uid=f"b{i}")
            for i in range(3)
        ]
        for watch in watches[:2]:
            small.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=10)
            small.wait_active(watch.key)
        before = small.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            small.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watches[2]), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == (
            "NodeCapacity: watches: 2 of 2 in use (budget: --max-watches 2)"
        )
        after = small.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
        assert after.instance_id == before.instance_id  # no restart
        assert [(w.key, w.phase) for w in after.watches] == [
            (w.key, fim_pb2.WATCH_PHASE_ACTIVE) for w in before.watches
        ]
        container.write(_data(container, "still-watched"))
        path = _data(container, "still-watched")
        wait_for(
            lambda: [e["event"] for e in small.events(path)].count("CREATE") == 2,
            what="both held watches report",
        )
        assert small.ops("watch_rejected")[0]["budget"] == "watches"
        started = small.ops("started")[0]
        assert (started["max_watches"], started["engines"]) == (2, min(os.cpu_count() or 1, 4))
    finally:
        assert small.stop() == 0


def test_memory_budget_from_the_flag_refuses_watches(
    pki: Pki, container: Container, tmp_path: Path
) -> None:
    """fimd's cgroup working set (on this machine) against a deliberately tiny budget."""
    tiny = FimdProcess(tmp_path / "tiny", pki, f"{PREFIX}tiny.", "--memory-budget", "1Mi")
    try:
        started = tiny.ops("started")[0]
        if started["memory_cgroup"] is None:
            pytest.skip("no readable memory cgroup on this machine")
        assert (started["memory_budget"], started["memory_budget_source"]) == (
            1 << 20,
            "--memory-budget",
        )
        watch = spec(container_id=container.container_id, paths=(_data(container),))
        with pytest.raises(grpc.RpcError) as err:
            tiny.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = err.value.details() or ""
        assert details.startswith("NodeCapacity: memory: working set ")
        assert details.endswith("of the 1.0 MiB budget (--memory-budget)")
        state = tiny.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
        assert list(state.watches) == []
    finally:
        assert tiny.stop() == 0


def test_sigterm_stops_children_and_removes_queues(fimd: FimdProcess, container: Container) -> None:
    watch = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="e2e-t")
    status = _create(fimd, watch)
    assert fimd.stop() == 0
    assert not _alive(status.watcher_pid)
    assert fimd.ops("stopped")
    assert not [n for n in os.listdir(fimd.mqueue_dir) if ("/" + n).startswith(PREFIX)]


def test_every_line_of_the_run_is_sealed_and_verifies(fimd: FimdProcess) -> None:
    """After the run above (JSON and logFormat lines, engine kills, SIGTERM): the whole
    stdout of fimd is one boot whose chain verifies from seq 1, without a gap."""
    assert fimd.proc.wait(timeout=30) == 0
    data = fimd.stdout_path.read_bytes()
    reports = verify(records(data, "fimd.out"), RING)
    assert [(r.node, r.ok, r.first_seq) for r in reports] == [("node-1", True, 1)], reports
    [report] = reports
    assert report.verified == report.last_seq == data.count(b"\n")
    assert report.heartbeats >= 1
    assert any(b" fim-seal seq=" in line for line in data.split(b"\n"))  # logFormat lines
    first = json.loads(data.split(b"\n")[0])
    assert (first["msg"], first["kid"], first["seq"]) == ("heartbeat", "node-1/1", 1)
