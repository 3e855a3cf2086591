"""The gRPC server: FimDaemon + grpc.health.v1 on one port, mTLS unless told otherwise.

With TLS the server requires and verifies a client certificate signed by the client CA
(`require_client_auth`), so only the controller (holding such a certificate) can call it.
"""

from __future__ import annotations

from concurrent import futures

import attrs
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fim.v1 import fim_pb2_grpc
from services.fimd.servicer import FimDaemonServicer

SERVICE_NAME = "fim.v1.FimDaemon"
# A spec at the proto limits (32 x 64 paths of 4096 bytes) is ~8.4 MB: above gRPC's 4 MB
# default, so the limit is raised to let validation, not the transport, reject requests.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@attrs.frozen
class TlsFiles:
    cert: str
    key: str
    client_ca: str

    def credentials(self) -> grpc.ServerCredentials:
        with open(self.key, "rb") as f:
            key = f.read()
        with open(self.cert, "rb") as f:
            cert = f.read()
        with open(self.client_ca, "rb") as f:
            ca = f.read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )


def build(
    servicer: FimDaemonServicer, listen: str, tls: TlsFiles | None, workers: int = 8
) -> tuple[grpc.Server, int]:
    """A started server and its bound port; `tls=None` serves plaintext."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fimd-grpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    fim_pb2_grpc.add_FimDaemonServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, tls.credentials())
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port
