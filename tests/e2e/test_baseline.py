"""Scenario 11 (issue 13): file hashes on event lines and drift from persistent baselines.

A change nothing watched is still reported: one made while fimd's pod is deleted and its
new pod is not ready yet, and one a restarted container makes right as it starts, before
its watch is active. Both are found when the watch becomes active again, by comparing the
subject's tree with the baseline stored on the node (docs/logging.md, *Drift*). A watcher
with `scan.interval: 1m` is set up by the session's first test of it and read by its last
one, so that its minutes pass while the other scenarios run."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import expect
from tests.e2e.kube import Kube, wait_for
from tests.e2e.system import SYSTEM_NAMESPACE, FimSystem, ignore_missing
from tests.e2e.workloads import pod, running, watched, watcher

SUBJECT = {"paths": ["/cfg"], "events": ["closewrite"], "hash": "sha256"}


def _lines(system: FimSystem, node: str, namespace: str, kind: str) -> list[dict[str, Any]]:
    return [
        line
        for line in system.lines(node)
        if line.get("kind") == kind and line.get("namespace") == namespace
    ]


def _sha256(kube: Kube, namespace: str, path: str) -> str:
    return kube.exec(namespace, "web", f"sha256sum {path}").split()[0]


def _scans(system: FimSystem, node: str, namespace: str, count: int) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        scans = _lines(system, node, namespace, "scan")
        return scans if len(scans) >= count else None

    return wait_for(f"{count} scan line(s)", probe, expect.REARM)


def _drift(system: FimSystem, node: str, namespace: str, path: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = [d for d in _lines(system, node, namespace, "drift") if d.get("path") == path]
        return found[-1] if found else None

    try:
        return wait_for(f"a drift line for {path}", probe, expect.REARM)
    except TimeoutError as err:  # say what fimd did write about the namespace
        told = [
            line
            for line in system.lines(node)
            if line.get("namespace") == namespace and line.get("kind") in ("scan", "drift", "op")
        ]
        raise AssertionError(f"{err}; fimd wrote: {told}") from None


def test_a_change_while_fimd_is_down_is_changed_drift_with_hashes(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    kube.apply(pod("web", namespace, {"app": "web"}, "mkdir -p /cfg && exec sleep 3600"))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    kube.exec(namespace, "web", "echo v1 > /cfg/app.conf")
    kube.apply(watcher("w", namespace, {"app": "web"}, [SUBJECT]))
    watched(kube, namespace, "w", pods=1)
    (first,) = _scans(system, node, namespace, 1)
    assert (first["baseline"], first["scanned"]) == (False, 2)  # /cfg and app.conf
    before = _sha256(kube, namespace, "/cfg/app.conf")

    # While watched: the event line carries the file's hash and attributes.
    kube.exec(namespace, "web", "echo v1b > /cfg/app.conf")
    (line,) = expect.events(system, node, namespace, [("CLOSEWRITE", "/cfg/app.conf")])
    assert line["sha256"] == _sha256(kube, namespace, "/cfg/app.conf")
    assert (line["size"], line["mode"], line["uid"]) == (4, "0644", 0)
    assert line["previous"]["sha256"] == before  # the file's first event: from the baseline

    fimd = system.fimd_pod(node)
    kube.run("delete", "pod", fimd, f"--namespace={SYSTEM_NAMESPACE}", "--wait=true")
    kube.exec(namespace, "web", "echo version-2 > /cfg/app.conf")  # nothing watches now
    after = _sha256(kube, namespace, "/cfg/app.conf")
    wait_for("a new fimd pod", lambda: system.fimd_pod(node) != fimd, 120)

    drift = _drift(system, node, namespace, "/cfg/app.conf")
    assert (drift["change"], drift["reason"], drift["type"]) == ("CHANGED", "activation", "file")
    assert drift["watcher"] == f"{namespace}/w"
    # The baseline is the first comparison's (v1), not what the old fimd's events showed.
    assert drift["before"]["sha256"] == before
    assert drift["after"]["sha256"] == after
    assert drift["after"]["size"] == len("version-2\n")
    assert "sha256" in drift["changed"]
    (scan,) = _scans(system, node, namespace, 1)  # the new fimd's log
    assert (scan["baseline"], scan["changed"], scan["added"], scan["removed"]) == (True, 1, 0, 0)
    # No event line for it: nothing was watching when it was written.
    expect.no_events(system, node, namespace, "/cfg/app.conf")
    # The new fimd's first event of the file shows the state its comparison stored.
    kube.exec(namespace, "web", "echo v3 > /cfg/app.conf")
    (line,) = expect.events(system, node, namespace, [("CLOSEWRITE", "/cfg/app.conf")])
    assert line["previous"]["sha256"] == after
    assert line["sha256"] == _sha256(kube, namespace, "/cfg/app.conf")


def test_a_change_right_after_a_container_restart_is_reported(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    # Every start of the container writes new content first thing, then waits to be killed.
    script = (
        "mkdir -p /cfg; date +%s%N > /cfg/app.conf; "
        "while [ ! -e /tmp/die ]; do sleep 0.2; done; exit 1"
    )
    kube.apply(pod("web", namespace, {"app": "web"}, script))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    kube.apply(watcher("w", namespace, {"app": "web"}, [SUBJECT]))
    watched(kube, namespace, "w", pods=1)
    _scans(system, node, namespace, 1)
    first = _sha256(kube, namespace, "/cfg/app.conf")

    kube.exec(namespace, "web", "touch /tmp/die")
    wait_for("container restarted", lambda: _restarts(kube, namespace) >= 1, 60)
    running(kube, namespace, "web")
    restarted = _sha256(kube, namespace, "/cfg/app.conf")
    assert restarted != first
    # The new container starts with a fresh root: whether its first write comes before the
    # watch's re-activation or after it is a race. Before: the comparison finds the file
    # CHANGED. After: it finds it REMOVED, and the write is an event line of its own.
    # Either way the new content is reported, with its hash.
    drift = _drift(system, node, namespace, "/cfg/app.conf")
    assert drift["reason"] == "activation"
    assert drift["before"]["sha256"] == first
    if drift["change"] == "CHANGED":
        assert drift["after"]["sha256"] == restarted
    else:
        assert drift["change"] == "REMOVED", drift

        def written() -> list[dict[str, Any]]:
            return [
                e
                for e in system.events(node, namespace)
                if e.get("path") == "/cfg/app.conf" and e.get("sha256") == restarted
            ]

        wait_for("the restarted container's write as an event line", written, expect.REARM)


def _restarts(kube: Kube, namespace: str) -> int:
    statuses = kube.get("pod", "web", namespace)["status"].get("containerStatuses", [])
    return int(statuses[0].get("restartCount", 0)) if statuses else 0


@dataclass(frozen=True)
class Scheduled:
    """A pod under a FimWatcher with `scan.interval: 1m`, for the whole session."""

    namespace: str
    node: str


@pytest.fixture(scope="session")
def scheduled(kube: Kube, system: FimSystem) -> Iterator[Scheduled]:
    """Set up by the session's first test of it; its last test (`session_end`) reads the
    scans: the minutes they take pass while the other scenarios run."""
    namespace = f"e2e-scheduled-scan-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        kube.apply(pod("web", namespace, {"app": "web"}, "mkdir -p /cfg && exec sleep 3600"))
        node = running(kube, namespace, "web")["spec"]["nodeName"]
        kube.exec(namespace, "web", "echo v1 > /cfg/app.conf && echo x > /cfg/other")
        spec = watcher("w", namespace, {"app": "web"}, [SUBJECT])
        spec["spec"]["scan"] = {"interval": "1m"}
        kube.apply(spec)
        watched(kube, namespace, "w", pods=1)
        yield Scheduled(namespace, node)
    finally:
        ignore_missing(lambda: kube.run("delete", "namespace", namespace, "--wait=false"))


def test_a_one_minute_scan_watch_starts_with_a_comparison(
    system: FimSystem, scheduled: Scheduled
) -> None:
    first = _scans(system, scheduled.node, scheduled.namespace, 1)[0]
    assert first["reason"] != "scheduled"  # the activation's, not the schedule's
    assert first["scanned"] == 3


@pytest.mark.session_end
def test_one_minute_scans_write_scan_lines_and_the_status(
    kube: Kube, system: FimSystem, scheduled: Scheduled
) -> None:
    """The scheduled scans' lines and status. (A change found by a scheduled scan, as drift
    with reason "scheduled", is services/fimd's test_baseline_daemon: here it would add up to
    a minute's wait for the next scan after the change, since other scenarios restart fimd
    and so its earlier lines are not in the current pod's log.)"""
    namespace, node = scheduled.namespace, scheduled.node

    def scheduled_scans() -> list[dict[str, Any]]:
        return [s for s in _lines(system, node, namespace, "scan") if s["reason"] == "scheduled"]

    # More than a minute has passed since the session's first test: a scheduled scan ran.
    earlier = wait_for(
        "a scheduled scan line", lambda: scheduled_scans() or None, 60 + expect.REARM
    )
    assert (earlier[0]["baseline"], earlier[0]["scanned"]) == (True, 3)
    assert (earlier[0]["added"], earlier[0]["removed"], earlier[0]["changed"]) == (0, 0, 0)
    assert earlier[0]["watcher"] == f"{namespace}/w"

    def status() -> dict[str, Any] | None:
        last = kube.get("fimwatcher", "w", namespace).get("status", {}).get("lastScan")
        return last if last and last["time"] >= earlier[0]["time"][:19] else None

    # The controller reads fimd's state at its sweeps (--resync-period 60 s).
    last = wait_for("status.lastScan of a scheduled scan", status, 90)
    assert (last["scanned"], last["added"], last["removed"], last["changed"]) == (3, 0, 0, 0)
