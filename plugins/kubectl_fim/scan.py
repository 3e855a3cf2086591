"""`kubectl fim scan NAME`: ask for one comparison with the baselines now and wait for its
answer. Pure: the request value, the checks before asking, the progress and the result,
from the FimWatcher as kubectl returns it (docs/kubectl-fim.md).

The plugin sets the annotation SCAN_REQUEST_ANNOTATION to a value no one used before (the
time and a random suffix). The controller forwards a digest of it to each node's fimd,
fimd compares every watched container's baseline subjects and echoes the request with its
counts, and the controller writes `status.lastScan.request` = the annotation's value once
the last comparison of every container of the observable pods answered it
(`status.lastScan.answered` of `containers` counts them meanwhile). Then `status.lastScan`
holds exactly the sums of those comparisons.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from libs.fimlines import neutralise

#: The one annotation a scan request is (libs/k8s/model.py SCAN_REQUEST_ANNOTATION; the
#: plugin is standard library only, its test checks the two agree).
SCAN_REQUEST_ANNOTATION = "fim-k8s.io/scan-requested"
_COUNTS = ("scanned", "added", "removed", "changed")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


class ScanError(Exception):
    """The scan cannot be asked for or did not finish; the message says why."""


def seconds(duration: str) -> float:
    """The seconds of a Go-style duration (`5m`, `1h30m`, `0.5s`)."""
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(duration))


def new_request(now: datetime, token: str) -> str:
    """A fresh annotation value: RFC 3339 UTC with microseconds, and a random token."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "-" + token


def _spec(watcher: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = watcher.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(watcher: Mapping[str, Any]) -> Mapping[str, Any]:
    status = watcher.get("status")
    return status if isinstance(status, dict) else {}


def last_scan(watcher: Mapping[str, Any]) -> Mapping[str, Any]:
    scan = _status(watcher).get("lastScan")
    return scan if isinstance(scan, dict) else {}


def name_of(watcher: Mapping[str, Any]) -> str:
    meta = watcher.get("metadata") or {}
    return neutralise(f"{meta.get('namespace', '')}/{meta.get('name', '')}")


def check_subjects(watcher: Mapping[str, Any]) -> None:
    """Raises ScanError when no subject has a baseline (attributes or hash)."""
    subjects = _spec(watcher).get("subjects") or []
    if not any(isinstance(s, dict) and (s.get("attributes") or s.get("hash")) for s in subjects):
        raise ScanError(
            f"FimWatcher {name_of(watcher)} has no baseline subjects: baselines are kept for "
            "subjects with attributes: true or hash: sha256"
        )


def check(watcher: Mapping[str, Any]) -> None:
    """Raises ScanError when a request could not be answered: no subject with a baseline,
    or no pod to compare."""
    check_subjects(watcher)
    if _status(watcher).get("observablePods") == 0:
        raise ScanError(f"FimWatcher {name_of(watcher)} selects no running pods: nothing to scan")


@dataclass(frozen=True)
class Progress:
    done: bool
    answered: int
    containers: int
    request: str  # the annotation's value now: ours, or a later request (which answers ours)


def requested(watcher: Mapping[str, Any]) -> str:
    annotations = (watcher.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(SCAN_REQUEST_ANNOTATION, "") if isinstance(annotations, dict) else ""
    return value if isinstance(value, str) else ""


def progress(watcher: Mapping[str, Any]) -> Progress:
    """How far the controller has seen the current request answered. Called only after
    our request was written: a different value now is a later request, whose comparisons
    all started after ours, so its answer is ours too."""
    scan = last_scan(watcher)
    request = requested(watcher)
    answered, containers = scan.get("answered", 0), scan.get("containers", 0)
    return Progress(
        done=bool(request) and scan.get("request") == request,
        answered=answered if isinstance(answered, int) else 0,
        containers=containers if isinstance(containers, int) else 0,
        request=request,
    )


def timed_out(watcher: Mapping[str, Any], waited: str) -> str:
    step = progress(watcher)
    of = f" of {step.containers}" if step.containers else ""
    return (
        f"timed out after {waited} waiting for FimWatcher {name_of(watcher)}: {step.answered}"
        f"{of} containers answered scan request {neutralise(step.request)} (a container whose "
        "watch is not active cannot; see kubectl fim status and the FimWatcher's conditions)"
    )


def result(watcher: Mapping[str, Any], request: str) -> str:
    """The answer, one line per fact (`request`: the value this command wrote)."""
    scan = last_scan(watcher)
    step = progress(watcher)
    counts = "  ".join(f"{name} {_count(scan, name)}" for name in _COUNTS)
    later = "" if step.request == request else f" (answered by a later request {step.request})"
    return (
        f"FimWatcher {name_of(watcher)}: scan {neutralise(request + later)}\n"
        f"answered by {step.answered} of {step.containers} containers, latest comparison "
        f"{neutralise(str(scan.get('time', '?')))}\n"
        f"{counts}\n"
    )


def _count(scan: Mapping[str, Any], name: str) -> int:
    value = scan.get(name, 0)
    return value if isinstance(value, int) else 0
