"""Which host process is a container's: the rule fimd resolves with and the engine re-checks.

A container's processes sit in a cgroup whose path has a component equal to one of the
container's leaf names (`libs.k8s.container_id.ContainerId.cgroup_leaf_names`), in every
hierarchy listed in `/proc/<pid>/cgroup` (`hierarchy:controllers:/path`, one line per v1
hierarchy, one `0::` line on v2). A PID alone is not an identity (`pid_max` is 32,768 on many
nodes, so PIDs are reused within minutes): the process start time (field 22 of
`/proc/<pid>/stat`, clock ticks since boot) pins one process. The engine checks both before
and after it opens the process's root, so a reused PID is never watched as the container.
"""

from __future__ import annotations

from collections.abc import Collection

import attrs


@attrs.frozen
class ProcessIdentity:
    """What fimd resolved: the process's start time and the container's cgroup leaf names
    (an empty identity checks nothing: tests and tools that pass a bare PID)."""

    start_time: int = 0
    cgroup_leaves: tuple[str, ...] = ()


def in_cgroup(cgroup_text: str, leaf_names: Collection[str]) -> bool:
    """True if any hierarchy's path in a /proc/<pid>/cgroup text has one of `leaf_names`."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if any(part in leaf_names for part in path.split("/")):
            return True
    return False


def stat_fields(stat: bytes) -> list[bytes]:
    """The fields of a /proc/<pid>/stat text after `comm` (which may hold spaces and ')'):
    index 0 is the state (field 3), index 19 the start time (field 22)."""
    return stat.rpartition(b")")[2].split()


def start_time(stat: bytes) -> int:
    """Field 22 of /proc/<pid>/stat; raises ValueError for a malformed text."""
    try:
        return int(stat_fields(stat)[19])
    except IndexError:
        raise ValueError("stat text too short") from None


def mismatch(identity: ProcessIdentity, stat: bytes, cgroup_text: str) -> str:
    """Why the process is not the resolved one ("" if it is, or nothing is checked)."""
    if identity.start_time and start_time(stat) != identity.start_time:
        return f"start time {start_time(stat)} != resolved {identity.start_time} (PID reused)"
    if identity.cgroup_leaves and not in_cgroup(cgroup_text, identity.cgroup_leaves):
        return "not in the container's cgroup (PID reused or process moved)"
    return ""
