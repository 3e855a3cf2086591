"""The desired watches: from FimWatcher x pod x container to the fim.v1 WatchSpec fimd holds.

A watch is identified by `Key` (FimWatcher UID, pod UID, container name), exactly the
proto's WatchKey, as a hashable value. `Desired` pairs a spec with its config hash, the
value fimd reports back in GetWatchState, so "is this watch up to date" is one comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import attrs

from fim.v1 import fim_pb2
from fim.v1.config_hash import config_hash
from libs.k8s.model import FimWatcherSpec, Subject
from services.controller.objects import Container, Pod, Watcher


class Key(NamedTuple):
    """The identity of one watch on one node (fim.v1 WatchKey)."""

    watcher_uid: str
    pod_uid: str
    container: str

    @classmethod
    def from_proto(cls, key: fim_pb2.WatchKey) -> Key:
        return cls(key.watcher_uid, key.pod_uid, key.container_name)

    def to_proto(self) -> fim_pb2.WatchKey:
        return fim_pb2.WatchKey(
            watcher_uid=self.watcher_uid, pod_uid=self.pod_uid, container_name=self.container
        )


@attrs.frozen
class Desired:
    """A watch that should exist: the full spec and its fim.v1 config hash."""

    spec: fim_pb2.WatchSpec = attrs.field(eq=False)
    config_hash: str
    #: The FimWatcher's metadata.generation it was computed from (to tell a stale one).
    generation: int = attrs.field(default=0, eq=False)

    @property
    def key(self) -> Key:
        return Key.from_proto(self.spec.key)


def scan_request(annotation: str) -> str:
    """What fimd gets for the scan-request annotation: "" or a 16-character digest of it
    (bounded whatever the annotation holds; a new value is a new request)."""
    return hashlib.sha256(annotation.encode()).hexdigest()[:16] if annotation else ""


def _subject_proto(subject: Subject) -> fim_pb2.Subject:
    return fim_pb2.Subject(
        paths=subject.paths,
        events=sorted(subject.events),
        ignore=subject.ignore,
        only_dir=subject.only_dir,
        recursive=subject.recursive,
        max_depth=subject.max_depth,
        follow_move=subject.follow_move,
        tags=dict(subject.tags),
        coalesce_ms=subject.coalesce_ms,
        attributes=subject.attributes,
        hash=subject.hash,
    )


def desired_watch(
    watcher: Watcher, spec: FimWatcherSpec, pod: Pod, container: Container
) -> Desired:
    """The watch `watcher` wants on `container` of `pod`."""
    proto = fim_pb2.WatchSpec(
        key=Key(watcher.meta.uid, pod.uid, container.name).to_proto(),
        identity=fim_pb2.Identity(
            watcher_namespace=watcher.meta.namespace,
            watcher_name=watcher.meta.name,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
        ),
        container_id=container.container_id,
        subjects=[_subject_proto(subject) for subject in spec.subjects],
        log_format=spec.log_format,
        scan_interval_s=spec.scan.interval_s,
        scan_request=scan_request(watcher.scan_requested),
        line_budget=spec.line_budget,
    )
    return Desired(proto, config_hash(proto), watcher.meta.generation)


def selected_pods(watcher: Watcher, pods: Iterable[Pod]) -> list[Pod]:
    """Running pods in the watcher's namespace its selector matches (none if invalid)."""
    if watcher.spec is None or watcher.deleting:
        return []
    selector = watcher.spec.selector
    return [
        pod
        for pod in pods
        if pod.namespace == watcher.meta.namespace and pod.running and selector.matches(pod.labels)
    ]


def desired_watches(watcher: Watcher, pods: Iterable[Pod]) -> dict[Key, Desired]:
    """Every watch `watcher` wants on `pods`."""
    desired: dict[Key, Desired] = {}
    for pod in selected_pods(watcher, pods):
        assert watcher.spec is not None  # selected_pods returns nothing otherwise
        for container in pod.containers:
            want = desired_watch(watcher, watcher.spec, pod, container)
            desired[want.key] = want
    return desired
