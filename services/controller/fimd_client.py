"""The fimd transport: discovery from fimd pods, mTLS channels, typed calls with deadlines.

fimd pods are found by label in the controller's namespace; each is reached on its pod (or
host) IP and the port its container declares under a name, over mTLS with the
controller's client certificate (`insecure` is for local development only). Every call
has a deadline, so an unreachable fimd costs one bounded wait and degrades only its node.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import attrs
import grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from services.controller.desired import Desired, Key
from services.controller.objects import Pod
from services.controller.state import OVER_CAPACITY, NodeState, Observed

#: gRPC codes with which fimd refuses one request (a spec it cannot honour, a container it
#: cannot find, a node budget used up) while it keeps serving every other call.
REJECTION_CODES = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", OVER_CAPACITY})

#: gRPC waits up to this long between reconnection attempts to an unreachable fimd (its
#: default, 120 s, would leave a node that comes back unnoticed for up to two minutes after
#: a long outage, however often the sweep asks; calls fail fast while the channel waits).
MAX_RECONNECT_BACKOFF_MS = 10_000


class FimdError(Exception):
    """A failed fimd call; `code` is the gRPC status code name (e.g. UNAVAILABLE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def rejected(self) -> bool:
        """fimd refused this one request; other calls to it may still succeed."""
        return self.code in REJECTION_CODES


@attrs.frozen
class Endpoint:
    node: str
    address: str  # host:port


def endpoints(
    fimd_pods: Iterable[Pod], *, port_name: str, use_host_ip: bool
) -> dict[str, Endpoint]:
    """node -> the fimd to call there: running fimd pods with an IP and the named port."""
    found = {}
    for pod in sorted(fimd_pods, key=lambda p: (p.node_name, p.name)):
        ip = pod.host_ip if use_host_ip else pod.pod_ip
        port = pod.ports.get(port_name)
        if pod.running and ip and port and pod.node_name not in found:
            host = f"[{ip}]" if ":" in ip else ip
            found[pod.node_name] = Endpoint(pod.node_name, f"{host}:{port}")
    return found


@attrs.frozen(kw_only=True)
class Tls:
    """The controller's mTLS material (PEM bytes) and the name fimd certificates carry."""

    ca: bytes
    cert: bytes
    key: bytes
    server_name: str = ""


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Tag = TypeVar("_Tag")

#: Calls in flight per node when applying many changes: latency overlaps, memory stays bounded.
WINDOW = 32


def _error(err: grpc.RpcError) -> FimdError:
    # Failed unary calls raise an RpcError that is also a grpc.Call with code/details.
    code, details = getattr(err, "code", None), getattr(err, "details", None)
    name = code().name if callable(code) else "UNKNOWN"
    return FimdError(name, str(details() if callable(details) else err))


def _call(
    rpc: grpc.UnaryUnaryMultiCallable[_Request, _Response], request: _Request, deadline: float
) -> _Response:
    try:
        return rpc(request, timeout=deadline)
    except grpc.RpcError as err:
        raise _error(err) from err


def _pipelined(
    rpc: grpc.UnaryUnaryMultiCallable[_Request, _Response],
    requests: Iterable[tuple[_Tag, _Request]],
    deadline: float,
) -> Iterator[tuple[_Tag, _Response | FimdError]]:
    """Each request's result (or error) in order, with up to WINDOW calls in flight."""
    in_flight: deque[tuple[_Tag, grpc.Future[_Response]]] = deque()

    def settle() -> tuple[_Tag, _Response | FimdError]:
        tag, future = in_flight.popleft()
        try:
            return tag, future.result()
        except grpc.RpcError as err:
            return tag, _error(err)

    try:
        for tag, request in requests:
            in_flight.append((tag, rpc.future(request, timeout=deadline)))
            if len(in_flight) >= WINDOW:
                yield settle()
        while in_flight:
            yield settle()
    finally:
        for _, future in in_flight:  # the caller stopped early (fimd unreachable)
            future.cancel()


class FimdClient:
    """Calls to one fimd."""

    def __init__(self, channel: grpc.Channel, deadline: float) -> None:
        self.channel = channel
        self._stub = fim_pb2_grpc.FimDaemonStub(channel)
        self._deadline = deadline

    def get_state(self) -> NodeState:
        response = _call(self._stub.GetWatchState, fim_pb2.GetWatchStateRequest(), self._deadline)
        observed = {Key.from_proto(w.key): Observed.from_proto(w) for w in response.watches}
        return NodeState(
            node=response.node_name, instance_id=response.instance_id, watches=observed
        )

    def create_many(
        self, wants: Iterable[Desired]
    ) -> Iterator[tuple[Desired, Observed | FimdError]]:
        """CreateWatch for each, pipelined; results in order."""
        requests = (
            (want, fim_pb2.CreateWatchRequest(spec=want.spec, config_hash=want.config_hash))
            for want in wants
        )
        for want, result in _pipelined(self._stub.CreateWatch, requests, self._deadline):
            yield (
                want,
                result if isinstance(result, FimdError) else Observed.from_proto(result.status),
            )

    def destroy_many(self, keys: Iterable[Key]) -> Iterator[tuple[Key, bool | FimdError]]:
        """DestroyWatch for each, pipelined; results in order."""
        requests = ((key, fim_pb2.DestroyWatchRequest(key=key.to_proto())) for key in keys)
        for key, result in _pipelined(self._stub.DestroyWatch, requests, self._deadline):
            yield key, result if isinstance(result, FimdError) else result.existed


class FimdPool:
    """One channel per fimd endpoint, reused across syncs; channels of gone endpoints close.

    `load_tls` (None: plaintext) is called again by `refresh`, on every sweep: when the
    mounted certificate Secret was rotated, every channel is reopened with the new material.
    """

    def __init__(
        self, load_tls: Callable[[], Tls] | None, *, deadline: float, user_agent: str = ""
    ) -> None:
        self._load_tls = load_tls
        #: Names this replica in fimd's view of its callers (gRPC's user-agent prefix).
        self._options: list[tuple[str, str | int]] = [
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)
        ]
        if user_agent:
            self._options.append(("grpc.primary_user_agent", user_agent))
        self._tls = load_tls() if load_tls else None
        self._deadline = deadline
        self._lock = threading.Lock()
        self._clients: dict[Endpoint, FimdClient] = {}

    def _channel(self, address: str) -> grpc.Channel:
        if self._tls is None:
            return grpc.insecure_channel(address, options=self._options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._tls.ca,
            private_key=self._tls.key,
            certificate_chain=self._tls.cert,
        )
        options = list(self._options)
        if self._tls.server_name:
            # fimd certificates name the service, not each pod IP.
            options.append(("grpc.ssl_target_name_override", self._tls.server_name))
        return grpc.secure_channel(address, credentials, options=options)

    def client(self, endpoint: Endpoint) -> FimdClient:
        with self._lock:
            found = self._clients.get(endpoint)
            if found is None:
                found = FimdClient(self._channel(endpoint.address), self._deadline)
                self._clients[endpoint] = found
            return found

    def refresh(self, live: Iterable[Endpoint]) -> None:
        """Closes channels to endpoints that no longer exist (a fimd pod was replaced), or
        all of them when the TLS material changed."""
        keep = set(live)
        tls = self._load_tls() if self._load_tls else None
        with self._lock:
            if tls != self._tls:
                self._tls, keep = tls, set()
            gone = [e for e in self._clients if e not in keep]
            closing = [self._clients.pop(e) for e in gone]
        for client in closing:
            client.channel.close()

    def close(self) -> None:
        with self._lock:
            closing = list(self._clients.values())
            self._clients.clear()
        for client in closing:
            client.channel.close()
