"""Helpers for controller tests against a real kube-apiserver (tests/cluster harness).

There is no kubelet and no controller-manager: tests create pods and set their status
through the status subresource as an admin, exactly what a kubelet would report (phase
Running, node, IPs, containerStatuses with containerIDs); fimd pods point at fake fimd
servers on 127.0.0.1. The controller runs as a subprocess (`python -m services.controller`)
authenticated with a real ServiceAccount token, so it has exactly the RBAC of deploy/base.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

from services.controller.kube import ApiError, JsonObject, Kube

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy" / "base"
SYSTEM = "fim-system"
SERVICE_ACCOUNT = "fim-controller"
FIMD_PORT_NAME = "grpc"
WATCHERS = "/apis/fim-k8s.io/v1alpha1"
MERGE_PATCH = "application/merge-patch+json"

_T = TypeVar("_T")

# Where each manifest kind is created (cluster-scoped kinds ignore the namespace).
_KIND_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def eventually(check: Callable[[], _T | None], timeout: float = 20.0, what: str = "") -> _T:
    """Polls `check` until it returns a truthy value; fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not converged after {timeout} s: {what}")
        time.sleep(0.1)


def create(kube: Kube, obj: JsonObject) -> JsonObject:
    """Creates a manifest object; an existing one is left as it is."""
    namespace = obj["metadata"].get("namespace", "")
    path = _KIND_PATHS[obj["kind"]].format(ns=namespace)
    try:
        return kube.request("POST", path, body=obj)
    except ApiError as err:
        if err.status != 409:
            raise
        return kube.request("GET", f"{path}/{obj['metadata']['name']}")


def apply_files(kube: Kube, names: Iterable[str]) -> None:
    """Creates every object of deploy/base/<name>; waits for CRDs to be established."""
    for name in names:
        for obj in yaml.safe_load_all((DEPLOY / name).read_text()):
            create(kube, obj)
            if obj["kind"] == "CustomResourceDefinition":
                path = f"{_KIND_PATHS[obj['kind']]}/{obj['metadata']['name']}"
                eventually(partial(_established, kube, path), what=f"CRD {path} established")


def _established(kube: Kube, path: str) -> bool:
    conditions = kube.request("GET", path).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def namespace(kube: Kube, name: str) -> None:
    """A namespace with its `default` ServiceAccount (no controller-manager creates it)."""
    create(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name},
        },
    )


def container_id(n: int) -> str:
    return f"containerd://{n:064x}"


def create_pod(
    kube: Kube,
    ns: str,
    name: str,
    *,
    node: str,
    labels: dict[str, str],
    containers: dict[str, int],
    ports: dict[str, int] | None = None,
) -> JsonObject:
    """A pod as a kubelet would show it once every container runs (ids from `containers`)."""
    spec_containers: list[JsonObject] = [
        {"name": c, "image": "registry.invalid/none:1"} for c in containers
    ]
    spec_containers[0]["ports"] = [
        {"name": port_name, "containerPort": port} for port_name, port in (ports or {}).items()
    ]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": spec_containers,
        },
    }
    created = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)
    set_running(kube, ns, name, containers)
    return created


def set_running(kube: Kube, ns: str, name: str, containers: dict[str, int]) -> None:
    """Reports the pod Running with these container IDs (what the kubelet does)."""
    statuses = [
        {
            "name": c,
            "containerID": container_id(n),
            "image": "registry.invalid/none:1",
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2030-01-01T00:00:00Z"}},
        }
        for c, n in containers.items()
    ]
    status = {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "hostIP": "127.0.0.1",
        "containerStatuses": statuses,
    }
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{name}/status",
        body={"status": status},
        content_type=MERGE_PATCH,
    )


def pod_uid(kube: Kube, ns: str, name: str) -> str:
    return str(kube.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")["metadata"]["uid"])


def delete(kube: Kube, path: str) -> None:
    try:
        kube.request("DELETE", path)
    except ApiError as err:
        if err.status != 404:
            raise


def fimwatcher(
    ns: str, name: str, labels: dict[str, str], paths: list[str], **extra: Any
) -> JsonObject:
    return {
        "apiVersion": "fim-k8s.io/v1alpha1",
        "kind": "FimWatcher",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "subjects": [{"paths": paths, "events": ["modify", "create"]}],
            **extra,
        },
    }


def post_watcher(kube: Kube, ns: str, name: str, spec: JsonObject) -> JsonObject:
    """POSTs a FimWatcher with this spec as it is (the API server's validation decides)."""
    body = {
        "apiVersion": "fim-k8s.io/v1alpha1",
        "kind": "FimWatcher",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    return kube.request("POST", watcher_path(ns), body=body)


def watcher_path(ns: str, name: str = "") -> str:
    return f"{WATCHERS}/namespaces/{ns}/fimwatchers" + (f"/{name}" if name else "")


def get_watcher(kube: Kube, ns: str, name: str) -> JsonObject | None:
    try:
        return kube.request("GET", watcher_path(ns, name))
    except ApiError as err:
        if err.status == 404:
            return None
        raise


def service_account_kubeconfig(kube: Kube, server: str, ca: Path, directory: Path) -> Path:
    """A kubeconfig with a fresh token of the controller's ServiceAccount."""
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{SYSTEM}/serviceaccounts/{SERVICE_ACCOUNT}/token",
        body={"spec": {"audiences": [], "expirationSeconds": 3600}},
    )["status"]["token"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": SERVICE_ACCOUNT}}],
        "current-context": "c",
    }
    path = directory / "controller.kubeconfig"
    path.write_text(json.dumps(config))
    return path


class ControllerProcess:
    """`python -m services.controller` (or `module`) as a child process, logging to a file."""

    def __init__(
        self, kubeconfig: Path, log: Path, *args: str, module: str = "services.controller"
    ) -> None:
        self.log = log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        argv = [sys.executable, "-m", module, f"--kubeconfig={kubeconfig}"]
        with log.open("ab") as out:
            self.process = subprocess.Popen([*argv, *args], env=env, stdout=out, stderr=out)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait: a clean shutdown (releases the lease)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(20)
        return self.process.returncode

    def url(self, path: str) -> str:
        """`path` on the controller's HTTP endpoint (its port is in the "starting" line)."""

        def port() -> int | None:
            for line in self.log_lines():
                if line.get("msg") == "starting":
                    return int(line["http"][1])
            return None

        return f"http://127.0.0.1:{eventually(port, what='controller serving HTTP')}{path}"

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"level": "raw", "msg": raw})
        return lines
