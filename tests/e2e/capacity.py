"""The capacity scenario of issue 10, shared by tests/e2e/test_capacity.py (30 pods x 4
watchers) and bench/cluster/capacity.py (110 x 5): P workload pods from one Deployment,
W FimWatchers that each select all of them (P x W watches), then

- the time from the last apply (the W watchers, in one `kubectl apply`) until every
  watcher's status reads observablePods = watchedPods = P;
- the fan-out: one file created in the newest pod reaches fimd's log once per watcher;
- fimd's restarts meanwhile (an OOM kill shows up here first).

fimd's log is read with `--since-time` (from just before the write), so a poll never pulls
the whole log, and the scenario writes one file into a directory watched for `create` only:
W event lines in all. That keeps far away from the kubelet's 10 MiB log rotation, after which
`kubectl logs` would no longer show lines written before it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.kube import Kube, KubectlError
from tests.e2e.system import FIMD_LABEL, SYSTEM_NAMESPACE, FimSystem
from tests.e2e.workloads import pod, watcher

APP = "capacity"
DEPLOYMENT = "capacity"
WATCHED_DIR = "/cap"


@dataclass(frozen=True)
class Converged:
    """Outcome of waiting for every watcher to read P/P."""

    seconds: float | None  # from the start of the last apply; None: not within the timeout
    statuses: dict[str, tuple[int, int]]  # watcher -> (observablePods, watchedPods), last read

    def describe(self) -> str:
        pairs = sorted(self.statuses.items())
        return ", ".join(f"{name} {obs}/{watched}" for name, (obs, watched) in pairs)


@dataclass(frozen=True)
class FanOut:
    """Event lines one file creation produced, per watcher."""

    pod: str
    path: str
    per_watcher: dict[str, int]  # "namespace/name" -> event lines for the path
    first_all_seconds: float | None  # write until every watcher had its line; None: never
    log_bytes: int = 0  # fimd log read since the write (the last poll)

    def once_each(self, watchers: list[str]) -> bool:
        return self.per_watcher == dict.fromkeys(watchers, 1)


@dataclass(frozen=True)
class FimdRestarts:
    """fimd's pod on the node and its container's restart count (+ why it last ended)."""

    pod: str
    uid: str
    container_id: str
    restarts: int
    last_termination: str


@dataclass
class Capacity:
    """P pods x W watchers in `namespace` (which the caller creates and deletes)."""

    kube: Kube
    system: FimSystem
    namespace: str
    pods: int
    watchers: int
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [f"w{index}" for index in range(self.watchers)]

    @property
    def qualified(self) -> list[str]:
        """Watcher identities as fimd's event lines name them."""
        return [f"{self.namespace}/{name}" for name in self.names]

    # Pods.
    def deployment(self) -> dict[str, Any]:
        script = f"mkdir -p {WATCHED_DIR} && exec sleep 86400"
        template = pod("", self.namespace, {"app": APP}, script)
        del template["metadata"]["name"], template["metadata"]["namespace"]
        # No API token in the workload: one mount fewer per pod for the kubelet.
        template["spec"]["automountServiceAccountToken"] = False
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": self.namespace},
            "spec": {
                "replicas": self.pods,
                "selector": {"matchLabels": {"app": APP}},
                "template": {"metadata": template["metadata"], "spec": template["spec"]},
            },
        }

    def create_pods(self, timeout: float) -> float:
        """One Deployment of P replicas; returns the seconds until all P are ready."""
        started = time.monotonic()
        self.kube.apply(self.deployment())
        deadline = started + timeout
        ready = 0
        while time.monotonic() < deadline:
            status = self.kube.get("deployment", DEPLOYMENT, self.namespace).get("status", {})
            ready = int(status.get("readyReplicas", 0))
            if ready == self.pods == int(status.get("updatedReplicas", 0)):
                return time.monotonic() - started
            time.sleep(1.0)
        raise TimeoutError(f"{ready} of {self.pods} pods ready after {timeout} s")

    def running_pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            "pods", "", self.namespace, f"--selector=app={APP}"
        )["items"]
        return [p for p in items if p["status"].get("phase") == "Running"]

    def newest_pod(self) -> dict[str, Any]:
        """The last pod created (creation time, then name)."""
        pods = self.running_pods()
        return max(pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))

    # Watchers.
    def watcher_objects(self) -> list[dict[str, Any]]:
        subject = {"paths": [WATCHED_DIR], "events": ["create"]}
        return [watcher(name, self.namespace, {"app": APP}, [subject]) for name in self.names]

    def apply_watchers(self) -> float:
        """All W watchers in one apply (the last apply); returns the monotonic time it began."""
        started = time.monotonic()
        self.kube.apply(*self.watcher_objects())
        return started

    def statuses(self) -> dict[str, tuple[int, int]]:
        items = self.kube.get("fimwatchers", "", self.namespace)["items"]
        result = {}
        for item in items:
            status = item.get("status", {})
            result[item["metadata"]["name"]] = (
                int(status.get("observablePods", 0)),
                int(status.get("watchedPods", 0)),
            )
        return result

    def wait_converged(self, since: float, timeout: float) -> Converged:
        """Polls until every watcher reads P/P; `since` is apply_watchers()'s result."""
        want = dict.fromkeys(self.names, (self.pods, self.pods))
        statuses: dict[str, tuple[int, int]] = {}
        while True:
            with contextlib.suppress(KubectlError):  # an API hiccup under load: poll again
                statuses = self.statuses()
            now = time.monotonic()
            if statuses == want:
                return Converged(now - since, statuses)
            if now - since > timeout:
                return Converged(None, statuses)
            time.sleep(0.5)

    # fimd.
    def fimd(self, node: str) -> FimdRestarts:
        for item in self.system.pods(FIMD_LABEL):
            if item["spec"].get("nodeName") != node:
                continue
            statuses = item["status"].get("containerStatuses", [])
            fimd: dict[str, Any] = next((s for s in statuses if s.get("name") == "fimd"), {})
            last = fimd.get("lastState", {}).get("terminated", {})
            ended = f"{last.get('reason', '')} (exit {last.get('exitCode')})" if last else ""
            return FimdRestarts(
                pod=item["metadata"]["name"],
                uid=item["metadata"]["uid"],
                container_id=fimd.get("containerID", ""),
                restarts=int(fimd.get("restartCount", 0)),
                last_termination=ended,
            )
        raise LookupError(f"no fimd pod on node {node}")

    def fan_out(self, node: str, timeout: float = 30.0, settle: float = 3.0) -> FanOut:
        """Creates one file in the newest pod; waits until every watcher's line for it is in
        fimd's log (or `timeout`), then `settle` seconds more so duplicates show up."""
        target = self.newest_pod()["metadata"]["name"]
        path = f"{WATCHED_DIR}/probe-{secrets.token_hex(4)}"
        # Whole seconds (the API truncates sinceTime), one back: nothing of ours is missed.
        since = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        fimd = self.system.fimd_pod(node)
        started = time.monotonic()
        self.kube.exec(self.namespace, target, f"touch {path}")
        first_all: float | None = None
        counts: Counter[str] = Counter()
        size = 0
        while True:
            counts, size = self._lines_for(fimd, since, target, path)
            elapsed = time.monotonic() - started
            if first_all is None and set(self.qualified) <= set(counts):
                first_all = elapsed
            if first_all is not None and elapsed >= first_all + settle:
                break
            if first_all is None and elapsed > timeout:
                break
            time.sleep(0.2)
        return FanOut(target, path, dict(counts), first_all, size)

    def _lines_for(self, fimd: str, since: str, target: str, path: str) -> tuple[Counter[str], int]:
        out = self.kube.logs(SYSTEM_NAMESPACE, fimd, f"--since-time={since}")
        counts: Counter[str] = Counter()
        for raw in out.splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(line, dict)
                and line.get("kind") == "event"
                and line.get("namespace") == self.namespace
                and line.get("pod") == target
                and line.get("path") == path
            ):
                counts[str(line.get("watcher"))] += 1
        return counts, len(out)
