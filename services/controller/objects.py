"""The slim, validated views of API objects the controller caches and reconciles.

Informers keep these instead of the API's JSON: a few hundred bytes per pod instead of tens
of kilobytes, and every field the reconcile reads has been checked once, here. Identities
are namespace + UID (never a pod name alone): a pod or FimWatcher recreated under the same
name is a different object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from libs.k8s.codec import CONVERTER
from libs.k8s.container_id import ContainerIdError, parse_container_id
from libs.k8s.errors import ModelError, within
from libs.k8s.frozen import frozen_map
from libs.k8s.model import SCAN_REQUEST_ANNOTATION, FimWatcherSpec, FimWatcherStatus, ObjectMeta

FINALIZER = "fim-k8s.io/watches"


@attrs.frozen(kw_only=True)
class Container:
    """A running container of a pod: its name in the pod spec and its runtime ID."""

    name: str
    container_id: str


@attrs.frozen(kw_only=True)
class Pod:
    """What the controller needs of a pod: identity, placement, labels, running containers."""

    namespace: str
    name: str
    uid: str
    node_name: str = ""
    phase: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    containers: tuple[Container, ...] = ()
    pod_ip: str = ""
    host_ip: str = ""
    ports: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)

    @property
    def running(self) -> bool:
        """Scheduled, in phase Running, and at least one container is running with an ID."""
        return self.phase == "Running" and bool(self.node_name) and bool(self.containers)


@attrs.frozen(kw_only=True)
class Watcher:
    """A FimWatcher as cached: metadata always; spec only if it is valid, else `error`.

    An invalid spec (possible only if the CRD schema is bypassed or older) must not stop
    the controller: the watcher gets no watches and a Degraded condition naming `error`.
    """

    meta: ObjectMeta
    spec: FimWatcherSpec | None
    error: str = ""
    status: FimWatcherStatus = attrs.field(factory=FimWatcherStatus)
    #: The annotation fim-k8s.io/scan-requested ("" if absent): a new value asks for one
    #: comparison with the baselines now (desired.scan_request).
    scan_requested: str = ""

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"

    @property
    def deleting(self) -> bool:
        return self.meta.deletion_timestamp is not None


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    """obj[path[0]][path[1]]... with {} for anything missing or not an object."""
    value: Any = obj
    for name in path:
        value = value.get(name) if isinstance(value, Mapping) else None
    return {} if value is None else value


def _running_containers(status: Mapping[str, Any]) -> tuple[Container, ...]:
    """Regular containers that run and have a container ID fimd can resolve."""
    running = []
    for item in status.get("containerStatuses") or ():
        if "running" not in _get(item, "state"):
            continue
        try:
            container_id = str(parse_container_id(item.get("containerID", "")))
        except ContainerIdError:
            continue
        running.append(Container(name=str(item.get("name", "")), container_id=container_id))
    return tuple(sorted(running, key=lambda c: c.name))


def _named_ports(spec: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(port["name"]): str(port["containerPort"])
        for container in spec.get("containers") or ()
        for port in container.get("ports") or ()
        if port.get("name") and port.get("containerPort")
    }


def pod_from_dict(obj: Mapping[str, Any]) -> Pod:
    """The slim Pod of an API pod object."""
    meta, spec, status = _get(obj, "metadata"), _get(obj, "spec"), _get(obj, "status")
    return Pod(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        node_name=str(spec.get("nodeName", "")),
        phase=str(status.get("phase", "")),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        containers=_running_containers(status),
        pod_ip=str(status.get("podIP", "")),
        host_ip=str(status.get("hostIP", "")),
        ports=_named_ports(spec),
    )


def _status_from_dict(obj: Mapping[str, Any]) -> FimWatcherStatus:
    """The current status; one we cannot read is treated as empty and rewritten."""
    try:
        with within("status"):
            return CONVERTER.structure(obj.get("status") or {}, FimWatcherStatus)
    except ModelError:
        return FimWatcherStatus()


def watcher_from_dict(obj: Mapping[str, Any]) -> Watcher:
    """The cached Watcher of an API FimWatcher; raises ModelError only for bad metadata."""
    with within("metadata"):
        meta = CONVERTER.structure(obj.get("metadata"), ObjectMeta)
    try:
        with within("spec"):
            spec = CONVERTER.structure(obj.get("spec"), FimWatcherSpec)
    except ModelError as err:
        return Watcher(meta=meta, spec=None, error=str(err), status=_status_from_dict(obj))
    annotations = _get(obj, "metadata", "annotations")
    requested = (
        annotations.get(SCAN_REQUEST_ANNOTATION, "") if isinstance(annotations, Mapping) else ""
    )
    return Watcher(
        meta=meta, spec=spec, status=_status_from_dict(obj), scan_requested=str(requested)
    )
