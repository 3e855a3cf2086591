"""`kubectl fim status`: FimWatchers, each node's fimd, and the capacity used. Pure: the
tables from what kubectl returned (FimWatcher and pod lists, fimd's metrics text).

Watchers (from their status, written by the controller): pods the selector matches and runs
(`observablePods`), pods whose watches their node reports active (`watchedPods`), the Ready
condition and its reason.

Nodes (from the fimd pods): phase, readiness, restarts of the fimd container, and the
capacity fimd reports in its metrics (`fimd_*` gauges, read through the API server's pod
proxy): watches held (`fimd_watches`, all phases) and ACTIVE, inotify watches against
fimd's budget (`fimd_inotify_watch_budget`; the node's `max_user_watches` when there is no
budget), memory working set against the memory budget, engines running of configured.
A node whose metrics cannot be read shows `?` and the reason below the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.fimlines import neutralise

WATCHER_HEADERS = ("NAMESPACE", "NAME", "OBSERVABLE", "WATCHED", "READY", "REASON")
NODE_HEADERS = (
    "NODE",
    "POD",
    "PHASE",
    "READY",
    "RESTARTS",
    "WATCHES",
    "INOTIFY",
    "MEMORY",
    "ENGINES",
)
UNKNOWN = "?"


def _text(value: Any) -> str:
    return neutralise(str(value)) if value is not None else ""


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return {}


def watcher_rows(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """One row per FimWatcher (`kubectl get fimwatchers -o json`'s items), sorted."""
    rows = []
    for item in items:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        ready = _condition(status, "Ready")
        rows.append(
            (
                _text(meta.get("namespace", "")),
                _text(meta.get("name", "")),
                _text(status.get("observablePods", UNKNOWN)),
                _text(status.get("watchedPods", UNKNOWN)),
                _text(ready.get("status", UNKNOWN)),
                _text(ready.get("reason", "")),
            )
        )
    return sorted(rows)


@dataclass(frozen=True)
class Metrics:
    """The gauges of one fimd's /metrics that status shows (None: not reported)."""

    watches: int | None = None
    active: int | None = None
    inotify: int | None = None
    inotify_budget: int | None = None
    max_user_watches: int | None = None
    memory: int | None = None
    memory_budget: int | None = None
    engines: int | None = None
    engines_running: int | None = None


_GAUGES = {
    "fimd_inotify_watches": "inotify",
    "fimd_inotify_watch_budget": "inotify_budget",
    "fimd_inotify_max_user_watches": "max_user_watches",
    "fimd_memory_working_set_bytes": "memory",
    "fimd_memory_budget_bytes": "memory_budget",
    "fimd_engines": "engines",
    "fimd_engines_running": "engines_running",
}


def _sample(line: str) -> tuple[str, str, float] | None:
    """(name, labels text, value) of one Prometheus text-format sample line."""
    if not line or line.startswith("#"):
        return None
    name, brace, rest = line.partition("{")
    labels = ""
    if brace:
        labels, _, rest = rest.partition("}")
    else:
        name, _, rest = line.partition(" ")
    fields = rest.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return name.strip(), labels, value


def _label(labels: str, name: str) -> str:
    """The value of label `name` in a sample's `a="x",b="y"` text ("" if absent)."""
    for part in labels.split(","):
        key, _, value = part.partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return ""


def parse_metrics(text: str) -> Metrics:
    """The gauges status shows, from fimd's Prometheus text exposition."""
    values: dict[str, int] = {}
    watches = active = 0
    seen_watches = False
    for line in text.splitlines():
        sample = _sample(line.strip())
        if sample is None or not math.isfinite(sample[2]):
            continue
        name, labels, value = sample
        if name == "fimd_watches":
            seen_watches = True
            watches += int(value)
            if _label(labels, "phase").lower() == "active":  # fimd writes "active"
                active += int(value)
        elif name in _GAUGES:
            values[_GAUGES[name]] = int(value)
    if seen_watches:
        values["watches"] = watches
        values["active"] = active
    return Metrics(**values)


def size(value: int) -> str:
    """Bytes as `123Mi` (binary units, like Kubernetes quantities)."""
    for unit, scale in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.0f}{unit}"
    return str(value)


def _used(used: int | None, limit: int | None, show: Any = str) -> str:
    if used is None:
        return UNKNOWN
    if not limit:
        return f"{show(used)}/-"
    return f"{show(used)}/{show(limit)} ({100 * used / limit:.0f}%)"


def capacity_cells(metrics: Metrics | None) -> tuple[str, str, str, str]:
    """WATCHES, INOTIFY, MEMORY and ENGINES of a node (`?` when unknown)."""
    if metrics is None:
        return (UNKNOWN,) * 4
    m = metrics
    watches = UNKNOWN if m.watches is None else f"{m.watches} ({m.active} active)"
    inotify = _used(m.inotify, m.inotify_budget or m.max_user_watches)
    memory = _used(m.memory or None, m.memory_budget, size)
    engines = UNKNOWN
    if m.engines is not None and m.engines_running is not None:
        engines = f"{m.engines_running}/{m.engines}"
    return watches, inotify, memory, engines


def _fimd_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if isinstance(status, dict) and status.get("name") == "fimd":
            return status
    return {}


def node_rows(
    pods: Sequence[Mapping[str, Any]], metrics: Mapping[str, Metrics | None]
) -> list[tuple[str, ...]]:
    """One row per fimd pod (`kubectl get pods -o json`'s items), sorted by node; `metrics`
    by pod name (None: could not be read)."""
    rows = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name", ""))
        container = _fimd_container(pod)
        ready = _condition(pod.get("status") or {}, "Ready").get("status") == "True"
        rows.append(
            (
                _text((pod.get("spec") or {}).get("nodeName") or "<none>"),
                _text(name),
                _text((pod.get("status") or {}).get("phase", UNKNOWN)),
                "yes" if ready else "no",
                _text(container.get("restartCount", 0)),
                *capacity_cells(metrics.get(name)),
            )
        )
    return sorted(rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows in aligned columns, headers first (cells already neutralised)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (tuple(headers), *rows)
    ]
    return "\n".join(lines)
