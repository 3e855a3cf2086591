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
matches): the rule of `libs.fimnotify_api.identity`, which the engine applies again. The
container's "init" is the member whose parent is not a member (the lowest such PID if there
are several), so the choice is deterministic. The result is a `Target`: the PID and its start
time, which fimd sends with the AddWatch, so an engine never watches a reused PID (it checks
both before and after it opens the process's root).
`resolve_many` resolves several containers with one scan of /proc (after an engine died, all
of its watches are resolved again at once).

A scan reads every process's cgroup file (milliseconds with a few hundred processes), and
several FimWatchers selecting the same pods resolve the same containers again and again, so
the last result per container is kept (at most `CACHE_SIZE`) and reused only while that
process is alive, has the same start time and is still in the container's cgroup: checking
that reads two files instead of all of /proc.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

import attrs

from libs.fimnotify_api.identity import in_cgroup, stat_fields
from libs.k8s.container_id import ContainerId

__all__ = ["ContainerNotFoundError", "ProcResolver", "Resolver", "Target", "in_cgroup"]


class ContainerNotFoundError(LookupError):
    """No process of the container runs on this node."""


@attrs.frozen
class Target:
    """A container's init process: its host PID and start time (clock ticks since boot)."""

    pid: int
    start_time: int = 0


class Resolver(Protocol):
    def resolve(self, container_id: ContainerId) -> Target:
        """The container's init; raises ContainerNotFoundError."""

    def resolve_many(self, container_ids: Iterable[ContainerId]) -> dict[ContainerId, Target]:
        """The inits of those containers that run here (the others are left out)."""


def _stat(proc_root: str, pid: int) -> tuple[int, int] | None:
    """(parent PID, start time) of a live process; None if it is gone or a zombie (a zombie
    keeps its cgroup line until reaped but has no root to watch)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            fields = stat_fields(f.read())
    except OSError:
        return None
    try:
        return None if fields[0] in (b"Z", b"X") else (int(fields[1]), int(fields[19]))
    except (IndexError, ValueError):
        return None


#: Containers whose last resolution is kept (a node runs at most a few hundred).
CACHE_SIZE = 4096


class ProcResolver:
    """Resolves by scanning a procfs mounted at `proc_root` (the host's, for fimd)."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._known: dict[ContainerId, Target] = {}

    def _remember(self, container_id: ContainerId, target: Target) -> None:
        self._known.pop(container_id, None)
        if len(self._known) >= CACHE_SIZE:
            del self._known[next(iter(self._known))]  # the oldest
        self._known[container_id] = target

    def _still(self, container_id: ContainerId, target: Target) -> bool:
        """The remembered init is alive, the same process, and in the container's cgroup."""
        stat = _stat(self.proc_root, target.pid)
        if stat is None or stat[1] != target.start_time:
            return False
        try:
            with open(f"{self.proc_root}/{target.pid}/cgroup", "rb") as f:
                raw = f.read()
        except OSError:
            return False
        return in_cgroup(raw.decode(errors="replace"), frozenset(container_id.cgroup_leaf_names()))

    def members(self, container_id: ContainerId) -> list[int]:
        """PIDs (thread group leaders) in the container's cgroup, sorted."""
        return self._scan([container_id])[container_id]

    def _scan(self, container_ids: Iterable[ContainerId]) -> dict[ContainerId, list[int]]:
        """Members of each container, from one pass over the procfs."""
        wanted = {
            cid: (cid.id.encode(), frozenset(cid.cgroup_leaf_names())) for cid in container_ids
        }
        found: dict[ContainerId, list[int]] = {cid: [] for cid in wanted}
        with os.scandir(self.proc_root) as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"{entry.path}/cgroup", "rb") as f:
                        raw = f.read()
                except OSError:
                    continue  # exited while scanning
                for cid, (needle, leaves) in wanted.items():
                    # Cheap substring test first: almost no process belongs to the container.
                    if needle in raw and in_cgroup(raw.decode(errors="replace"), leaves):
                        found[cid].append(int(entry.name))
        return {cid: sorted(pids) for cid, pids in found.items()}

    def _init(self, pids: list[int]) -> Target | None:
        stats = {pid: stat for pid in pids if (stat := _stat(self.proc_root, pid)) is not None}
        if not stats:
            return None
        roots = [pid for pid, (ppid, _) in stats.items() if ppid not in stats]
        pid = min(roots or stats)
        return Target(pid, stats[pid][1])

    def resolve(self, container_id: ContainerId) -> Target:
        known = self._known.get(container_id)
        if known is not None and self._still(container_id, known):
            return known
        target = self._init(self.members(container_id))
        if target is None:
            self._known.pop(container_id, None)
            raise ContainerNotFoundError(
                f"no process of container {container_id} found under {self.proc_root}"
            )
        self._remember(container_id, target)
        return target

    def resolve_many(self, container_ids: Iterable[ContainerId]) -> dict[ContainerId, Target]:
        resolved = {}
        for cid, pids in self._scan(container_ids).items():
            target = self._init(pids)
            if target is not None:
                resolved[cid] = target
                self._remember(cid, target)
            else:
                self._known.pop(cid, None)
        return resolved
