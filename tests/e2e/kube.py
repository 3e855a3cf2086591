"""A small typed wrapper around the pinned kubectl, for end-to-end tests.

kubectl (not a client library) on purpose: the tests drive the cluster the way a user does
(`apply`, `exec`, `logs`, `delete`), and the same calls work against any kubeconfig.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


@dataclass(frozen=True)
class Kube:
    """kubectl bound to one kubeconfig."""

    kubectl: Path
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        argv = [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": list(objects)}))  # fmt: skip

    def get(self, kind: str, name: str = "", namespace: str = "", *args: str) -> dict[str, Any]:
        target = [kind, name] if name else [kind]
        ns = [f"--namespace={namespace}"] if namespace else []
        result: dict[str, Any] = json.loads(self.run("get", *target, *ns, *args, "-o", "json"))
        return result

    def exists(self, kind: str, name: str, namespace: str = "") -> bool:
        try:
            self.get(kind, name, namespace)
        except KubectlError as error:
            if "NotFound" in str(error) or "not found" in str(error):
                return False
            raise
        return True

    def exec(self, namespace: str, pod: str, script: str, container: str = "") -> str:
        which = [f"--container={container}"] if container else []
        return self.run("exec", f"--namespace={namespace}", pod, *which, "--", "sh", "-c", script)

    def logs(self, namespace: str, pod: str, *args: str) -> str:
        return self.run("logs", f"--namespace={namespace}", pod, *args)


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2
) -> T:
    """Polls probe until it returns something truthy; raises TimeoutError naming `what`
    and the last error probe raised, if any."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except (KubectlError, KeyError, IndexError) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s (last error: {last_error})")
        time.sleep(interval)
