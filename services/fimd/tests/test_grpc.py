"""The real gRPC server over mTLS with a fake resolver and fake engines: authentication,
error codes (RESOURCE_EXHAUSTED for a watch beyond a budget), health (also on the plaintext
health-only listener), and that bad or excess requests leave other watches alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from fim.v1.config_hash import config_hash
from services.fimd.budget import Budgets
from services.fimd.metrics import Metrics
from services.fimd.server import SERVICE_NAME, TlsFiles, build, build_health, new_health
from services.fimd.servicer import FimDaemonServicer
from services.fimd.tests.certs import Pki, make_pki
from services.fimd.tests.harness import FakeLauncher, FakeResolver, daemon_parts
from services.fimd.tests.specs import CONTAINER, spec


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


MAX_WATCHES = 2


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[tuple[int, Metrics]]:
    resolver = FakeResolver()
    resolver.pids[CONTAINER] = 4242
    budgets = Budgets(max_watches=MAX_WATCHES)
    with daemon_parts(resolver, FakeLauncher(), budgets=budgets) as (daemon, writer, _, metrics):
        tls = TlsFiles(str(pki.server_cert), str(pki.server_key), str(pki.ca))
        srv, port = build(FimDaemonServicer(daemon, writer, metrics), "127.0.0.1:0", tls)
        yield port, metrics
        srv.stop(0).wait()


def _channel(port: int, pki: Pki, cert: Path | None, key: Path | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.secure_channel(f"localhost:{port}", creds)


@pytest.fixture
def stub(server: tuple[int, Metrics], pki: Pki) -> Iterator[fim_pb2_grpc.FimDaemonStub]:
    with _channel(server[0], pki, pki.client_cert, pki.client_key) as channel:
        yield fim_pb2_grpc.FimDaemonStub(channel)


def test_create_get_destroy_over_mtls(stub: fim_pb2_grpc.FimDaemonStub) -> None:
    watch = spec(pod_uid="grpc-1")
    response = stub.CreateWatch(
        fim_pb2.CreateWatchRequest(spec=watch, config_hash=config_hash(watch)), timeout=5
    )
    assert response.changed
    assert response.status.config_hash == config_hash(watch)
    assert response.status.phase == fim_pb2.WATCH_PHASE_PENDING
    assert response.status.pid == 4242
    assert not stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=5).changed
    state = stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    assert state.node_name == "node-1"
    assert len(state.instance_id) == 32
    assert [w.key for w in state.watches] == [watch.key]
    assert state.limits.max_user_watches > 0
    assert stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5).existed
    assert not stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5).existed


@pytest.mark.parametrize(
    ("watch", "code", "detail"),
    [
        (spec(paths=("rel",)), grpc.StatusCode.INVALID_ARGUMENT, "spec.subjects[0].paths[0]"),
        (spec(events=("bogus",)), grpc.StatusCode.INVALID_ARGUMENT, "unknown event name"),
        (spec(log_format="{nope}"), grpc.StatusCode.INVALID_ARGUMENT, "unknown placeholder"),
        (
            spec(container_id="containerd://" + "ef" * 32),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no process of container",
        ),
    ],
)
def test_bad_requests_get_clear_errors_and_disturb_nothing(
    stub: fim_pb2_grpc.FimDaemonStub,
    server: tuple[int, Metrics],
    watch: fim_pb2.WatchSpec,
    code: grpc.StatusCode,
    detail: str,
) -> None:
    good = spec(pod_uid="survivor")
    requests = server[1].grpc_requests
    # The server and its counters are shared by the parametrized cases: count this case's.
    refused_before = requests.labels("CreateWatch", code.name)._value.get()
    ok_before = requests.labels("CreateWatch", "OK")._value.get()
    stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=good), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=5)
    assert err.value.code() == code
    assert detail in (err.value.details() or "")
    state = stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    assert [w.key for w in state.watches] == [good.key]
    assert requests.labels("CreateWatch", code.name)._value.get() == refused_before + 1
    assert requests.labels("CreateWatch", "OK")._value.get() == ok_before + 1
    stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=good.key), timeout=5)


def test_watch_beyond_a_budget_is_resource_exhausted_and_disturbs_nothing(
    stub: fim_pb2_grpc.FimDaemonStub, server: tuple[int, Metrics]
) -> None:
    held = [spec(pod_uid=f"held-{i}") for i in range(MAX_WATCHES)]
    for watch in held:
        stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=5)
    before = stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=spec(pod_uid="one-more")), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == (
        f"NodeCapacity: watches: {MAX_WATCHES} of {MAX_WATCHES} in use "
        f"(budget: --max-watches {MAX_WATCHES})"
    )
    after = stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    assert after.instance_id == before.instance_id
    assert [w.key for w in after.watches] == [w.key for w in before.watches]
    assert server[1].grpc_requests.labels("CreateWatch", "RESOURCE_EXHAUSTED")._value.get() == 1
    for watch in held:
        stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=5)


def test_destroy_validates_the_key(stub: fim_pb2_grpc.FimDaemonStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.DestroyWatch(fim_pb2.DestroyWatchRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key.watcher_uid: is required" in (err.value.details() or "")


@pytest.mark.parametrize("client", ["none", "rogue"])
def test_unauthenticated_clients_are_rejected(
    server: tuple[int, Metrics], pki: Pki, client: str
) -> None:
    cert, key = (None, None) if client == "none" else (pki.rogue_cert, pki.rogue_key)
    with _channel(server[0], pki, cert, key) as channel:
        stub = fim_pb2_grpc.FimDaemonStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_service(server: tuple[int, Metrics], pki: Pki) -> None:
    with _channel(server[0], pki, pki.client_cert, pki.client_key) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            request = health_pb2.HealthCheckRequest(service=service)
            # The generated HealthStub sets its methods in __init__; the stubs lack them.
            response = health.Check(request, timeout=5)  # type: ignore[attr-defined]
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_only_listener_serves_health_and_nothing_else() -> None:
    shared = new_health()
    server, port = build_health("127.0.0.1:0", shared)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAME):
                request = health_pb2.HealthCheckRequest(service=service)
                response = health.Check(request, timeout=5)  # type: ignore[attr-defined]
                assert response.status == health_pb2.HealthCheckResponse.SERVING
            stub = fim_pb2_grpc.FimDaemonStub(channel)
            calls: list[Callable[[], object]] = [
                lambda: stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5),
                lambda: stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=spec()), timeout=5),
                lambda: stub.DestroyWatch(fim_pb2.DestroyWatchRequest(), timeout=5),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # The status is the one fimd's mTLS port reports: shutting down shows here.
            shared.enter_graceful_shutdown()
            response = health.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
            )
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(0).wait()
