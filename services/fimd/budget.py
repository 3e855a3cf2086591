"""Admission control: does one more watch fit into this fimd's node budgets? Pure.

fimd refuses a CreateWatch that would exceed a budget with gRPC RESOURCE_EXHAUSTED and a
message starting `NodeCapacity: ` that names the budget and its numbers (`check`), instead of
growing until the kernel or the OOM killer stops it. A refused create changes nothing, so no
load a caller sends can make fimd restart and lose the watches it holds. The budgets:

- **instances**: at least one engine must be running with an inotify instance (an engine that
  got EMFILE from `inotify_init1` takes no watches until it has one);
- **watches**: the number of watches fimd holds (`--max-watches`);
- **inotify watches**: the sum of the engines' READY watch counts (`--inotify-watch-budget`,
  default half of fs.inotify.max_user_watches, which every root process on the node shares);
- **memory**: the working set of fimd's cgroup (fimd and its engines) plus the estimated cost
  of one more watch must stay within `memory_fraction` of the budget (`--memory-budget`,
  default the cgroup's memory limit; no limit and no flag: no memory budget).

A new watch is checked against all four; a changed spec of an existing watch (which briefly
runs twice, see the supervisor) against all but the watch count.
"""

from __future__ import annotations

import attrs

MIB = 1 << 20
#: Estimated memory one more watch costs (engine state for its subjects and directory tree,
#: fimd's renderer and bookkeeping); deliberately pessimistic for small watches.
DEFAULT_WATCH_COST = 4 * MIB
DEFAULT_MEMORY_FRACTION = 0.9
DEFAULT_MAX_WATCHES = 4000
PREFIX = "NodeCapacity: "


@attrs.frozen
class Budgets:
    """The limits, fixed at start (see cli.py for where each comes from)."""

    max_watches: int = DEFAULT_MAX_WATCHES
    #: 0 = no inotify watch budget.
    inotify_watches: int = 0
    #: Where `inotify_watches` comes from, for messages.
    inotify_watches_source: str = "--inotify-watch-budget"
    #: None = no memory budget.
    memory_bytes: int | None = None
    memory_source: str = "--memory-budget"
    watch_cost: int = DEFAULT_WATCH_COST
    memory_fraction: float = DEFAULT_MEMORY_FRACTION


@attrs.frozen
class Usage:
    """What is in use now."""

    watches: int
    inotify_watches: int
    #: Engines that can take a watch (running, with an inotify instance), and all engines.
    engines_usable: int
    engines: int
    #: Working set of fimd's cgroup in bytes; None = unknown (no memory check possible).
    working_set: int | None
    #: fs.inotify.max_user_instances, for the message (0 = unknown).
    max_user_instances: int = 0


@attrs.frozen
class Exhausted:
    """A budget that does not allow the watch; `str()` is the gRPC status message."""

    budget: str  # "instances" | "watches" | "inotify_watches" | "memory"
    detail: str

    def __str__(self) -> str:
        return PREFIX + self.detail


def _mib(value: int) -> str:
    return f"{value / MIB:.0f} MiB" if value >= 10 * MIB else f"{value / MIB:.1f} MiB"


def memory_threshold(budgets: Budgets) -> int | None:
    """The working set above which no further watch is admitted."""
    if budgets.memory_bytes is None:
        return None
    return int(budgets.memory_bytes * budgets.memory_fraction) - budgets.watch_cost


def check(budgets: Budgets, usage: Usage, *, new_watch: bool) -> Exhausted | None:
    """The first budget the watch would exceed (None: admit it)."""
    if usage.engines_usable == 0:
        limit = (
            f"; fs.inotify.max_user_instances {usage.max_user_instances} is shared by every "
            "root process on the node"
            if usage.max_user_instances
            else ""
        )
        return Exhausted(
            "instances",
            f"inotify instances: none of the {usage.engines} engines is running with an "
            f"inotify instance{limit}",
        )
    if new_watch and usage.watches >= budgets.max_watches:
        return Exhausted(
            "watches",
            f"watches: {usage.watches} of {budgets.max_watches} in use "
            f"(budget: --max-watches {budgets.max_watches})",
        )
    if budgets.inotify_watches and usage.inotify_watches >= budgets.inotify_watches:
        return Exhausted(
            "inotify_watches",
            f"inotify watches: {usage.inotify_watches} of {budgets.inotify_watches} in use "
            f"(budget: {budgets.inotify_watches_source})",
        )
    threshold = memory_threshold(budgets)
    if threshold is not None and usage.working_set is not None and usage.working_set > threshold:
        assert budgets.memory_bytes is not None
        percent = round(budgets.memory_fraction * 100)
        return Exhausted(
            "memory",
            f"memory: working set {_mib(usage.working_set)} + {_mib(budgets.watch_cost)} for "
            f"a watch would exceed {percent}% of the {_mib(budgets.memory_bytes)} budget "
            f"({budgets.memory_source})",
        )
    return None


def parse_bytes(text: str) -> int:
    """A byte count: an integer, optionally with a Kubernetes binary or decimal suffix
    (Ki, Mi, Gi, K, M, G), e.g. `900Mi`; raises ValueError."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], factor
            break
    else:
        number, scale = text, 1
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a byte count like 1073741824 or 900Mi")
    return int(number) * scale
