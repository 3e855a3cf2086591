"""Cluster capacity benchmark (issue 10): P pods x W FimWatchers that each select all of them
(default 110 x 5 = 550 watches on one node), on the local single-node cluster.

Brings up the local cluster of tests/cluster (or uses KUBECONFIG), imports the Bazel-built
images and deploys fim-k8s with `kubectl apply -k deploy/overlays/standard` exactly as the e2e
suite does, creates one Deployment of P busybox pods, then the W watchers in one apply, and
prints, against the contract:

- time from the last apply until every watcher's status reads observablePods = watchedPods
  = P (contract: <= 60 s);
- fan-out: one file created in the newest pod, event lines per watcher in fimd's log
  (contract: exactly one each);
- fimd's pod working set, memory cgroup usage minus total_inactive_file, sampled every
  --interval seconds from just before the watchers are applied until the end, peak and final
  (contract: < 200 MiB);
- inotify instances held by the processes of fimd's pod (fds linked to anon_inode:inotify;
  contract: <= 5), peak and final;
- fim processes (those in fimd's container) and their summed RSS;
- fimd restarts during the run; the host's fs.inotify.* and fs.mqueue.* sysctls (contract:
  untouched).

Node-side figures need this process on the node as root (the local cluster); against a
KUBECONFIG whose fimd pod has no cgroup on this machine they are reported as not measured.
Everything the bench started is removed at the end: the namespace (pods, watchers), fim-k8s
if it was not deployed before (KUBECONFIG), and the local cluster (stopped by PID, host
restored) -- also on Ctrl-C or SIGTERM.

Run (root, after `bash tools/cluster/build.sh` and `python3 -m images.build`; no other local
cluster may be running):

    bazel run //bench/cluster:capacity -- --pods 110 --watchers 5

Exit status 0 when every contract figure is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from images.push import Pushed
from tests.cluster.cluster import Cluster
from tests.cluster.config import Binaries
from tests.cluster.controlplane import STANDARD_APISERVER_PORT
from tests.cluster.node import BRIDGE, bridge_exists
from tests.e2e import nodestats
from tests.e2e.capacity import Capacity, Converged, FanOut, FimdRestarts
from tests.e2e.kube import Kube, KubectlError
from tests.e2e.system import (
    SYSTEM_NAMESPACE,
    FimSystem,
    deployable,
    ignore_missing,
    overlay_dir,
    push_service_images,
)

CONVERGE_SECONDS = 60.0
WORKING_SET_LIMIT = 200 * nodestats.MIB
MAX_INOTIFY_INSTANCES = 5
MIB = nodestats.MIB
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[capacity +{time.monotonic() - STARTED:6.1f} s] {message}", flush=True)


class StopError(Exception):
    """SIGTERM: unwinds like Ctrl-C, so everything started is torn down."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise StopError(f"signal {signum}")


@contextmanager
def cluster_kube(keep_state: bool) -> Iterator[tuple[Kube, tuple[Pushed, ...]]]:
    """KUBECONFIG's cluster, or a local cluster started now and stopped at the end; with
    the service images pushed to its registry (FIM_E2E_REGISTRY for KUBECONFIG's, if set)."""
    kubectl = Binaries.from_env().kube("kubectl")
    if os.environ.get("KUBECONFIG"):
        say(f"using KUBECONFIG={os.environ['KUBECONFIG']}")
        registry = os.environ.get("FIM_E2E_REGISTRY", "")
        images = tuple(push_service_images(registry)) if registry else ()
        yield Kube(kubectl, Path(os.environ["KUBECONFIG"])), images
        return
    if bridge_exists():
        raise SystemExit(
            f"bridge {BRIDGE} exists: another local cluster is running "
            "(`python3 -m tests.cluster status`); stop it or set KUBECONFIG"
        )
    state = Path(tempfile.mkdtemp(prefix="fim-capacity-"))
    cluster = Cluster(state, apiserver_only=False, apiserver_port=STANDARD_APISERVER_PORT)
    say(f"starting the local cluster (state {state})")
    cluster.up()
    try:
        say(f"node Ready after {cluster.startup_seconds:.1f} s")
        images = tuple(push_service_images(cluster.registry))
        say(f"pushed {', '.join(image.reference for image in images)}")
        yield Kube(kubectl, cluster.kubeconfig), images
    finally:
        say("stopping the local cluster (by PID) and restoring the host")
        cluster.down(remove_state=not keep_state)


@contextmanager
def fim_k8s(kube: Kube, images: tuple[Pushed, ...]) -> Iterator[FimSystem]:
    """fim-k8s deployed as the e2e suite does; removed afterwards if this deployed it."""
    existed = kube.exists("daemonset", "fimd", SYSTEM_NAMESPACE)
    system = FimSystem(kube, images)
    started = time.monotonic()
    system.deploy(overlay_dir())
    say(f"fim-k8s deployed and ready in {time.monotonic() - started:.1f} s")
    try:
        yield system
    finally:
        if not existed and os.environ.get("KUBECONFIG"):
            say("removing fim-k8s (this bench deployed it)")
            with tempfile.TemporaryDirectory() as scratch:
                kube.run(
                    "delete", "-k",
                    str(deployable(overlay_dir(), Path(scratch), images, kube.kubectl)),
                    "--ignore-not-found", "--timeout=300s", timeout=330,
                )  # fmt: skip


@contextmanager
def namespace(kube: Kube) -> Iterator[str]:
    name = f"capacity-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        say(f"deleting namespace {name} (pods and watchers)")
        started = time.monotonic()
        ignore_missing(lambda: kube.run("delete", "namespace", name, "--timeout=600s", timeout=630))
        say(f"namespace gone after {time.monotonic() - started:.1f} s")


class Report:
    """Figures and verdicts, printed at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, bool | None]] = []

    def add(self, what: str, figure: str, ok: bool | None = None) -> None:
        self.rows.append((what, figure, ok))
        say(f"{what}: {figure}")

    def print(self) -> bool:
        width = max(len(what) for what, _, _ in self.rows)
        print("\nresult:")
        for what, figure, ok in self.rows:
            verdict = {True: "ok  ", False: "FAIL", None: "    "}[ok]
            print(f"  {verdict} {what:<{width}}  {figure}")
        return all(ok is not False for _, _, ok in self.rows)


def run(args: argparse.Namespace, report: Report, sysctls_before: dict[str, str]) -> None:
    with (
        cluster_kube(args.keep_state) as (kube, images),
        fim_k8s(kube, images) as system,
        namespace(kube) as ns,
    ):
        scenario = Capacity(kube, system, ns, args.pods, args.watchers)
        say(f"creating {args.pods} pods (one Deployment)")
        pods_seconds = scenario.create_pods(timeout=args.pods_timeout)
        report.add("pods ready", f"{args.pods} in {pods_seconds:.1f} s")
        node = scenario.newest_pod()["spec"]["nodeName"]
        before = scenario.fimd(node)
        fimd = nodestats.fimd_pod(before.uid, before.container_id)
        sampler = nodestats.PeakSampler(fimd, args.interval).start() if fimd else None
        if sampler is None:
            say(f"fimd pod {before.uid} has no cgroup on this machine: node side not measured")
        try:
            say(f"applying {args.watchers} watchers ({args.pods * args.watchers} watches)")
            since = scenario.apply_watchers()
            converged = scenario.wait_converged(since, timeout=args.converge_timeout)
            _converged(report, converged, args.pods)
            fan_out = scenario.fan_out(node)
            _fan_out(report, fan_out, scenario.qualified)
            if sampler is not None and args.hold > 0:
                say(f"sampling {args.hold:.0f} s more")
                time.sleep(args.hold)
            _fimd(report, before, scenario.fimd(node))
            if sampler is not None:
                _node_side(report, sampler)
            else:
                report.add("node side (memory, inotify, processes)", "not measured (not local)")
        finally:
            if sampler is not None:
                sampler.stop()
        if sampler is not None:
            _sysctls(report, "host sysctls during the run", sysctls_before)


def _converged(report: Report, converged: Converged, pods: int) -> None:
    if converged.seconds is None:
        report.add(f"every watcher at {pods}/{pods}", f"not reached: {converged.describe()}", False)
        return
    report.add(
        f"every watcher at {pods}/{pods}",
        f"{converged.seconds:.1f} s after the last apply (<= {CONVERGE_SECONDS:.0f} s)",
        converged.seconds <= CONVERGE_SECONDS,
    )


def _fan_out(report: Report, fan_out: FanOut, watchers: list[str]) -> None:
    latency = fan_out.first_all_seconds
    when = f"all within {latency:.2f} s" if latency is not None else "not all arrived"
    lines = sum(fan_out.per_watcher.values())
    report.add(
        "fan-out (one file, newest pod)",
        f"{lines} lines for {len(watchers)} watchers, per watcher "
        f"{sorted(fan_out.per_watcher.values())}, {when}; pod {fan_out.pod}",
        fan_out.once_each(watchers),
    )


def _fimd(report: Report, before: FimdRestarts, after: FimdRestarts) -> None:
    same = after.uid == before.uid and after.restarts == before.restarts
    detail = f"{after.restarts - before.restarts}" if after.uid == before.uid else "pod replaced"
    if after.last_termination:
        detail += f" (last ended {after.last_termination})"
    report.add("fimd restarts during the run", detail, same)


def _node_side(report: Report, sampler: nodestats.PeakSampler) -> None:
    final = sampler.take()
    peak = sampler.peak_working_set
    report.add(
        "fimd pod working set",
        f"peak {peak / MIB:.1f} MiB, final {final.working_set / MIB:.1f} MiB "
        f"({sampler.samples} samples; < {WORKING_SET_LIMIT // MIB} MiB)",
        peak < WORKING_SET_LIMIT and final.working_set < WORKING_SET_LIMIT,
    )
    report.add(
        "inotify instances in fimd's pod",
        f"final {final.inotify_instances}, peak {sampler.peak_inotify_instances} "
        f"(<= {MAX_INOTIFY_INSTANCES})",
        sampler.peak_inotify_instances <= MAX_INOTIFY_INSTANCES,
    )
    report.add(
        "fim processes (fimd's container)",
        f"{final.processes} (peak {sampler.peak_processes}), summed RSS "
        f"{final.rss / MIB:.1f} MiB (peak {sampler.peak_rss / MIB:.1f} MiB)",
    )
    if sampler.errors:
        report.add("sampling errors", f"{len(sampler.errors)}: {sampler.errors[-1]}")


def _sysctls(report: Report, what: str, before: dict[str, str]) -> None:
    now = nodestats.host_sysctls()
    changed = {k: f"{v} -> {now.get(k)}" for k, v in before.items() if now.get(k) != v}
    figure = "unchanged" if now == before else f"CHANGED {changed}"
    report.add(f"{what} (fs.inotify.*, fs.mqueue.*: {len(before)})", figure, now == before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bazel run //bench/cluster:capacity --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--watchers", type=int, default=5)
    parser.add_argument("--pods-timeout", type=float, default=900.0, help="s for all pods ready")
    parser.add_argument(
        "--converge-timeout", type=float, default=300.0, help="s to wait for P/P (bound: 60)"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="node-side sampling, s")
    parser.add_argument("--hold", type=float, default=10.0, help="s of sampling after fan-out")
    parser.add_argument("--keep-state", action="store_true", help="keep the cluster's logs")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (the local cluster and the node-side figures need it)")
    signal.signal(signal.SIGTERM, _on_sigterm)
    sysctls_before = nodestats.host_sysctls()
    report = Report()
    try:
        run(args, report, sysctls_before)
    except (KubectlError, TimeoutError, LookupError) as error:
        report.add("run", f"aborted: {error}", False)
    if not os.environ.get("KUBECONFIG"):
        _sysctls(report, "host sysctls after teardown", sysctls_before)
    return 0 if report.print() else 1


if __name__ == "__main__":
    sys.exit(main())
