"""The gRPC servers: FimDaemon + grpc.health.v1 on one port, mTLS unless told otherwise;
optionally grpc.health.v1 alone on a second, plaintext port for kubelet probes.

With TLS the server requires and verifies a client certificate signed by the client CA
(`require_client_auth`), so only the controller (holding such a certificate) can call it.
Its certificate, key and client CA are re-read when the files change (`tls.py`), so a
renewed Secret is picked up without a restart.

The health-only listener exists because the kubelet's built-in gRPC probe cannot present a
client certificate. It serves nothing but grpc.health.v1 (FimDaemon calls there fail with
UNIMPLEMENTED), shares the health status of the mTLS port, and reveals only SERVING or
NOT_SERVING.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fim.v1 import fim_pb2_grpc
from services.fimd.servicer import FimDaemonServicer
from services.fimd.tls import OpReporter, ReloadingCredentials, TlsFiles

__all__ = ["MAX_MESSAGE_BYTES", "SERVICE_NAME", "TlsFiles", "build", "build_health", "new_health"]

SERVICE_NAME = "fim.v1.FimDaemon"
# A spec at the proto limits (32 x 64 paths of 4096 bytes) is ~8.4 MB: above gRPC's 4 MB
# default, so the limit is raised to let validation, not the transport, reject requests.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def new_health() -> health.HealthServicer:
    """A health servicer reporting fimd ("" and fim.v1.FimDaemon) as SERVING."""
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def build(
    servicer: FimDaemonServicer,
    listen: str,
    tls: TlsFiles | None,
    workers: int = 8,
    *,
    health_servicer: health.HealthServicer | None = None,
    report: OpReporter | None = None,
) -> tuple[grpc.Server, int]:
    """A started server and its bound port; `tls=None` serves plaintext. `report` receives
    the certificate reload lines. Raises TlsError if the TLS files are unusable."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fimd-grpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    fim_pb2_grpc.add_FimDaemonServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer or new_health(), server)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        credentials = ReloadingCredentials(tls, report) if report else ReloadingCredentials(tls)
        port = server.add_secure_port(listen, credentials.credentials())
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port


def build_health(
    listen: str, health_servicer: health.HealthServicer | None = None
) -> tuple[grpc.Server, int]:
    """A started plaintext server with grpc.health.v1 only, and its bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="fimd-health"),
        # Health requests are a few bytes; nothing larger has a reason to arrive here.
        options=[("grpc.max_receive_message_length", 4096)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer or new_health(), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port
