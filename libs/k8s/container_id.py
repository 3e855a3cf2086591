"""Container IDs as the kubelet reports them in `status.containerStatuses[].containerID`.

The controller parses them from pod status and sends them to fimd, which must find the
container's processes; fimd does that by locating the container's cgroup, whose leaf
directory name depends on the runtime and on the kubelet's cgroup driver:

- containerd: `<id>` (cgroupfs driver) or `cri-containerd-<id>.scope` (systemd driver);
- CRI-O: `crio-<id>` (cgroupfs) or `crio-<id>.scope` (systemd);
- Docker (cri-dockerd): `<id>` (cgroupfs) or `docker-<id>.scope` (systemd).

Only full 64-character lowercase hex IDs are accepted: a prefix or a pattern could match
another container's cgroup, and fimd must never watch the wrong container.
"""

from __future__ import annotations

import enum
import re

import attrs

from libs.k8s.errors import ModelError

ID_LENGTH = 64
_ID_RE = re.compile(r"[0-9a-f]{64}")
_SEPARATOR = "://"


class ContainerIdError(ModelError):
    """A containerID string that is not `<runtime>://<64 lowercase hex>`."""


class Runtime(enum.StrEnum):
    """The container runtime named by a containerID's scheme."""

    CONTAINERD = "containerd"
    CRIO = "cri-o"
    DOCKER = "docker"


_CGROUP_LEAF_FORMATS: dict[Runtime, tuple[str, ...]] = {
    Runtime.CONTAINERD: ("{id}", "cri-containerd-{id}.scope"),
    Runtime.CRIO: ("crio-{id}", "crio-{id}.scope"),
    Runtime.DOCKER: ("{id}", "docker-{id}.scope"),
}


def _check_id(_instance: object, _attribute: object, value: str) -> None:
    if len(value) != ID_LENGTH:
        raise ContainerIdError(
            f"container id must be {ID_LENGTH} hex characters, got {len(value)}: {value!r}"
        )
    if not _ID_RE.fullmatch(value):
        raise ContainerIdError(f"container id must be lowercase hex (0-9a-f), got {value!r}")


@attrs.frozen
class ContainerId:
    """One container: its runtime and full ID; `str()` gives back the containerID string."""

    runtime: Runtime
    id: str = attrs.field(validator=_check_id)

    def __str__(self) -> str:
        return f"{self.runtime}{_SEPARATOR}{self.id}"

    def cgroup_leaf_names(self) -> tuple[str, ...]:
        """Candidate cgroup directory names for this container, cgroupfs driver first."""
        return tuple(fmt.format(id=self.id) for fmt in _CGROUP_LEAF_FORMATS[self.runtime])


def parse_container_id(value: object) -> ContainerId:
    """Parses `containerd://<id>`, `cri-o://<id>` or `docker://<id>`; else ContainerIdError."""
    if not isinstance(value, str):
        raise ContainerIdError(f"containerID must be a string, got {type(value).__name__}")
    if not value:
        raise ContainerIdError("containerID is empty (the container has not started yet)")
    scheme, separator, container_id = value.partition(_SEPARATOR)
    if not separator:
        raise ContainerIdError(f"containerID must look like '<runtime>://<id>', got {value!r}")
    try:
        runtime = Runtime(scheme)
    except ValueError:
        expected = ", ".join(runtime.value for runtime in Runtime)
        raise ContainerIdError(
            f"unknown container runtime {scheme!r} in {value!r}; expected one of: {expected}"
        ) from None
    return ContainerId(runtime, container_id)
