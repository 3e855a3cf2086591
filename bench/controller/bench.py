"""Controller benchmark: 1,000 pods x 20 FimWatchers on 5 fake fimd nodes, real API server.

Starts etcd + kube-apiserver (tests/cluster), applies deploy/base, serves five fake fimds
over real gRPC in this process, creates the pods (status set as a kubelet would) and the
FimWatchers (each selects every pod: 20,000 watches), then runs the controller
(`python -m services.controller`, ServiceAccount token, 4 workers) and measures:

1. cold start: time until every watch exists on its fimd and every status says 1000/1000;
2. restart (SIGKILL, start again) with fimd state intact: time until the rebuild is done
   (every node re-read and every watcher synced, queue empty) and the calls it made;
3. restart after every fimd also restarted empty: time until 20,000 watches are back;
4. steady state: fimd calls during a quiet window of several sweeps;
5. changes: calls caused by relabelling 10 pods out of the selection and adding 10 pods.

Run: `PYTHONPATH=<repo>:<dir with fim/v1 generated code> python3 -m bench.controller.bench`
or `bazel run //bench/controller:bench`. Needs the pinned binaries in the cache
(`bash tools/cluster/build.sh apiserver`).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.controller.kube import Kube
from services.controller.tests import apiserver
from services.controller.tests.fake_fimd import FakeFimd, FakeFimdServer
from tests.cluster.cluster import Cluster
from tests.cluster.controlplane import free_port

NS = "bench"
METHODS = ("GetWatchState", "CreateWatch", "DestroyWatch")


class Bench:
    def __init__(self, kube: Kube, kubeconfig: Path, logs: Path, args: argparse.Namespace):
        self.kube = kube
        self.kubeconfig = kubeconfig
        self.logs = logs
        self.args = args
        self.fimds: dict[str, FakeFimdServer] = {}
        self.http_port = free_port()
        self.controller: apiserver.ControllerProcess | None = None

    # World.
    def setup(self) -> None:
        apiserver.namespace(self.kube, NS)
        for index in range(self.args.nodes):
            node = f"node-{index}"
            server = FakeFimdServer(FakeFimd(node))
            self.fimds[node] = server
            apiserver.create_pod(
                self.kube,
                apiserver.SYSTEM,
                f"fimd-{node}",
                node=node,
                labels={"app.kubernetes.io/name": "fimd"},
                containers={"fimd": 1},
                ports={apiserver.FIMD_PORT_NAME: server.port},
            )
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.add_pod, range(self.args.pods)))
        for index in range(self.args.watchers):
            body = apiserver.fimwatcher(NS, f"w{index}", {"group": "bench"}, [f"/data/{index}"])
            self.kube.request("POST", apiserver.watcher_path(NS), body=body)

    def add_pod(self, index: int) -> None:
        node = f"node-{index % self.args.nodes}"
        apiserver.create_pod(
            self.kube,
            NS,
            f"pod-{index}",
            node=node,
            labels={"group": "bench"},
            containers={"app": index + 1},
        )

    # Observations.
    def watches(self) -> int:
        return sum(len(server.fimd.snapshot()) for server in self.fimds.values())

    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for server in self.fimds.values():
            with server.fimd.lock:
                total.update(server.fimd.calls)
        return total

    def statuses_done(self, pods: int) -> bool:
        items = self.kube.request("GET", apiserver.watcher_path(NS))["items"]
        return len(items) == self.args.watchers and all(
            (i.get("status") or {}).get("watchedPods") == pods
            and (i.get("status") or {}).get("observablePods") == pods
            for i in items
        )

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return -1.0
        values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
        return sum(float(v) for v in values) if values else -1.0

    def rebuilt(self) -> bool:
        """Every node re-read and every watcher synced once, nothing left in the queue."""
        syncs = self.metric("fim_controller_reconciles_total")
        return (
            syncs >= self.args.nodes + self.args.watchers
            and self.metric("fim_controller_queue_depth") == 0
        )

    def rss_mib(self) -> float:
        assert self.controller is not None
        status = Path(f"/proc/{self.controller.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    # Controller.
    def start(self) -> float:
        self.controller = apiserver.ControllerProcess(
            self.kubeconfig,
            self.logs,
            "--insecure",
            f"--namespace={apiserver.SYSTEM}",
            f"--http-address=127.0.0.1:{self.http_port}",
            f"--resync-period={self.args.resync}",
            "--no-leader-elect",
        )
        return time.monotonic()

    def kill(self) -> None:
        assert self.controller is not None
        self.controller.kill()


def wait(check: object, timeout: float = 600.0) -> float:
    """Seconds until `check()` holds (polled every 50 ms)."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise TimeoutError("did not converge")
        time.sleep(0.05)
    return time.monotonic() - started


def delta(after: Counter[str], before: Counter[str]) -> str:
    return ", ".join(f"{m} {after[m] - before[m]}" for m in METHODS)


def converge(bench: Bench, total: int, pods: int) -> tuple[float, float]:
    """Starts the controller; seconds until all `total` watches exist, and until every
    status says `pods` of `pods` watched."""
    t0 = bench.start()
    wait(lambda: bench.watches() == total)
    watches_at = time.monotonic() - t0
    wait(lambda: bench.statuses_done(pods))
    return watches_at, time.monotonic() - t0


def run(bench: Bench, args: argparse.Namespace) -> None:
    total = args.pods * args.watchers
    started = time.monotonic()
    bench.setup()
    print(f"setup: {args.pods} pods, {args.watchers} watchers, {args.nodes} nodes in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip

    before = bench.calls()
    watches_at, statuses_at = converge(bench, total, args.pods)
    print(f"cold start: {total} watches in {watches_at:.1f} s, all statuses "
          f"{args.pods}/{args.pods} in {statuses_at:.1f} s "
          f"({delta(bench.calls(), before)}); RSS {bench.rss_mib():.0f} MiB")  # fmt: skip

    bench.kill()
    before = bench.calls()
    t0 = bench.start()
    wait(bench.rebuilt)
    print(f"restart, fimd state intact: rebuilt in {time.monotonic() - t0:.1f} s "
          f"({delta(bench.calls(), before)})")  # fmt: skip

    bench.kill()
    for server in bench.fimds.values():
        server.fimd.restart()
    before = bench.calls()
    watches_at, statuses_at = converge(bench, total, args.pods)
    print(f"restart, every fimd restarted empty: {total} watches in {watches_at:.1f} s, "
          f"statuses in {statuses_at:.1f} s "
          f"({delta(bench.calls(), before)})")  # fmt: skip

    before = bench.calls()
    time.sleep(args.quiet)
    print(f"steady state, {args.quiet:.0f} s quiet ({args.resync:.0f} s sweep): "
          f"{delta(bench.calls(), before)}")  # fmt: skip

    before = bench.calls()
    for index in range(10):
        bench.kube.request(
            "PATCH",
            f"/api/v1/namespaces/{NS}/pods/pod-{index}",
            body={"metadata": {"labels": {"group": "other"}}},
            content_type=apiserver.MERGE_PATCH,
        )
    wait(lambda: bench.watches() == total - 10 * args.watchers)
    print(f"10 pods relabelled out: {delta(bench.calls(), before)}")
    before = bench.calls()
    for index in range(args.pods, args.pods + 10):
        bench.add_pod(index)
    wait(lambda: bench.watches() == total)
    print(f"10 pods added: {delta(bench.calls(), before)}")
    bench.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--resync", type=float, default=10.0)
    parser.add_argument("--quiet", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fim-bench-") as tmp:
        cluster = Cluster(Path(tmp) / "cluster", apiserver_only=True)
        cluster.up()
        try:
            kube = Kube.connect(str(cluster.kubeconfig))
            apiserver.apply_files(kube, ["namespace.yaml", "crd.yaml", "controller-rbac.yaml"])
            apiserver.namespace(kube, apiserver.SYSTEM)
            plane = cluster.control_plane
            kubeconfig = apiserver.service_account_kubeconfig(
                kube, plane.server, plane.pki.ca.cert, Path(tmp)
            )
            bench = Bench(kube, kubeconfig, Path(tmp) / "controller.log", args)
            try:
                run(bench, args)
            finally:
                for server in bench.fimds.values():
                    server.stop()
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
