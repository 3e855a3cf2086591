"""Container ID -> host PID, by finding the container's cgroup in `/proc/*/cgroup`.

No runtime socket is needed: every runtime puts a container's processes into a cgroup whose
directory name contains the full container ID (`libs.k8s.container_id` lists the leaf
names per runtime and cgroup driver). A `/proc/<pid>/cgroup` line is
`hierarchy:controllers:/path`; cgroup v1 has one line per hierarchy, v2 one `0::` line. The
same names appear under every layout:

- v1 cgroupfs: `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/burstable/pod<uid>/<id>`,
  `/kubepods/pod<uid>/<id>` (guaranteed), CRI-O `.../crio-<id>`;
- v1 systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
  cri-containerd-<id>.scope` (crio-<id>.scope, docker-<id>.scope);
- v2: the same paths on the `0::` line (possibly below a nested cgroup of the container).

A path component must equal a leaf name exactly (so `crio-conmon-<id>.scope` never
matches). The container's "init" is the member whose parent is not a member (the lowest
such PID if there are several), so the choice is deterministic. fimnotify pins the
container's root when it starts, so a later reuse of the PID cannot redirect it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Protocol

from libs.k8s.container_id import ContainerId


class ContainerNotFoundError(LookupError):
    """No process of the container runs on this node."""


class Resolver(Protocol):
    def resolve(self, container_id: ContainerId) -> int:
        """The host PID of the container's init; raises ContainerNotFoundError."""


def in_cgroup(cgroup_text: str, leaf_names: Collection[str]) -> bool:
    """True if any hierarchy's path in a /proc/<pid>/cgroup text has one of `leaf_names`."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if any(part in leaf_names for part in path.split("/")):
            return True
    return False


def _ppid(proc_root: str, pid: int) -> int | None:
    """The parent PID of a live process; None if it is gone or a zombie (a zombie keeps
    its cgroup line until reaped but has no root to watch)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and ')': the fixed fields follow the last ')'.
    fields = text.rpartition(b")")[2].split()
    try:
        return None if fields[0] in (b"Z", b"X") else int(fields[1])
    except (IndexError, ValueError):
        return None


class ProcResolver:
    """Resolves by scanning a procfs mounted at `proc_root` (the host's, for fimd)."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root

    def members(self, container_id: ContainerId) -> list[int]:
        """PIDs (thread group leaders) in the container's cgroup, sorted."""
        leaves = frozenset(container_id.cgroup_leaf_names())
        needle = container_id.id.encode()
        found = []
        with os.scandir(self.proc_root) as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"{entry.path}/cgroup", "rb") as f:
                        raw = f.read()
                except OSError:
                    continue  # exited while scanning
                # Cheap substring test first: almost no process belongs to the container.
                if needle in raw and in_cgroup(raw.decode(errors="replace"), leaves):
                    found.append(int(entry.name))
        return sorted(found)

    def resolve(self, container_id: ContainerId) -> int:
        pids = self.members(container_id)
        parents = {pid: ppid for pid in pids if (ppid := _ppid(self.proc_root, pid)) is not None}
        if not parents:
            raise ContainerNotFoundError(
                f"no process of container {container_id} found under {self.proc_root}"
            )
        roots = [pid for pid, ppid in parents.items() if ppid not in parents]
        return min(roots or parents)
