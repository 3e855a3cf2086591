"""The issued certificates over real gRPC TLS, as fimd and the controller use them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from libs.pki.bootstrap import Names, ensure, server_name
from libs.pki.tests.fakes import MemoryStore

NS = "fim-system"
NAMES = Names()


@pytest.fixture(scope="module")
def store() -> MemoryStore:
    store = MemoryStore()
    ensure(store, NS, datetime.now(UTC))
    return store


@pytest.fixture(scope="module")
def port(store: MemoryStore) -> Iterator[int]:
    """A server configured like fimd: its server cert, client certs required."""
    fimd = store.secrets[NAMES.fimd].data
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [(fimd["tls.key"], fimd["tls.crt"])],
        root_certificates=fimd["ca.crt"],
        require_client_auth=True,
    )
    bound = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield bound
    server.stop(None)


def _check(port: int, client_secret: str | None, store: MemoryStore, name: str) -> grpc.StatusCode:
    """The status of a health check as the controller makes its calls (pinned server name)."""
    bundle = store.secrets[NAMES.controller].data["ca.crt"]
    keys = store.secrets[client_secret].data if client_secret else {}
    credentials = grpc.ssl_channel_credentials(
        root_certificates=bundle,
        private_key=keys.get("tls.key"),
        certificate_chain=keys.get("tls.crt"),
    )
    options = [("grpc.ssl_target_name_override", name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        # types-grpcio-health-checking declares HealthStub without methods; call by path.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code
    return grpc.StatusCode.OK


def test_controller_client_cert_is_accepted(port: int, store: MemoryStore) -> None:
    assert _check(port, NAMES.controller, store, server_name(NS)) == grpc.StatusCode.OK


def test_no_client_cert_is_rejected(port: int, store: MemoryStore) -> None:
    assert _check(port, None, store, server_name(NS)) == grpc.StatusCode.UNAVAILABLE


def test_fimd_server_cert_cannot_act_as_a_client(port: int, store: MemoryStore) -> None:
    # A node holding fimd's key must not be able to drive other nodes' fimd.
    assert _check(port, NAMES.fimd, store, server_name(NS)) == grpc.StatusCode.UNAVAILABLE


def test_server_name_is_pinned(port: int, store: MemoryStore) -> None:
    assert (
        _check(port, NAMES.controller, store, "fimd.elsewhere.svc") == grpc.StatusCode.UNAVAILABLE
    )
