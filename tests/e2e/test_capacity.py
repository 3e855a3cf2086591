"""Scenario 8 (issue 10, reduced): 30 pods x 4 FimWatchers that each select all of them,
120 watches on one node.

- every watcher's status reads observablePods = watchedPods = 30 within 60 s of the last
  apply;
- a file created in the newest pod reaches fimd's log once for each of the 4 watchers;
- fimd is not restarted meanwhile (an OOM kill would show here);
- node side (only when this process runs on the node, i.e. the local cluster): fimd's pod
  working set (memory cgroup usage minus inactive_file, sampled every 0.5 s from before the
  watchers are applied to the end) stays below 200 MiB; the processes of fimd's pod hold at
  most 5 inotify instances; the host's fs.inotify.* and fs.mqueue.* are what they were before
  the cluster started;
- a watcher beyond a budget (last, after the checks above): fimd restarted with
  `--max-watches` = the watches it holds + 2, one more FimWatcher selecting all P pods gets
  exactly those 2 (watchedPods 2, observablePods P) and Degraded=True, reason NodeCapacity,
  a message naming the budget ("watches") and the node; fimd is not restarted by it and the
  other watchers keep full coverage. The DaemonSet patch is reverted afterwards.

The full contract (110 pods x 5 watchers) is `bench/cluster/capacity.py`. For a quick run of
the mechanics at another size: `--test_env=FIM_E2E_CAPACITY=4x2` (pods x watchers).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import nodestats
from tests.e2e.capacity import APP, WATCHED_DIR, Capacity, Converged, FanOut, FimdRestarts
from tests.e2e.kube import Kube, KubectlError, wait_for
from tests.e2e.system import FIMD_LABEL, SYSTEM_NAMESPACE, FimSystem, ignore_missing
from tests.e2e.workloads import watcher

PODS, WATCHERS = (int(n) for n in os.environ.get("FIM_E2E_CAPACITY", "30x4").split("x"))
CONVERGE_SECONDS = 60.0
WORKING_SET_LIMIT = 200 * nodestats.MIB
MAX_INOTIFY_INSTANCES = 5
SPARE_WATCHES = 2  # the deliberately small budget: watches held now + this
OVER_BUDGET = "over-budget"  # the watcher that asks for more
HOLD_SECONDS = 15.0  # how long the over-budget outcome (and fimd) must stay as it is
FIMD_ARGS = "/spec/template/spec/containers/0/args"


@dataclass
class Run:
    scenario: Capacity
    node: str
    fimd_before: FimdRestarts
    pods_seconds: float
    converged: Converged
    fimd: nodestats.FimdPod | None  # None: not on this machine (see not_local)
    not_local: str
    sampler: nodestats.PeakSampler | None
    fan_out: FanOut | None = None
    budget_note: str = ""  # what the budget test did to fimd (for the report)


@pytest.fixture(scope="module")
def run(kube: Kube, system: FimSystem, figures: list[str]) -> Iterator[Run]:
    namespace = f"e2e-capacity-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    scenario = Capacity(kube, system, namespace, PODS, WATCHERS)
    sampler: nodestats.PeakSampler | None = None
    result: Run | None = None
    try:
        pods_seconds = scenario.create_pods(timeout=60 + 4 * PODS)
        node = scenario.newest_pod()["spec"]["nodeName"]
        before = scenario.fimd(node)
        fimd = nodestats.fimd_pod(before.uid, before.container_id)
        not_local = ""
        if fimd is None:
            where = nodestats.MEMORY_ROOT / "kubepods"
            if not os.environ.get("KUBECONFIG"):
                raise AssertionError(f"local cluster, but fimd pod {before.uid} not under {where}")
            not_local = (
                f"KUBECONFIG={os.environ['KUBECONFIG']} is not a cluster on this machine "
                f"(fimd pod {before.uid} has no cgroup under {where}): node-side measurements "
                "need the local cluster"
            )
        else:
            sampler = nodestats.PeakSampler(fimd).start()
        since = scenario.apply_watchers()
        # Waits past the bound, so that slow convergence is reported with its time.
        converged = scenario.wait_converged(since, timeout=2 * CONVERGE_SECONDS)
        result = Run(scenario, node, before, pods_seconds, converged, fimd, not_local, sampler)
        yield result
    finally:
        if sampler is not None:
            sampler.stop()
        if result is not None:
            figures.extend(f"[capacity] {line}" for line in _report(result))
        # Not waited for: this session (its own cluster) ends here, and its teardown stops
        # everything anyway.
        ignore_missing(lambda: kube.run("delete", "namespace", namespace, "--wait=false"))


def test_every_watcher_reads_all_pods_within_60_s(run: Run) -> None:
    seconds = run.converged.seconds
    assert seconds is not None, (
        f"not every watcher at {PODS}/{PODS} after {2 * CONVERGE_SECONDS:.0f} s: "
        f"{run.converged.describe()}; {_restarts(run)}"
    )
    assert seconds <= CONVERGE_SECONDS, f"{PODS}/{PODS} only {seconds:.1f} s after the last apply"


def test_a_write_in_the_newest_pod_is_logged_once_per_watcher(run: Run) -> None:
    run.fan_out = run.scenario.fan_out(run.node)
    expected = run.scenario.qualified
    assert run.fan_out.once_each(expected), (
        f"{run.fan_out.path} in {run.fan_out.pod}: lines per watcher {run.fan_out.per_watcher}, "
        f"expected one each for {expected}; {_restarts(run)}"
    )


def test_fimd_was_not_restarted(run: Run) -> None:
    now = run.scenario.fimd(run.node)
    assert (now.uid, now.restarts) == (run.fimd_before.uid, run.fimd_before.restarts), _restarts(
        run
    )


def test_fimd_working_set_stays_below_200_mib(run: Run) -> None:
    sampler = _node_side(run)
    final = sampler.take().working_set
    assert sampler.peak_working_set < WORKING_SET_LIMIT, (
        f"peak working set {sampler.peak_working_set / nodestats.MIB:.1f} MiB "
        f"(final {final / nodestats.MIB:.1f} MiB); {_restarts(run)}"
    )
    assert final < WORKING_SET_LIMIT


def test_fimd_holds_at_most_5_inotify_instances(run: Run) -> None:
    sampler = _node_side(run)
    now = sampler.take().inotify_instances
    assert sampler.peak_inotify_instances <= MAX_INOTIFY_INSTANCES, (
        f"fimd's pod held up to {sampler.peak_inotify_instances} inotify instances (now {now})"
    )


def test_host_sysctls_are_untouched(run: Run, host_sysctls: dict[str, str]) -> None:
    _node_side(run)
    now = nodestats.host_sysctls()
    changed = {k: (v, now.get(k)) for k, v in host_sysctls.items() if now.get(k) != v}
    assert now == host_sysctls, f"sysctls changed (before, now): {changed}"


def test_a_watcher_beyond_the_watch_budget_is_degraded_and_fimd_keeps_running(
    run: Run, kube: Kube, system: FimSystem
) -> None:
    if run.sampler is not None:  # it follows the fimd pod that this test replaces
        run.sampler.stop()
    held = _watches_held(kube, system, run.node)
    budget = held + SPARE_WATCHES
    flag = f"--max-watches={budget}"
    old = run.scenario.fimd(run.node)
    _patch_fimd(kube, [{"op": "add", "path": f"{FIMD_ARGS}/-", "value": flag}])
    run.budget_note = f"budget: fimd restarted with {flag} ({held} held), then reverted"
    try:
        fimd = _restarted_fimd(run, system, old.uid, flag)
        converged = run.scenario.wait_converged(time.monotonic(), timeout=2 * CONVERGE_SECONDS)
        assert converged.seconds is not None, (
            f"after fimd's restart with {flag}, not every watcher back at {PODS}/{PODS}: "
            f"{converged.describe()}"
        )
        namespace = run.scenario.namespace
        subject = {"paths": [WATCHED_DIR], "events": ["create"]}
        applied = time.monotonic()
        kube.apply(watcher(OVER_BUDGET, namespace, {"app": APP}, [subject]))
        want = (PODS, SPARE_WATCHES)
        ready = (want, "True", "NodeCapacity")
        status: dict[str, object] = {}
        while time.monotonic() - applied <= CONVERGE_SECONDS:
            status = _over_budget(kube, namespace)
            if (status.get("counts"), status.get("degraded"), status.get("reason")) == ready:
                break
            time.sleep(0.5)
        seconds = time.monotonic() - applied
        message = str(status.get("message", ""))
        assert status.get("degraded") == "True", f"no Degraded=True after {seconds:.0f} s: {status}"
        assert status.get("reason") == "NodeCapacity", status
        assert "watches" in message, f"the message does not name the budget: {message}"
        assert run.node in message, f"the message does not name node {run.node}: {message}"
        assert status.get("counts") == want, (
            f"(observablePods, watchedPods) {status.get('counts')}, expected {want}: "
            f"{SPARE_WATCHES} spare of {flag}"
        )
        # It stays so: fimd (the new pod) is not restarted, the others keep full coverage.
        others = dict.fromkeys(run.scenario.names, (PODS, PODS))
        deadline = time.monotonic() + HOLD_SECONDS
        while True:
            now = run.scenario.fimd(run.node)
            assert (now.uid, now.restarts) == (fimd.uid, 0), (
                f"fimd {fimd.pod} (uid {fimd.uid}) -> {now.pod} (uid {now.uid}), restarts "
                f"{now.restarts}{', last ended ' + now.last_termination if now.restarts else ''}"
            )
            with_budget = run.scenario.statuses()
            assert with_budget.pop(OVER_BUDGET, None) == want, with_budget
            assert with_budget == others, f"other watchers: {with_budget}, expected {others}"
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        ignore_missing(
            lambda: kube.run(
                "delete", "fimwatcher", OVER_BUDGET, f"--namespace={run.scenario.namespace}"
            )
        )
        _revert_fimd(kube, flag)
        system.wait_ready()


def _watches_held(kube: Kube, system: FimSystem, node: str) -> int:
    """Watches fimd on `node` holds (watch_added minus watch_removed in its log), checked
    against the statuses: every watched pod here has one container, so one watch."""
    held = 0
    for line in system.lines(node):
        if line.get("kind") == "op":
            held += {"watch_added": 1, "watch_removed": -1}.get(str(line.get("msg")), 0)
    items = kube.get("fimwatchers", "", "", "--all-namespaces")["items"]
    watched = sum(int(item.get("status", {}).get("watchedPods", 0)) for item in items)
    assert held == watched == PODS * WATCHERS, (
        f"fimd's log says {held} watches, the statuses {watched} watched pods"
    )
    return held


def _patch_fimd(kube: Kube, ops: list[dict[str, object]]) -> None:
    kube.run(
        "patch", "daemonset", "fimd", f"--namespace={SYSTEM_NAMESPACE}", "--type=json",
        f"--patch={json.dumps(ops)}",
    )  # fmt: skip


def _revert_fimd(kube: Kube, flag: str) -> None:
    """Removes `flag` from fimd's args again (if it is there)."""
    daemonset = kube.get("daemonset", "fimd", SYSTEM_NAMESPACE)
    args = daemonset["spec"]["template"]["spec"]["containers"][0].get("args", [])
    if flag in args:
        path = f"{FIMD_ARGS}/{args.index(flag)}"
        _patch_fimd(
            kube, [{"op": "test", "path": path, "value": flag}, {"op": "remove", "path": path}]
        )


def _restarted_fimd(run: Run, system: FimSystem, old_uid: str, flag: str) -> FimdRestarts:
    """Waits until the node's only fimd pod is a new one with `flag`, Running and Ready."""

    def probe() -> bool:
        pods = [p for p in system.pods(FIMD_LABEL) if p["spec"].get("nodeName") == run.node]
        if len(pods) != 1 or pods[0]["metadata"]["uid"] == old_uid:
            return False
        fimd = pods[0]
        args = fimd["spec"]["containers"][0].get("args", [])
        statuses = fimd["status"].get("containerStatuses", [])
        return (
            flag in args
            and "deletionTimestamp" not in fimd["metadata"]
            and fimd["status"].get("phase") == "Running"
            and bool(statuses)
            and all(s.get("ready") for s in statuses)
        )

    wait_for(f"a new ready fimd pod with {flag} on {run.node}", probe, timeout=180)
    return run.scenario.fimd(run.node)


def _over_budget(kube: Kube, namespace: str) -> dict[str, object]:
    """The over-budget watcher's counts and Degraded condition (the error on an API hiccup)."""
    try:
        status = kube.get("fimwatcher", OVER_BUDGET, namespace).get("status", {})
    except KubectlError as error:
        return {"error": str(error)}
    conditions: list[dict[str, Any]] = status.get("conditions", [])
    degraded = next((c for c in conditions if c.get("type") == "Degraded"), {})
    return {
        "counts": (int(status.get("observablePods", 0)), int(status.get("watchedPods", 0))),
        "degraded": degraded.get("status"),
        "reason": degraded.get("reason"),
        "message": degraded.get("message", ""),
    }


def _node_side(run: Run) -> nodestats.PeakSampler:
    if run.sampler is None:
        pytest.skip(run.not_local)
    return run.sampler


def _restarts(run: Run) -> str:
    try:
        now = run.scenario.fimd(run.node)
    except LookupError as error:
        return str(error)
    if now.uid != run.fimd_before.uid:
        return f"fimd pod replaced ({run.fimd_before.pod} -> {now.pod})"
    ended = f", last ended {now.last_termination}" if now.last_termination else ""
    return f"fimd restarts {run.fimd_before.restarts} -> {now.restarts}{ended}"


def _report(run: Run) -> list[str]:
    """The figures of the run (printed in the terminal summary, also when all passed)."""
    mib = nodestats.MIB
    lines = [
        f"{PODS} pods x {WATCHERS} watchers: pods ready in {run.pods_seconds:.1f} s",
        "converged: "
        + (
            f"{run.converged.seconds:.1f} s after the last apply"
            if run.converged.seconds is not None
            else f"no ({run.converged.describe()})"
        ),
    ]
    if run.fan_out is not None:
        latency = run.fan_out.first_all_seconds
        lines.append(
            f"fan-out: {run.fan_out.per_watcher} "
            + (f"all within {latency:.2f} s" if latency is not None else "incomplete")
        )
    lines.append(_restarts(run))
    if run.sampler is not None:
        s = run.sampler
        lines.append(
            f"fimd pod: peak working set {s.peak_working_set / mib:.1f} MiB, peak inotify "
            f"instances {s.peak_inotify_instances}, peak processes {s.peak_processes} "
            f"(summed RSS peak {s.peak_rss / mib:.1f} MiB), {s.samples} samples"
            + (f", {len(s.errors)} sampling errors" if s.errors else "")
        )
    else:
        lines.append(f"node side not measured: {run.not_local}")
    if run.budget_note:
        lines.append(run.budget_note)
    return lines
