"""Reads the numbers admission control needs: fimd's memory cgroup and the inotify sysctls.

fimd's memory cgroup is the container's, which also holds its engines (so its working set is
what the kubelet compares with the pod's limit and what the OOM killer acts on). It is found
once from `/proc/self/cgroup`:

- cgroup v1 (a `N:memory:/path` line): `<root>/memory/<path>`, or `<root>/memory` itself in a
  container that sees only its own cgroup there. Limit: the smaller of `memory.limit_in_bytes`
  and `hierarchical_memory_limit` (memory.stat; a parent's limit counts too). Working set:
  `memory.usage_in_bytes` minus `total_inactive_file` (memory.stat).
- cgroup v2 (the `0::/path` line, when no v1 memory hierarchy exists): `<root>/<path>` or
  `<root>`. Limit: the smallest `memory.max` of it and its ancestors. Working set:
  `memory.current` minus `inactive_file`.

A limit of "max" (v2) or >= 2**62 (v1's "unlimited") is no limit.
"""

from __future__ import annotations

import os

import attrs

UNLIMITED = 1 << 62


@attrs.frozen
class MemoryReading:
    limit: int | None  # bytes; None = no limit
    working_set: int  # bytes


def read_int(path: str, default: int = 0) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


def _stat(path: str) -> dict[str, int]:
    values: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
    return values


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED else value


@attrs.frozen
class CgroupMemory:
    """One memory cgroup directory; `version` 1 or 2."""

    directory: str
    version: int
    #: cgroup v2: the mount root, where the walk up for ancestors' memory.max stops.
    root: str = ""

    @classmethod
    def find(
        cls, self_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup"
    ) -> CgroupMemory | None:
        """fimd's memory cgroup, or None if there is none to read."""
        try:
            with open(self_cgroup) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        unified = None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                base = os.path.join(root, "memory")
                return cls._pick(1, base, path, "memory.usage_in_bytes")
            if controllers == "":
                unified = path
        if unified is not None:
            return cls._pick(2, root, unified, "memory.current")
        return None

    @classmethod
    def _pick(cls, version: int, base: str, path: str, probe: str) -> CgroupMemory | None:
        for directory in (os.path.join(base, path.lstrip("/")), base):
            if os.path.exists(os.path.join(directory, probe)):
                return cls(os.path.normpath(directory), version, os.path.normpath(base))
        return None

    def read(self) -> MemoryReading | None:
        """The limit and working set now; None if the files cannot be read."""
        try:
            if self.version == 1:
                return self._read_v1()
            return self._read_v2()
        except (OSError, ValueError):
            return None

    def _file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read_v1(self) -> MemoryReading:
        stat = _stat(self._file("memory.stat"))
        limit = min(
            read_int(self._file("memory.limit_in_bytes"), UNLIMITED),
            stat.get("hierarchical_memory_limit", UNLIMITED),
        )
        usage = read_int(self._file("memory.usage_in_bytes"))
        working_set = max(0, usage - stat.get("total_inactive_file", 0))
        return MemoryReading(_limit(limit), working_set)

    def _read_v2(self) -> MemoryReading:
        stat = _stat(self._file("memory.stat"))
        usage = read_int(self._file("memory.current"))
        limit = UNLIMITED
        directory = self.directory
        while True:
            try:
                with open(os.path.join(directory, "memory.max")) as f:
                    text = f.read().strip()
                if text != "max":
                    limit = min(limit, int(text))
            except OSError:
                pass  # the root has no memory.max
            if directory == self.root or len(directory) <= len(self.root):
                break
            directory = os.path.dirname(directory)
        working_set = max(0, usage - stat.get("inactive_file", 0))
        return MemoryReading(_limit(limit), working_set)


@attrs.frozen
class InotifyLimits:
    max_user_watches: int
    max_user_instances: int


def inotify_limits(proc_root: str = "/proc") -> InotifyLimits:
    """fs.inotify.max_user_watches and max_user_instances (0 if unreadable)."""
    return InotifyLimits(
        read_int(f"{proc_root}/sys/fs/inotify/max_user_watches"),
        read_int(f"{proc_root}/sys/fs/inotify/max_user_instances"),
    )
