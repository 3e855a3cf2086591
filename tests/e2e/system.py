"""fim-k8s as deployed in a cluster: deploying it, finding its pods, reading its event lines.

The service images reach a cluster through a registry, by digest: `push_service_images`
pushes the Bazel-built OCI layouts (`images.push`), and `FimSystem.deploy` applies the overlay
wrapped in a generated kustomization that pins those digests (never committed: they change
with every code change).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from images.push import Pushed, pin, push_all
from tests.e2e.kube import Kube, KubectlError, wait_for

REPO = Path(__file__).resolve().parents[2]
SYSTEM_NAMESPACE = "fim-system"
FIMD_LABEL = "app.kubernetes.io/name=fimd"
CONTROLLER_LABEL = "app.kubernetes.io/name=fim-controller"


def artifact(relative: str) -> Path:
    """A Bazel-built file: from this test's runfiles under Bazel, else from bazel-bin."""
    candidates = []
    if "TEST_SRCDIR" in os.environ:
        workspace = os.environ.get("TEST_WORKSPACE", "fim_k8s")
        candidates.append(Path(os.environ["TEST_SRCDIR"]) / workspace / relative)
    candidates.append(REPO / "bazel-bin" / relative)
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{relative} not found in {', '.join(map(str, candidates))}: "
        "`bazel build //images:controller //images:fimd` makes it"
    )


def overlay_dir() -> Path:
    """The kustomize overlay to deploy: FIM_E2E_OVERLAY (absolute, or relative to the
    repository), default deploy/overlays/standard."""
    name = os.environ.get("FIM_E2E_OVERLAY", "deploy/overlays/standard")
    if Path(name).is_absolute():
        return Path(name)
    for root in [Path(os.environ.get("TEST_SRCDIR", "")) / "fim_k8s", REPO]:
        if (root / name / "kustomization.yaml").exists():
            return root / name
    raise FileNotFoundError(f"overlay {name} not found")


def images_dir() -> Path:
    """Where Bazel put the service images (`<name>.oci`, `<name>.digest`)."""
    return artifact("images/controller.digest").parent


def push_service_images(registry: str) -> list[Pushed]:
    """Pushes controller and fimd to REGISTRY/fim-k8s/<name> by their built digests."""
    return push_all(registry, images_dir())


def deployable(overlay: Path, scratch: Path, images: Sequence[Pushed], kubectl: Path) -> Path:
    """The directory to `kubectl apply -k`: the overlay as real files, and with pushed
    images a kustomization around it pinning them by digest (images.push.pin)."""
    tree = materialized(overlay, scratch)
    if not images:
        return tree
    return pin(tree, scratch / "pinned", list(images), str(kubectl))


def materialized(overlay: Path, scratch: Path) -> Path:
    """The overlay as real files: kustomize does not load the symlinks Bazel runfiles are
    made of, so a symlinked overlay is applied from a copy of its deploy tree (the overlay
    and the bases it refers to, which sit two levels up)."""
    if not (overlay / "kustomization.yaml").is_symlink():
        return overlay
    root = overlay.parents[1]
    copy = scratch / root.name
    shutil.copytree(root, copy)  # symlinks=False: copies what they point to
    return copy / overlay.relative_to(root)


@dataclass(frozen=True)
class FimSystem:
    """The deployed controller and fimd DaemonSet, seen through kubectl. With `images`
    (pushed to a registry), the overlay is deployed pinned to their digests."""

    kube: Kube
    images: tuple[Pushed, ...] = ()

    def deploy(self, overlay: Path, timeout: float = 180.0) -> None:
        """`kubectl apply -k overlay` (real kustomize), then waits for fimd and controller."""
        with tempfile.TemporaryDirectory() as scratch:
            tree = deployable(overlay, Path(scratch), self.images, self.kube.kubectl)
            self.kube.run("apply", "-k", str(tree), timeout=timeout)
        try:
            self.wait_ready(timeout)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.diagnostics()}") from error

    def diagnostics(self) -> str:
        """Pods, recent events and failing containers' logs of fim-system, for failures."""
        parts = [self.kube.run("get", "pods", "-o", "wide", f"--namespace={SYSTEM_NAMESPACE}")]
        parts.append(
            self.kube.run("get", "events", "--sort-by=.lastTimestamp", f"-n={SYSTEM_NAMESPACE}")
        )
        for pod in self.pods("app.kubernetes.io/part-of=fim-k8s"):
            for status in pod["status"].get("containerStatuses", []):
                if not status.get("ready"):
                    name = pod["metadata"]["name"]
                    try:
                        tail = self.kube.logs(SYSTEM_NAMESPACE, name, "--tail=20")
                    except KubectlError as error:
                        tail = str(error)
                    parts.append(f"--- {name} ({status.get('state')}):\n{tail}")
        return "\n".join(parts)

    def wait_ready(self, timeout: float = 180.0) -> None:
        wait_for("fimd DaemonSet ready", self._fimd_ready, timeout)
        wait_for("controller Deployment available", self._controller_ready, timeout)

    def _fimd_ready(self) -> bool:
        status = self.kube.get("daemonset", "fimd", SYSTEM_NAMESPACE)["status"]
        want = status.get("desiredNumberScheduled", 0)
        return bool(want) and status.get("numberReady") == want == status.get(
            "updatedNumberScheduled"
        )

    def _controller_ready(self) -> bool:
        status = self.kube.get("deployment", "fim-controller", SYSTEM_NAMESPACE)["status"]
        return bool(status.get("readyReplicas")) and not status.get("unavailableReplicas")

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            "pods", "", SYSTEM_NAMESPACE, f"--selector={selector}"
        )["items"]
        return items

    def fimd_pod(self, node: str) -> str:
        """The name of the running fimd pod on `node`."""

        def probe() -> str | None:
            for pod in self.pods(FIMD_LABEL):
                running = pod["status"].get("phase") == "Running"
                if pod["spec"].get("nodeName") == node and running and _ready(pod):
                    return str(pod["metadata"]["name"])
            return None

        return wait_for(f"a ready fimd pod on {node}", probe, timeout=120)

    def lines(self, node: str) -> list[dict[str, Any]]:
        """Every JSON line the fimd pod on `node` has written (current container)."""
        out = self.kube.logs(SYSTEM_NAMESPACE, self.fimd_pod(node))
        lines = []
        for raw in out.splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines

    def events(self, node: str, namespace: str) -> list[dict[str, Any]]:
        """Event lines (not operational lines) about pods of `namespace`."""
        return [
            line
            for line in self.lines(node)
            if line.get("kind") == "event" and line.get("namespace") == namespace
        ]

    def active_watches(self, node: str, namespace: str) -> int:
        """fimnotify processes fimd runs for pods of `namespace` (watch_added minus removed),
        from fimd's operational lines."""
        count = 0
        for line in self.lines(node):
            if line.get("namespace") != namespace or line.get("kind") != "op":
                continue
            count += {"watch_added": 1, "watch_removed": -1}.get(str(line.get("msg")), 0)
        return count


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ignore_missing(call: Any) -> None:
    try:
        call()
    except KubectlError as error:
        if "NotFound" not in str(error) and "not found" not in str(error):
            raise
