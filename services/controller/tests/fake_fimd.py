"""A fake fimd: an in-process gRPC server that implements fim.v1 FimDaemon over real gRPC.

It holds watches like fimd's bookkeeping (by WatchKey, with the fim.v1 config hash), counts
every call by method, and can be told to restart with empty state, to report a phase (and a
reason and message, which in fimd name files a pod controls), to reject specs, or to hold at
most `capacity` watches (refusing more with RESOURCE_EXHAUSTED, like fimd's admission
control), so controller tests see the controller's real calls and can break a node.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import attrs
import grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from fim.v1.config_hash import config_hash

Reject = Callable[[fim_pb2.WatchSpec], tuple[grpc.StatusCode, str] | None]
KeyTuple = tuple[str, str, str]


def capacity_text(in_use: int, capacity: int) -> str:
    """The budget part of the fake's RESOURCE_EXHAUSTED message (fimd's wording)."""
    return (
        f"inotify watches: {in_use} of {capacity} in use "
        f"(budget: half of fs.inotify.max_user_watches {2 * capacity})"
    )


@attrs.frozen
class Call:
    """One call as the fake saw it: wall-clock start and end, and the caller's user agent."""

    method: str
    start: float
    end: float
    agent: str


def key_of(key: fim_pb2.WatchKey) -> KeyTuple:
    return (key.watcher_uid, key.pod_uid, key.container_name)


class FakeFimd(fim_pb2_grpc.FimDaemonServicer):
    """fimd's contract in memory; thread-safe."""

    def __init__(self, node: str, phase: fim_pb2.WatchPhase.ValueType = fim_pb2.WATCH_PHASE_ACTIVE):
        self.node = node
        self.phase = phase
        self.reason = ""  # reported with every watch, like fimd's warnings
        self.message = ""
        self.reject: Reject | None = None
        self.capacity: int | None = None  # None: no budget
        self.instance_id = uuid.uuid4().hex
        self.calls: Counter[str] = Counter()
        self.log: list[Call] = []  # every call, in order of completion
        self.watches: dict[KeyTuple, fim_pb2.WatchSpec] = {}
        self.lock = threading.Lock()

    @contextmanager
    def _logged(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        metadata = dict(context.invocation_metadata())
        start = time.time()
        try:
            yield
        finally:
            call = Call(method, start, time.time(), str(metadata.get("user-agent", "")))
            with self.lock:
                self.log.append(call)

    def calls_by(self, agent: str) -> list[Call]:
        """The calls whose user agent contains `agent`."""
        with self.lock:
            return [call for call in self.log if agent in call.agent]

    def restart(self) -> None:
        """fimd died and came back: empty state, new instance ID."""
        with self.lock:
            self.watches.clear()
            self.instance_id = uuid.uuid4().hex

    def _status(self, spec: fim_pb2.WatchSpec) -> fim_pb2.WatchStatus:
        return fim_pb2.WatchStatus(
            key=spec.key,
            config_hash=config_hash(spec),
            phase=self.phase,
            reason=self.reason,
            message=self.message,
            container_id=spec.container_id,
            pid=4242,
        )

    def CreateWatch(
        self, request: fim_pb2.CreateWatchRequest, context: grpc.ServicerContext
    ) -> fim_pb2.CreateWatchResponse:
        with self._logged("CreateWatch", context), self.lock:
            self.calls["CreateWatch"] += 1
            spec = request.spec
            if request.config_hash and request.config_hash != config_hash(spec):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config_hash does not match spec")
            refusal = self.reject(spec) if self.reject else None
            if refusal is not None:
                context.abort(*refusal)
            key = key_of(spec.key)
            if key not in self.watches and self.capacity is not None:
                self._admit(context)
            changed = self.watches.get(key) != spec
            self.watches[key] = spec
            return fim_pb2.CreateWatchResponse(status=self._status(spec), changed=changed)

    def _admit(self, context: grpc.ServicerContext) -> None:
        """Refuses a new watch beyond `capacity` as fimd does when a node budget is used up."""
        assert self.capacity is not None
        if len(self.watches) >= self.capacity:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"NodeCapacity: {capacity_text(len(self.watches), self.capacity)}",
            )

    def DestroyWatch(
        self, request: fim_pb2.DestroyWatchRequest, context: grpc.ServicerContext
    ) -> fim_pb2.DestroyWatchResponse:
        with self._logged("DestroyWatch", context), self.lock:
            self.calls["DestroyWatch"] += 1
            existed = self.watches.pop(key_of(request.key), None) is not None
            return fim_pb2.DestroyWatchResponse(existed=existed)

    def GetWatchState(
        self, request: fim_pb2.GetWatchStateRequest, context: grpc.ServicerContext
    ) -> fim_pb2.GetWatchStateResponse:
        with self._logged("GetWatchState", context), self.lock:
            self.calls["GetWatchState"] += 1
            return fim_pb2.GetWatchStateResponse(
                node_name=self.node,
                instance_id=self.instance_id,
                watches=[self._status(spec) for spec in self.watches.values()],
            )

    def snapshot(self) -> dict[KeyTuple, fim_pb2.WatchSpec]:
        with self.lock:
            return dict(self.watches)


class FakeFimdServer:
    """Serves a FakeFimd on 127.0.0.1 (a free port), plaintext or with server credentials."""

    def __init__(
        self, fimd: FakeFimd, credentials: grpc.ServerCredentials | None = None, port: int = 0
    ) -> None:
        self.fimd = fimd
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        fim_pb2_grpc.add_FimDaemonServicer_to_server(fimd, self._server)
        address = f"127.0.0.1:{port}"
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
