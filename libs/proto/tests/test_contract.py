"""The generated fim.v1 code works over a real gRPC channel, with the health service."""

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
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


class EchoDaemon(fim_pb2_grpc.FimDaemonServicer):
    """Holds specs by key, like fimd's bookkeeping, to exercise every RPC."""

    def __init__(self) -> None:
        self.watches: dict[tuple[str, str, str], fim_pb2.WatchSpec] = {}

    @staticmethod
    def _key(key: fim_pb2.WatchKey) -> tuple[str, str, str]:
        return (key.watcher_uid, key.pod_uid, key.container_name)

    def CreateWatch(
        self, request: fim_pb2.CreateWatchRequest, context: grpc.ServicerContext
    ) -> fim_pb2.CreateWatchResponse:
        key = self._key(request.spec.key)
        changed = self.watches.get(key) != request.spec
        self.watches[key] = request.spec
        status = fim_pb2.WatchStatus(
            key=request.spec.key,
            config_hash=config_hash(request.spec),
            phase=fim_pb2.WATCH_PHASE_ACTIVE,
        )
        return fim_pb2.CreateWatchResponse(status=status, changed=changed)

    def DestroyWatch(
        self, request: fim_pb2.DestroyWatchRequest, context: grpc.ServicerContext
    ) -> fim_pb2.DestroyWatchResponse:
        return fim_pb2.DestroyWatchResponse(
            existed=self.watches.pop(self._key(request.key), None) is not None
        )

    def GetWatchState(
        self, request: fim_pb2.GetWatchStateRequest, context: grpc.ServicerContext
    ) -> fim_pb2.GetWatchStateResponse:
        statuses = [
            fim_pb2.WatchStatus(key=s.key, config_hash=config_hash(s))
            for s in self.watches.values()
        ]
        return fim_pb2.GetWatchStateResponse(node_name="node-a", watches=statuses)


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fim_pb2_grpc.add_FimDaemonServicer_to_server(EchoDaemon(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        server.stop(grace=None)


def test_rpcs_round_trip_over_grpc(channel: grpc.Channel) -> None:
    stub = fim_pb2_grpc.FimDaemonStub(channel)
    spec = make_spec({"team": "payments"})
    first = stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=spec), timeout=5)
    again = stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=spec), timeout=5)
    assert first.changed
    assert not again.changed
    assert first.status.phase == fim_pb2.WATCH_PHASE_ACTIVE
    state = stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    assert [w.config_hash for w in state.watches] == [config_hash(spec)]
    assert stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=spec.key), timeout=5).existed
    assert not stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=spec.key), timeout=5).existed


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
