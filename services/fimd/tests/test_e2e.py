"""fimd end to end: the real daemon over mTLS, real fimnotify processes, real namespaced
"container" processes in real kubepods cgroups, real message queues; the product is the
JSON line on fimd's stdout."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import posix_ipc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from services.fimd.tests.certs import Pki, make_pki
from services.fimd.tests.container import Container
from services.fimd.tests.fimd_process import FimdProcess
from services.fimd.tests.harness import wait_for
from services.fimd.tests.specs import spec

PREFIX = f"/fimk8s-e2e.{os.getpid()}."


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
    process = FimdProcess(tmp_path_factory.mktemp("fimd"), pki, PREFIX)
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
    first = _create(fimd, watch)
    watch.log_format = "FIM {event} {ftype} '{dir}{sep}{file}' ({pod}:{node})"
    response = fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=10)
    assert response.changed
    # The old fimnotify is stopped only once the new one is ready: no window without a watch.
    wait_for(lambda: not _alive(first.watcher_pid), what="old fimnotify stopped")
    second = fimd.wait_active(watch.key)
    assert second.watcher_pid != first.watcher_pid
    container.write(_data(container, "t.txt"))
    expected = f"FIM CREATE file '{_data(container, 't.txt')}' (web-0:node-1)"
    wait_for(lambda: expected in fimd.raw_lines(), what="template line")
    assert fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5).existed
    wait_for(lambda: not _alive(second.watcher_pid), what="fimnotify stopped")
    container.write(_data(container, "after-destroy"))
    time.sleep(0.3)
    assert not any("after-destroy" in line for line in fimd.raw_lines())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def test_killed_fimnotify_is_restarted(fimd: FimdProcess, container: Container) -> None:
    watch = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="e2e-k")
    first = _create(fimd, watch)
    os.kill(first.watcher_pid, signal.SIGKILL)
    wait_for(lambda: fimd.watch(watch.key).restarts == 1, what="restart")  # type: ignore[union-attr]
    second = fimd.wait_active(watch.key)
    assert second.watcher_pid != first.watcher_pid
    container.write(_data(container, "after-restart"))
    wait_for(lambda: fimd.events(_data(container, "after-restart")), what="event after restart")
    fimd.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5)


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


def test_metrics_endpoint(fimd: FimdProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{fimd.metrics_port}/metrics") as response:
        text = response.read().decode()
    assert 'fimd_events_total{event="CREATE",watcher="shop/myapp-logs"}' in text
    assert "fimd_inotify_max_user_watches" in text
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


def test_sigterm_stops_children_and_removes_queues(fimd: FimdProcess, container: Container) -> None:
    watch = spec(container_id=container.container_id, paths=(_data(container),), pod_uid="e2e-t")
    status = _create(fimd, watch)
    assert fimd.stop() == 0
    assert not _alive(status.watcher_pid)
    assert fimd.ops("stopped")
    assert not [n for n in os.listdir(fimd.mqueue_dir) if ("/" + n).startswith(PREFIX)]
