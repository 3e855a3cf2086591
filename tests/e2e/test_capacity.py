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
  the cluster started.

The full contract (110 pods x 5 watchers) is `bench/cluster/capacity.py`. For a quick run of
the mechanics at another size: `--test_env=FIM_E2E_CAPACITY=4x2` (pods x watchers).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e import nodestats
from tests.e2e.capacity import Capacity, Converged, FanOut, FimdRestarts
from tests.e2e.kube import Kube
from tests.e2e.system import FimSystem, ignore_missing

PODS, WATCHERS = (int(n) for n in os.environ.get("FIM_E2E_CAPACITY", "30x4").split("x"))
CONVERGE_SECONDS = 60.0
WORKING_SET_LIMIT = 200 * nodestats.MIB
MAX_INOTIFY_INSTANCES = 5


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
        # Waits until the pods and watches are gone, so later scenarios start on a quiet node.
        ignore_missing(
            lambda: kube.run("delete", "namespace", namespace, "--timeout=300s", timeout=330)
        )
        system.wait_ready()


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
    return lines
