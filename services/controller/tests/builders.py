"""Small builders of controller inputs for the pure reconcile and status tests."""

from __future__ import annotations

from datetime import UTC, datetime

from fim.v1 import fim_pb2
from libs.fimnotify_api.events import EventName
from libs.k8s.model import FimWatcherSpec, ObjectMeta, Subject
from libs.k8s.selector import LabelSelector
from services.controller.desired import desired_watches
from services.controller.objects import FINALIZER, Container, Pod, Watcher
from services.controller.state import NodeState, Observed

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def cid(n: int) -> str:
    return f"containerd://{n:064x}"


def watcher(
    name: str = "logs",
    *,
    uid: str = "w1",
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    paths: tuple[str, ...] = ("/var/log",),
    log_format: str = "",
    deleting: bool = False,
    finalizer: bool = True,
    generation: int = 1,
) -> Watcher:
    meta = ObjectMeta(
        name=name,
        namespace=namespace,
        uid=uid,
        generation=generation,
        deletion_timestamp=NOW if deleting else None,
        finalizers=(FINALIZER,) if finalizer else (),
    )
    spec = FimWatcherSpec(
        selector=LabelSelector(match_labels={"app": "web"} if labels is None else labels),
        subjects=(Subject(paths=paths, events=frozenset({EventName.MODIFY})),),
        log_format=log_format,
    )
    return Watcher(meta=meta, spec=spec)


def pod(
    name: str = "web-0",
    *,
    uid: str = "p1",
    namespace: str = "shop",
    node: str = "n1",
    labels: dict[str, str] | None = None,
    containers: dict[str, int] | None = None,
    phase: str = "Running",
) -> Pod:
    running = {"app": 1} if containers is None else containers
    return Pod(
        namespace=namespace,
        name=name,
        uid=uid,
        node_name=node,
        phase=phase,
        labels={"app": "web"} if labels is None else labels,
        containers=tuple(Container(name=c, container_id=cid(n)) for c, n in running.items()),
    )


def holding(
    node: str,
    watchers: list[Watcher],
    pods: list[Pod],
    phase: fim_pb2.WatchPhase.ValueType = fim_pb2.WATCH_PHASE_ACTIVE,
    instance: str = "i1",
) -> NodeState:
    """A node state in which fimd holds exactly what `watchers` want on `pods`, in `phase`."""
    observed = {}
    for w in watchers:
        for key, want in desired_watches(w, [p for p in pods if p.node_name == node]).items():
            observed[key] = Observed(key=key, config_hash=want.config_hash, phase=phase)
    return NodeState(node=node, instance_id=instance, watches=observed)
