"""The local cluster's OCI registry: the CNCF distribution registry on 127.0.0.1.

The node starts it (a supervised process like every component: inside the network guard,
stopped by PID) before containerd, and containerd's CRI plugin pulls from it through its
registry host configuration (`config_path`, `certs.d/127.0.0.1:5000/hosts.toml`, plain HTTP:
loopback only). The e2e harness and the demo push the Bazel-built images into it with
`images.push` and deploy them by digest. Its storage lives in the cache
(`$FIM_CACHE/registry-data`), like containerd's content store: a warm bring-up uploads no
blob it already holds.

The port is fixed (5000): an image reference `127.0.0.1:5000/fim-k8s/fimd@sha256:...` then
names the same image in every run, and containerd's persistent store keeps one name per image.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.cluster.config import Binaries
from tests.cluster.controlplane import LOOPBACK
from tests.cluster.supervisor import Supervisor, log_tail

REGISTRY_PORT = 5000
REGISTRY = f"{LOOPBACK}:{REGISTRY_PORT}"


def config(storage: Path, address: str) -> str:
    """A minimal registry configuration: filesystem storage, HTTP on `address`, no debug
    server, no auth (loopback only), deletes off."""
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {address}
  headers:
    X-Content-Type-Options: [nosniff]
"""


# The registry initialises OpenTelemetry tracing; nothing is exported from a test cluster.
ENVIRONMENT = {"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}


def serving(address: str) -> bool:
    """True when the registry answers the distribution API's version check (GET /v2/)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class Registry:
    """The registry of the cluster in `supervisor.state_dir`."""

    def __init__(self, supervisor: Supervisor, binaries: Binaries) -> None:
        self.supervisor = supervisor
        self.binaries = binaries
        self.storage = binaries.cache / "registry-data"
        self.address = REGISTRY

    @property
    def hosts_dir(self) -> Path:
        """containerd's registry host configuration directory (`config_path`)."""
        return self.supervisor.state_dir / "certs.d"

    def start(self, timeout: float) -> None:
        """Starts the registry and waits until it serves; writes the hosts.toml containerd
        reads for it."""
        self.binaries.require("registry")
        self.storage.mkdir(parents=True, exist_ok=True)
        path = self.supervisor.state_dir / "registry.yml"
        path.write_text(config(self.storage, self.address))
        self.supervisor.start(
            "registry", [str(self.binaries.registry), "serve", str(path)], env=ENVIRONMENT
        )
        self._write_hosts()
        deadline = time.monotonic() + timeout
        while not serving(self.address):
            self.supervisor.ensure_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"registry not serving on {self.address} after {timeout} s:\n"
                    + log_tail(self.supervisor.log_dir / "registry.log")
                )
            time.sleep(0.1)

    def _write_hosts(self) -> None:
        """Plain HTTP, pull and resolve only (a digest is resolved too), for this host."""
        hosts = self.hosts_dir / self.address / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "http://{self.address}"\n\n'
            f'[host."http://{self.address}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
