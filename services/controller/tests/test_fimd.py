"""The fimd transport over real gRPC: discovery, typed calls, deadlines, mTLS."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from services.controller.desired import Desired, Key, desired_watch
from services.controller.fimd_client import Endpoint, FimdError, FimdPool, Tls, endpoints
from services.controller.objects import Container, Pod
from services.controller.state import Observed, Rejection
from services.controller.tests.builders import NOW, pod, watcher
from services.controller.tests.certs import make_ca
from services.controller.tests.fake_fimd import FakeFimd, FakeFimdServer, capacity_text

SERVER_NAME = "fimd.fim-system.svc"


def fimd_pod(name: str, node: str, *, ip: str = "10.0.0.1", running: bool = True) -> Pod:
    return Pod(
        namespace="fim-system",
        name=name,
        uid=name,
        node_name=node,
        phase="Running" if running else "Pending",
        containers=(Container(name="fimd", container_id="containerd://" + "0" * 64),),
        pod_ip=ip,
        host_ip="192.0.2.1",
        ports={"grpc": "7443"},
    )


def test_endpoints_use_running_pods_with_the_named_port() -> None:
    pods = [
        fimd_pod("a", "n1"),
        fimd_pod("b", "n2", running=False),
        fimd_pod("c", "n3", ip="fd00::1"),
        fimd_pod("d", "n4", ip=""),
    ]
    assert endpoints(pods, port_name="grpc", use_host_ip=False) == {
        "n1": Endpoint("n1", "10.0.0.1:7443"),
        "n3": Endpoint("n3", "[fd00::1]:7443"),
    }
    assert endpoints(pods, port_name="grpc", use_host_ip=True)["n1"].address == "192.0.2.1:7443"
    assert endpoints(pods, port_name="metrics", use_host_ip=False) == {}


def first_watch() -> Desired:
    w, p = watcher(), pod()
    assert w.spec is not None
    return desired_watch(w, w.spec, p, p.containers[0])


@pytest.fixture
def server() -> Iterator[FakeFimdServer]:
    running = FakeFimdServer(FakeFimd("n1"))
    yield running
    running.stop()


def test_calls_round_trip(server: FakeFimdServer) -> None:
    client = FimdPool(None, deadline=5).client(Endpoint("n1", server.address))
    want = first_watch()
    [(sent, observed)] = list(client.create_many([want]))
    assert isinstance(observed, Observed)
    assert (sent, observed.key, observed.config_hash) == (
        want,
        Key("w1", "p1", "app"),
        want.config_hash,
    )
    state = client.get_state()
    assert (state.node, state.instance_id) == ("n1", server.fimd.instance_id)
    assert state.watches == {observed.key: observed}
    assert list(client.destroy_many([observed.key])) == [(observed.key, True)]
    assert list(client.destroy_many([observed.key])) == [(observed.key, False)]


def test_many_calls_are_pipelined_and_answered_in_order(server: FakeFimdServer) -> None:
    client = FimdPool(None, deadline=5).client(Endpoint("n1", server.address))
    w = watcher()
    assert w.spec is not None
    pods = [pod(f"web-{i}", uid=f"p{i}") for i in range(100)]
    wants = [desired_watch(w, w.spec, p, p.containers[0]) for p in pods]
    results = list(client.create_many(wants))
    assert [sent for sent, _ in results] == wants
    assert len(server.fimd.snapshot()) == 100
    keys = [want.key for want in wants]
    assert [key for key, existed in client.destroy_many(keys) if existed is True] == keys


def test_rejection_keeps_the_grpc_code(server: FakeFimdServer) -> None:
    server.fimd.reject = lambda spec: (grpc.StatusCode.INVALID_ARGUMENT, "paths[0]: bad")
    client = FimdPool(None, deadline=5).client(Endpoint("n1", server.address))
    [(_, error)] = list(client.create_many([first_watch()]))
    assert isinstance(error, FimdError)
    assert (error.code, error.message, error.rejected) == (
        "INVALID_ARGUMENT",
        "paths[0]: bad",
        True,
    )


@pytest.mark.parametrize(
    ("code", "rejected"),
    [
        ("INVALID_ARGUMENT", True),
        ("FAILED_PRECONDITION", True),
        ("RESOURCE_EXHAUSTED", True),  # a node budget used up: only this create is refused
        ("UNAVAILABLE", False),
        ("DEADLINE_EXCEEDED", False),
        ("UNKNOWN", False),
        ("WRONG_NODE", False),
    ],
)
def test_rejection_classification(code: str, rejected: bool) -> None:
    assert FimdError(code, "m").rejected is rejected
    rejection = Rejection(config_hash="h", code=code, message="m", retry_at=NOW)
    assert rejection.over_capacity is (code == "RESOURCE_EXHAUSTED")


def test_capacity_refusal_rejects_only_the_creates_beyond_it(server: FakeFimdServer) -> None:
    server.fimd.capacity = 1
    client = FimdPool(None, deadline=5).client(Endpoint("n1", server.address))
    w = watcher()
    assert w.spec is not None
    wants = [desired_watch(w, w.spec, p, p.containers[0]) for p in (pod(), pod(uid="p2"))]
    # One at a time: pipelined calls may reach fimd in any order.
    [(_, created)] = list(client.create_many(wants[:1]))
    [(_, refused)] = list(client.create_many(wants[1:]))
    assert isinstance(created, Observed)
    assert isinstance(refused, FimdError)
    assert (refused.code, refused.rejected) == ("RESOURCE_EXHAUSTED", True)
    assert refused.message == f"NodeCapacity: {capacity_text(1, 1)}"
    # The node still answers everything else, and takes the watch once there is room.
    assert client.get_state().watches.keys() == {created.key}
    server.fimd.capacity = 2
    [(_, retried)] = list(client.create_many(wants[1:]))
    assert isinstance(retried, Observed)


def test_unreachable_fimd_fails_within_the_deadline() -> None:
    client = FimdPool(None, deadline=0.5).client(Endpoint("n1", "127.0.0.1:1"))
    started = time.monotonic()
    with pytest.raises(FimdError) as caught:
        client.get_state()
    assert caught.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert not caught.value.rejected
    assert time.monotonic() - started < 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(directory, "ca"), make_ca(directory, "rogue-ca")
    server = ca.issue(directory, "fimd", server_names=(SERVER_NAME,))
    client = ca.issue(directory, "controller")
    rogue_client = rogue.issue(directory, "rogue")
    files = {
        "ca": ca.cert,
        "server_cert": server.cert,
        "server_key": server.key,
        "client_cert": client.cert,
        "client_key": client.key,
        "rogue_cert": rogue_client.cert,
        "rogue_key": rogue_client.key,
    }
    return {name: path.read_bytes() for name, path in files.items()}


@pytest.fixture
def mtls_server(pki: dict[str, bytes]) -> Iterator[FakeFimdServer]:
    credentials = grpc.ssl_server_credentials(
        [(pki["server_key"], pki["server_cert"])],
        root_certificates=pki["ca"],
        require_client_auth=True,
    )
    running = FakeFimdServer(FakeFimd("n1"), credentials)
    yield running
    running.stop()


def test_mtls_with_the_client_certificate(
    mtls_server: FakeFimdServer, pki: dict[str, bytes]
) -> None:
    tls = Tls(ca=pki["ca"], cert=pki["client_cert"], key=pki["client_key"], server_name=SERVER_NAME)
    state = (
        FimdPool(lambda: tls, deadline=5).client(Endpoint("n1", mtls_server.address)).get_state()
    )
    assert state.node == "n1"


def test_rotated_certificates_are_used_after_a_refresh(
    mtls_server: FakeFimdServer, pki: dict[str, bytes]
) -> None:
    good = Tls(
        ca=pki["ca"], cert=pki["client_cert"], key=pki["client_key"], server_name=SERVER_NAME
    )
    rogue = Tls(ca=pki["ca"], cert=pki["rogue_cert"], key=pki["rogue_key"], server_name=SERVER_NAME)
    mounted = [rogue]
    pool = FimdPool(lambda: mounted[0], deadline=2)
    endpoint = Endpoint("n1", mtls_server.address)
    with pytest.raises(FimdError):
        pool.client(endpoint).get_state()
    mounted[0] = good  # the Secret was rotated and the kubelet updated the files
    pool.refresh([endpoint])
    assert pool.client(endpoint).get_state().node == "n1"


def test_mtls_refuses_a_client_of_another_ca(
    mtls_server: FakeFimdServer, pki: dict[str, bytes]
) -> None:
    tls = Tls(ca=pki["ca"], cert=pki["rogue_cert"], key=pki["rogue_key"], server_name=SERVER_NAME)
    with pytest.raises(FimdError) as caught:
        FimdPool(lambda: tls, deadline=2).client(Endpoint("n1", mtls_server.address)).get_state()
    assert caught.value.code == "UNAVAILABLE"
    assert mtls_server.fimd.calls["GetWatchState"] == 0


def test_pool_reuses_and_closes_channels(server: FakeFimdServer) -> None:
    pool = FimdPool(None, deadline=5)
    endpoint = Endpoint("n1", server.address)
    assert pool.client(endpoint) is pool.client(endpoint)
    first = pool.client(endpoint)
    pool.refresh([endpoint])
    assert pool.client(endpoint) is first
    pool.refresh([])
    assert pool.client(endpoint) is not first
