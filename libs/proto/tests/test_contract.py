"""The generated fim.v1 code carries every message of the contract unchanged over a real gRPC
channel (requests to the server, responses and refusals back), with the health service."""

from collections.abc import Iterator
from concurrent import futures
from typing import Any, cast

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from fim.v1.config_hash import config_hash


def make_spec(tags: dict[str, str]) -> fim_pb2.WatchSpec:
    return fim_pb2.WatchSpec(
        key=fim_pb2.WatchKey(watcher_uid="w-uid", pod_uid="p-uid", container_name="app"),
        identity=fim_pb2.Identity(
            watcher_namespace="shop", watcher_name="logs", pod_namespace="shop", pod_name="web-0"
        ),
        container_id="containerd://" + "a" * 64,
        subjects=[fim_pb2.Subject(paths=["/var/log"], events=["modify"], tags=tags)],
    )


class Recorder(fim_pb2_grpc.FimDaemonServicer):
    """Records each request and answers with the response the test queued: what is checked
    is what crosses the wire (the generated code over real gRPC), not a stand-in's logic.
    fimd's real servicer is tested over mTLS in services/fimd/tests/test_grpc.py."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.replies: list[Message | grpc.StatusCode] = []

    def _answer(self, request: Message, context: grpc.ServicerContext) -> Any:
        self.received.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, grpc.StatusCode):
            context.abort(reply, f"refused: {reply.name}")
        return reply

    def CreateWatch(
        self, request: fim_pb2.CreateWatchRequest, context: grpc.ServicerContext
    ) -> fim_pb2.CreateWatchResponse:
        return cast(fim_pb2.CreateWatchResponse, self._answer(request, context))

    def DestroyWatch(
        self, request: fim_pb2.DestroyWatchRequest, context: grpc.ServicerContext
    ) -> fim_pb2.DestroyWatchResponse:
        return cast(fim_pb2.DestroyWatchResponse, self._answer(request, context))

    def GetWatchState(
        self, request: fim_pb2.GetWatchStateRequest, context: grpc.ServicerContext
    ) -> fim_pb2.GetWatchStateResponse:
        return cast(fim_pb2.GetWatchStateResponse, self._answer(request, context))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def channel(recorder: Recorder) -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fim_pb2_grpc.add_FimDaemonServicer_to_server(recorder, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        server.stop(grace=None)


def test_every_rpc_carries_its_messages_unchanged(
    channel: grpc.Channel, recorder: Recorder
) -> None:
    stub = fim_pb2_grpc.FimDaemonStub(channel)
    spec = make_spec({"team": "payments", "tier": "1"})
    spec.subjects[0].coalesce_ms = 250
    spec.line_budget = 100
    create = fim_pb2.CreateWatchRequest(spec=spec, config_hash=config_hash(spec))
    status = fim_pb2.WatchStatus(
        key=spec.key, config_hash=config_hash(spec), phase=fim_pb2.WATCH_PHASE_ACTIVE,
        pid=4242, watcher_pid=77, inotify_watches=3, restarts=2, reason="PathsPending",
        message="1 configured path(s) do not exist yet",
    )  # fmt: skip
    state = fim_pb2.GetWatchStateResponse(node_name="node-a", instance_id="i" * 32)
    state.watches.append(status)
    created = fim_pb2.CreateWatchResponse(status=status, changed=True)
    destroyed = fim_pb2.DestroyWatchResponse(existed=True)
    recorder.replies = [created, state, destroyed]
    destroy = fim_pb2.DestroyWatchRequest(key=spec.key)
    assert stub.CreateWatch(create, timeout=5) == created
    assert stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5) == state
    assert stub.DestroyWatch(destroy, timeout=5) == destroyed
    assert recorder.received == [create, fim_pb2.GetWatchStateRequest(), destroy]
    # The spec arrived byte for byte, so both ends compute the same hash.
    (got,) = [r for r in recorder.received if isinstance(r, fim_pb2.CreateWatchRequest)]
    assert config_hash(got.spec) == create.config_hash


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_a_refusal_reaches_the_caller_with_its_code_and_detail(
    channel: grpc.Channel, recorder: Recorder, code: grpc.StatusCode
) -> None:
    recorder.replies = [code]
    stub = fim_pb2_grpc.FimDaemonStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=make_spec({})), timeout=5)
    assert err.value.code() == code
    assert err.value.details() == f"refused: {code.name}"


def test_health_service_is_served(channel: grpc.Channel) -> None:
    # types-grpcio-health-checking declares HealthStub without methods; call by path.
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply = check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_config_hash_ignores_map_order_but_not_content() -> None:
    forward = make_spec({"a": "1", "b": "2", "c": "3"})
    backward = make_spec({"c": "3", "b": "2", "a": "1"})
    assert config_hash(forward) == config_hash(backward)
    assert config_hash(forward) != config_hash(make_spec({"a": "1", "b": "2", "c": "4"}))
    assert len(config_hash(forward)) == 64


def test_unknown_fields_survive_a_round_trip_for_forward_compatibility() -> None:
    spec = make_spec({})
    data = spec.SerializeToString() + b"\xf8\x07\x01"  # field 127, varint 1: a future field
    parsed = fim_pb2.WatchSpec.FromString(data)
    assert parsed.key.pod_uid == "p-uid"
    assert parsed.SerializeToString().endswith(b"\xf8\x07\x01")


def test_volume_fields_change_the_hash_only_when_set() -> None:
    plain = make_spec({})
    assert fim_pb2.WatchSpec.FromString(plain.SerializeToString()) == plain
    # Unset (0) coalesce_ms and line_budget are not serialized: specs written before the
    # fields existed keep their hash, so no running watch is restarted by an upgrade.
    assert plain.SerializeToString(deterministic=True) == fim_pb2.WatchSpec(
        key=plain.key, identity=plain.identity, container_id=plain.container_id,
        subjects=[fim_pb2.Subject(paths=["/var/log"], events=["modify"], coalesce_ms=0)],
        line_budget=0,
    ).SerializeToString(deterministic=True)  # fmt: skip
    coalescing = make_spec({})
    coalescing.subjects[0].coalesce_ms = 1000
    budgeted = make_spec({})
    budgeted.line_budget = 100
    hashes = {config_hash(plain), config_hash(coalescing), config_hash(budgeted)}
    assert len(hashes) == 3
    again = fim_pb2.WatchSpec.FromString(coalescing.SerializeToString())
    assert again.subjects[0].coalesce_ms == 1000
    assert fim_pb2.WatchSpec.FromString(budgeted.SerializeToString()).line_budget == 100
