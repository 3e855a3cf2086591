"""What a node changes on the host, recorded before it starts and undone after it stops.

The kubelet and containerd mount (pod volumes, rootfs, shm), create network namespaces and
cgroups, set sysctls and create directories. `HostSnapshot.take()` records the host before;
`restore()` afterwards unmounts what appeared below the cluster's directories (deepest
first), deletes network namespaces and links that appeared, removes the kubepods cgroups in
every hierarchy bottom-up, puts sysctls back and removes directories that did not exist.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.config import system_tool
from tests.cluster.netguard import remove_cgroup

# Set by the kubelet at start (machine facts); restored on teardown.
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
# Created by the kubelet, containerd or CNI if missing (and /var/log/fim-otel by the hostPath
# of deploy/logging/otel's collector); removed on teardown if they were.
HOST_DIRS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/var/log/fim-otel",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def mount_points() -> list[str]:
    """Current mount points of this mount namespace (octal escapes decoded)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.append(raw.encode().decode("unicode_escape"))
    return points


def netns_names() -> list[str]:
    out = subprocess.run(
        [system_tool("ip"), "netns", "list"], capture_output=True, text=True, check=False
    )
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def link_names() -> list[str]:
    return sorted(path.name for path in Path("/sys/class/net").iterdir())


@dataclass
class HostSnapshot:
    """The host as it was before a node started."""

    sysctls: dict[str, str] = field(default_factory=dict)
    existing_dirs: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    kubepods_existing: list[str] = field(default_factory=list)  # hierarchies that had one

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(
            sysctls={name: _sysctl_path(name).read_text().strip() for name in SYSCTLS},
            existing_dirs=[path for path in HOST_DIRS if Path(path).exists()],
            mounts=mount_points(),
            netns=netns_names(),
            links=link_names(),
            kubepods_existing=[str(path) for path in _kubepods_cgroups()],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostSnapshot:
        return cls(**data)

    def restore(self, owned_dirs: list[Path]) -> list[str]:
        """Undoes the node's changes; returns what could not be undone (empty when clean)."""
        problems = self._unmount(owned_dirs)
        problems += self._delete_netns_and_links()
        problems += _remove_kubepods_cgroups(keep=set(self.kubepods_existing))
        for name, value in self.sysctls.items():
            _sysctl_path(name).write_text(value)
        problems += self._remove_dirs()
        return problems

    def _unmount(self, owned_dirs: list[Path]) -> list[str]:
        """Unmounts every new mount below owned dirs or a HOST_DIR, deepest first."""
        roots = [str(path) for path in owned_dirs] + list(HOST_DIRS)
        return HostSnapshot.unmount_below(roots, keep=set(self.mounts))

    @staticmethod
    def unmount_below(roots: list[Path] | list[str], keep: set[str] | None = None) -> list[str]:
        """Unmounts mounts at or below any of roots (except those in keep), deepest first;
        returns the ones that failed."""
        prefixes = [str(root) for root in roots]
        new = [
            point
            for point in mount_points()
            if point not in (keep or set())
            and any(point == r or point.startswith(r + "/") for r in prefixes)
        ]
        problems = []
        for point in sorted(set(new), key=lambda p: p.count("/"), reverse=True):
            done = subprocess.run([system_tool("umount"), point], capture_output=True, check=False)
            if done.returncode != 0:
                lazy = subprocess.run(
                    [system_tool("umount"), "-l", point], capture_output=True, check=False
                )
                if lazy.returncode != 0:
                    problems.append(f"umount {point}: {lazy.stderr.decode().strip()}")
        return problems

    def _delete_netns_and_links(self) -> list[str]:
        problems = []
        for name in set(netns_names()) - set(self.netns):
            done = subprocess.run(
                [system_tool("ip"), "netns", "delete", name], capture_output=True, check=False
            )
            if done.returncode != 0:
                problems.append(f"ip netns delete {name}: {done.stderr.decode().strip()}")
        for name in set(link_names()) - set(self.links):
            subprocess.run(
                [system_tool("ip"), "link", "delete", name], capture_output=True, check=False
            )
        problems += [f"link {name} left" for name in set(link_names()) - set(self.links)]
        return problems

    def _remove_dirs(self) -> list[str]:
        problems = []
        for path in HOST_DIRS:
            if path in self.existing_dirs or not Path(path).exists() or Path(path).is_symlink():
                continue
            done = subprocess.run(
                [system_tool("rm"), "-rf", "--one-file-system", path], check=False
            )
            if done.returncode != 0:
                problems.append(f"could not remove {path}")
        return problems


def _kubepods_cgroups() -> list[Path]:
    """The kubepods cgroup of every hierarchy that has one."""
    return sorted(path for path in CGROUP_ROOT.glob(f"*/{KUBEPODS}") if path.is_dir())


def _remove_kubepods_cgroups(keep: set[str]) -> list[str]:
    """Removes the kubepods cgroups the node created (other tests on this machine make their
    own in some hierarchies: those are left alone)."""
    problems = []
    for path in _kubepods_cgroups():
        if str(path) in keep:
            continue
        try:
            remove_cgroup(path)
        except OSError as error:
            problems.append(f"cgroup {path}: {error}")
    return problems


def fingerprint() -> dict[str, object]:
    """What a test compares before and after a cluster's life to prove the host is restored.

    Network guards (FIMK8S-* chains, fim-k8s-* cgroups) are left out: other clusters on the
    machine (another test session's control plane) come and go meanwhile; a test checks its
    own guard's removal by name."""
    iptables = [_rules_without_guards(tool) for tool in ("iptables", "ip6tables")]
    routes = subprocess.run(
        [system_tool("ip"), "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        "mounts": sorted(mount_points()),
        "netns": sorted(netns_names()),
        "links": link_names(),
        "iptables": iptables,
        "routes": sorted(routes.splitlines()),
        "sysctls": {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS},
        "dirs": [path for path in HOST_DIRS if Path(path).exists()],
        "cgroups": [str(path) for path in _kubepods_cgroups()],
    }


def _rules_without_guards(tool: str) -> list[str]:
    listing = subprocess.run([system_tool(tool), "-S"], capture_output=True, text=True, check=False)
    return [line for line in listing.stdout.splitlines() if "FIMK8S-" not in line]
