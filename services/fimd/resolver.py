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
that reads two files instead of all of /proc. A scan indexes every container of the node at
once, and answers other containers' first resolutions for `INDEX_TTL` seconds (a container
that started since is not in it and triggers a new scan).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
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
#: A scan answers other containers' resolutions for this long (seconds): the pods of a new
#: FimWatcher arrive together, and one scan already found all of them.
INDEX_TTL = 2.0
#: A container ID in a cgroup path (every runtime's leaf name holds the 64-hex ID).
_CONTAINER_ID = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
#: Container ID -> (pid, /proc/<pid>/cgroup text) of the processes that mention it.
Index = dict[str, list[tuple[int, str]]]


class ProcResolver:
    """Resolves by scanning a procfs mounted at `proc_root` (the host's, for fimd)."""

    def __init__(
        self, proc_root: str = "/proc", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.proc_root = proc_root
        self._clock = clock
        self._known: dict[ContainerId, Target] = {}
        self._scan_lock = threading.Lock()
        self._index: Index = {}
        self._indexed_at = -INDEX_TTL

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
        """PIDs (thread group leaders) in the container's cgroup, sorted (a fresh scan)."""
        return self._members(container_id, self._scan())

    @staticmethod
    def _members(container_id: ContainerId, index: Index) -> list[int]:
        leaves = frozenset(container_id.cgroup_leaf_names())
        candidates = index.get(container_id.id, ())
        return sorted(pid for pid, text in candidates if in_cgroup(text, leaves))

    def _scan(self) -> Index:
        """One pass over the procfs: every process whose cgroup path holds a container ID,
        by that ID (so one scan serves every container on the node)."""
        index: dict[str, list[tuple[int, str]]] = {}
        with os.scandir(self.proc_root) as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"{entry.path}/cgroup", "rb") as f:
                        raw = f.read()
                except OSError:
                    continue  # exited while scanning
                ids = set(_CONTAINER_ID.findall(raw))
                if ids:
                    text = raw.decode(errors="replace")
                    for found in ids:
                        index.setdefault(found.decode(), []).append((int(entry.name), text))
        self._index, self._indexed_at = index, self._clock()
        return index

    def _recent_index(self, container_id: ContainerId, *, fresh_only: bool) -> Index:
        """A scan made since this call began, or (unless `fresh_only`) a recent one that
        knows the container, else a new scan; one scan at a time (the CreateWatch calls for
        a new FimWatcher's pods arrive together)."""
        started = self._clock()
        with self._scan_lock:
            if self._indexed_at >= started:
                return self._index
            recent = self._clock() - self._indexed_at < INDEX_TTL
            if not fresh_only and recent and container_id.id in self._index:
                return self._index
            return self._scan()

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
        # A container seen before whose process changed needs a scan of now, not a recent one.
        index = self._recent_index(container_id, fresh_only=known is not None)
        target = self._init(self._members(container_id, index))
        if target is None:
            self._known.pop(container_id, None)
            raise ContainerNotFoundError(
                f"no process of container {container_id} found under {self.proc_root}"
            )
        self._remember(container_id, target)
        return target

    def resolve_many(self, container_ids: Iterable[ContainerId]) -> dict[ContainerId, Target]:
        resolved = {}
        with self._scan_lock:
            index = self._scan()
        for cid in container_ids:
            target = self._init(self._members(cid, index))
            if target is not None:
                resolved[cid] = target
                self._remember(cid, target)
            else:
                self._known.pop(cid, None)
        return resolved
