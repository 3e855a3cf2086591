"""Pinned versions, the binary cache and where a cluster keeps its state.

The versions come from `tools/cluster/versions.env`, the same file `tools/cluster/build.sh`
reads, so the harness always looks for exactly the binaries the build script makes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "tools" / "cluster" / "versions.env"
DEFAULT_CACHE = Path("/var/cache/fim-k8s")
# The CLI's cluster lives here; fixtures use their own temporary directories.
DEFAULT_STATE_DIR = Path("/var/lib/fim-k8s-cluster")
KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
    "kube-proxy",
)


# Bazel's strict test environment has no sbin directories on PATH; iptables, ip, runc live
# there. Components and host tools are always run with this PATH.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def system_tool(name: str) -> str:
    """The absolute path of a host tool (iptables, ip, ctr, ...), or a clear error."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} not found on {SYSTEM_PATH}: run tools/setup.sh")
    return found


class BinariesMissingError(RuntimeError):
    """The pinned binaries are not in the cache: the fix is to run the build script."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parses the KEY=VALUE lines of versions.env (comments and blanks ignored)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the pinned upstream binaries in the cache."""

    kubernetes_version: str
    etcd_version: str
    cri_tools_version: str
    registry_version: str
    otelcol_version: str
    cache: Path

    @classmethod
    def from_env(cls) -> Binaries:
        versions = read_versions()
        cache = Path(os.environ.get("FIM_CACHE") or DEFAULT_CACHE)
        return cls(
            versions["KUBERNETES_VERSION"],
            versions["ETCD_VERSION"],
            versions["CRI_TOOLS_VERSION"],
            versions["REGISTRY_VERSION"],
            versions["OTELCOL_CONTRIB_VERSION"],
            cache,
        )

    @property
    def kube_bin(self) -> Path:
        return self.cache / f"k8s-{self.kubernetes_version}" / "bin"

    @property
    def etcd(self) -> Path:
        return self.cache / f"etcd-{self.etcd_version}" / "bin" / "etcd"

    @property
    def crictl(self) -> Path:
        return self.cache / f"cri-tools-{self.cri_tools_version}" / "bin" / "crictl"

    @property
    def registry(self) -> Path:
        """The CNCF distribution registry (`registry serve CONFIG`)."""
        return self.cache / f"registry-{self.registry_version}" / "bin" / "registry"

    @property
    def otelcol(self) -> Path:
        """The OpenTelemetry Collector of deploy/logging/otel (`build.sh otelcol`)."""
        return self.cache / f"otelcol-{self.otelcol_version}" / "bin" / "otelcol-fim"

    @property
    def images(self) -> Path:
        """Where `python -m images.build` writes the image archives."""
        return self.cache / "images"

    def kube(self, name: str) -> Path:
        return self.kube_bin / name

    def require(self, *names: str) -> None:
        """Raises BinariesMissingError naming every missing binary and how to build it."""
        special = {
            "etcd": self.etcd,
            "crictl": self.crictl,
            "registry": self.registry,
            "otelcol": self.otelcol,
        }
        paths = [special.get(name) or self.kube(name) for name in names]
        missing = [str(path) for path in paths if not os.access(path, os.X_OK)]
        if missing:
            raise BinariesMissingError(
                "cluster binaries missing: "
                + ", ".join(missing)
                + f" -- build them with `bash tools/cluster/build.sh` (FIM_CACHE={self.cache})"
            )
