"""What a node changes on the host, recorded before it starts and undone after it stops.

The kubelet and containerd mount (pod volumes, rootfs, shm), create network namespaces and
cgroups, set sysctls and create directories; the harness makes a bridge with an address;
the CNI bridge plugin turns on IP forwarding; kube-proxy writes iptables rules and chains
(its sysctls are configured away, and recorded here anyway). `HostSnapshot.take()` records
the host before; `restore()` afterwards unmounts what appeared below the cluster's
directories (deepest first), deletes network namespaces and links that appeared, removes the
kubepods cgroups in every hierarchy bottom-up, puts sysctls back, removes directories that
did not exist, and compares every iptables/ip6tables table with the record: kube-proxy's own
`--cleanup` runs first (see node.py); a `KUBE-` rule or chain still there is removed
(kube-proxy also writes the kubelet's `KUBE-FIREWALL` chain, jumped to from INPUT and OUTPUT,
and its cleanup leaves that one by design), any other difference is reported. Empty
iptables-nft tables that appeared (kube-proxy creates `nat` and `mangle` if the host had
none) are deleted.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.config import system_tool
from tests.cluster.netguard import remove_cgroup

# Set by the kubelet at start (machine facts), by the CNI bridge plugin (ip_forward, with
# isGateway), or by kube-proxy unless configured not to (route_localnet, conntrack sizing and
# timeouts: node.py's configuration leaves them alone, recorded to prove it); restored on
# teardown. Those the kernel does not have are skipped.
SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
IPTABLES_TOOLS = ("iptables", "ip6tables")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
# iptables-nft tables kube-proxy may create; deleted on teardown if new and empty. (`filter`
# is left alone: the network guards of other clusters on this machine live there.)
NFT_TABLES = ("ip nat", "ip6 nat", "ip mangle", "ip6 mangle")
# Created by the kubelet, containerd or CNI if missing (and /var/log/fim-otel by the hostPath
# of deploy/logging/otel's collector, /var/lib/fim-k8s by fimd's baselines hostPath);
# removed on teardown if they were.
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
    "/var/lib/fim-k8s",
)
_TOOL = {"ip": "iptables", "ip6": "ip6tables"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def sysctl_values() -> dict[str, str]:
    """The SYSCTLS this kernel has, with their values."""
    paths = {name: _sysctl_path(name) for name in SYSCTLS}
    return {name: path.read_text().strip() for name, path in paths.items() if path.exists()}


def iptables_rules() -> dict[str, list[str]]:
    """`<tool> -t <table> -S` of every tool and table, without network guard lines (other
    clusters' guards come and go meanwhile), keyed `tool/table`."""
    rules = {}
    for tool in IPTABLES_TOOLS:
        for table in IPTABLES_TABLES:
            listing = subprocess.run(
                [system_tool(tool), "-w", "-t", table, "-S"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            rules[f"{tool}/{table}"] = [
                line for line in listing.stdout.splitlines() if "FIMK8S-" not in line
            ]
    return rules


def nft_tables() -> list[str]:
    """The nftables tables (`family name`) among NFT_TABLES that exist."""
    listing = subprocess.run(
        [system_tool("nft"), "list", "tables"], capture_output=True, text=True, check=False
    )
    present = {line.removeprefix("table ").strip() for line in listing.stdout.splitlines()}
    return sorted(present & set(NFT_TABLES))


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
    iptables: dict[str, list[str]] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(
            sysctls=sysctl_values(),
            existing_dirs=[path for path in HOST_DIRS if Path(path).exists()],
            mounts=mount_points(),
            netns=netns_names(),
            links=link_names(),
            kubepods_existing=[str(path) for path in _kubepods_cgroups()],
            iptables=iptables_rules(),
            nft_tables=nft_tables(),
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
            if sysctl_values().get(name) != value:
                _sysctl_path(name).write_text(value)
        problems += self._remove_dirs()
        problems += self._restore_iptables()
        return problems

    def _restore_iptables(self) -> list[str]:
        """Compares every table with the record (after kube-proxy's own cleanup): `KUBE-`
        rules and chains still there are removed (and named on stdout), new empty
        iptables-nft tables deleted; returns whatever still differs."""
        for key, new in self._new_iptables_lines().items():
            tool, table = key.split("/")
            print(f"[cluster] removing leftover {tool} -t {table} lines: {new}")
            for line in new:  # rules first (jumps into the chains), then the chains
                if line.startswith("-A ") and "KUBE-" in line:
                    _iptables(tool, table, "-D", *shlex.split(line)[1:])
            for line in new:
                if line.startswith("-N KUBE-"):
                    _iptables(tool, table, "-F", line.split()[1])
                    _iptables(tool, table, "-X", line.split()[1])
        now = iptables_rules()
        for table in set(nft_tables()) - set(self.nft_tables):
            family, name = table.split()
            if all(line.startswith("-P ") for line in now[f"{_TOOL[family]}/{name}"]):
                subprocess.run(
                    [system_tool("nft"), "delete", "table", family, name],
                    capture_output=True, check=False,
                )  # fmt: skip
        problems = [f"{key}: left: {new}" for key, new in self._new_iptables_lines().items()]
        for key, lines in iptables_rules().items():
            gone = [line for line in self.iptables.get(key, []) if line not in set(lines)]
            if gone:
                problems.append(f"{key}: missing: {gone}")
        problems += [f"nft table {t} left" for t in set(nft_tables()) - set(self.nft_tables)]
        return problems

    def _new_iptables_lines(self) -> dict[str, list[str]]:
        """`tool/table` -> lines that are not in the record (guards excluded)."""
        differences = {}
        for key, lines in iptables_rules().items():
            before = set(self.iptables.get(key, lines))
            new = [line for line in lines if line not in before]
            if new:
                differences[key] = new
        return differences

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


def _iptables(tool: str, table: str, *args: str) -> None:
    subprocess.run([system_tool(tool), "-w", "-t", table, *args], capture_output=True, check=False)


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
    own guard's removal by name. iptables: every table of both tools (kube-proxy's rules
    live in nat and filter), and the iptables-nft tables kube-proxy may create."""
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
        "iptables": iptables_rules(),
        "nft_tables": nft_tables(),
        "routes": sorted(routes.splitlines()),
        "sysctls": sysctl_values(),
        "dirs": [path for path in HOST_DIRS if Path(path).exists()],
        "cgroups": [str(path) for path in _kubepods_cgroups()],
    }
