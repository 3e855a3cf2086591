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
# Created by the kubelet, containerd or CNI if missing; removed on teardown if they were.
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
    kubepods_existed: bool = False

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(
            sysctls={name: _sysctl_path(name).read_text().strip() for name in SYSCTLS},
            existing_dirs=[path for path in HOST_DIRS if Path(path).exists()],
            mounts=mount_points(),
            netns=netns_names(),
            links=link_names(),
            kubepods_existed=(CGROUP_ROOT / "memory" / KUBEPODS).exists(),
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
        if not self.kubepods_existed:
            problems += _remove_kubepods_cgroups()
        for name, value in self.sysctls.items():
            _sysctl_path(name).write_text(value)
        problems += self._remove_dirs()
        return problems

    def _unmount(self, owned_dirs: list[Path]) -> list[str]:
        """Unmounts every new mount below owned dirs or a HOST_DIR, deepest first."""
        roots = [str(path) for path in owned_dirs] + list(HOST_DIRS)
        before = set(self.mounts)
        new = [
            point
            for point in mount_points()
            if point not in before and any(point == r or point.startswith(r + "/") for r in roots)
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


def _remove_kubepods_cgroups() -> list[str]:
    problems = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        try:
            remove_cgroup(hierarchy / KUBEPODS)
        except OSError as error:
            problems.append(f"cgroup {hierarchy / KUBEPODS}: {error}")
    return problems
