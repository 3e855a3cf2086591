"""The network guard: proof that no cluster component sent a packet off this machine.

Every component runs in a cgroup of its own in the cgroup2 (unified) hierarchy, which on
this machine's hybrid cgroup layout every process also belongs to. runc puts containers in
the unified `kubepods` cgroup the kubelet manages, so with a node (`bridge` set) that cgroup
is guarded too (created before the kubelet starts, so no pod ever runs unguarded).
iptables/ip6tables rules match sockets by these cgroups (and descendants) with
`-m cgroup --path`: packets
leaving through loopback or the cluster's own bridge pass; anything else is logged, dropped
and counted. Dropping means a component that tries (the kubelet's cloud metadata lookup, a
DNS query, a telemetry call) fails fast instead of hanging; counting means the harness can
fail loudly afterwards (`check()`), naming how many packets were stopped. A FORWARD rule does
the same for pod traffic that would leave the bridge (pods have a default route via the
bridge's address, and the CNI plugin turns on IP forwarding), and another drops whatever
another interface would forward into the bridge (pods are reachable from this machine only).
Measuring eth0 counters instead would be wrong here: other work on the machine legitimately
uses the network.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.config import system_tool

UNIFIED = Path("/sys/fs/cgroup/unified")
_TOOLS = ("iptables", "ip6tables")
POD_CGROUP = "kubepods"  # the kubelet's cgroupfs root for pods


class NetworkGuardError(RuntimeError):
    """A component tried to send traffic off the machine (or the guard can't be set up)."""


@dataclass(frozen=True)
class NetworkGuard:
    """The guard of one cluster; `ident` keeps concurrent clusters' rules apart."""

    ident: str
    bridge: str = ""

    @property
    def cgroup(self) -> Path:
        return UNIFIED / f"fim-k8s-{self.ident}"

    @property
    def cgroup_procs(self) -> Path:
        return self.cgroup / "cgroup.procs"

    @property
    def chain(self) -> str:
        return f"FIMK8S-{self.ident}"[:28]

    @property
    def pod_cgroup(self) -> Path | None:
        """The unified cgroup of the node's pods (only when guarding a node)."""
        return UNIFIED / POD_CGROUP if self.bridge else None

    def _output_rule(self, cgroup: Path | None = None) -> list[str]:
        name = (cgroup or self.cgroup).name
        return ["OUTPUT", "-m", "cgroup", "--path", name, "-j", self.chain]

    def _forward_rule(self) -> list[str]:
        return ["FORWARD", "-i", self.bridge, "!", "-o", self.bridge, "-j", self.chain]

    def _inbound_rule(self) -> list[str]:
        """Nothing from another interface is forwarded to the pods (not counted: it would
        be traffic arriving from elsewhere, not a component reaching out)."""
        return ["FORWARD", "!", "-i", self.bridge, "-o", self.bridge,
                "-m", "comment", "--comment", f"{self.chain} inbound", "-j", "DROP"]  # fmt: skip

    def install(self) -> None:
        """Creates the cgroup and the rules (idempotent)."""
        if not (UNIFIED / "cgroup.procs").exists():
            raise NetworkGuardError(f"no cgroup2 hierarchy at {UNIFIED}: cannot guard")
        self.cgroup.mkdir(exist_ok=True)
        for tool in _TOOLS:
            if _run(tool, "-n", "-L", self.chain, check=False).returncode == 0:
                continue
            _run(tool, "-N", self.chain)
            _run(tool, "-A", self.chain, "-o", "lo", "-j", "RETURN")
            if self.bridge:
                _run(tool, "-A", self.chain, "-o", self.bridge, "-j", "RETURN")
            _run(tool, "-A", self.chain, "-j", "LOG", "--log-prefix", f"{self.chain}: ")
            _run(tool, "-A", self.chain, "-j", "DROP")
            _run(tool, "-I", *self._output_rule())
            if self.pod_cgroup is not None:
                self.pod_cgroup.mkdir(exist_ok=True)
                _run(tool, "-I", *self._output_rule(self.pod_cgroup))
                _run(tool, "-I", *self._forward_rule())
                _run(tool, "-I", *self._inbound_rule())

    def forward_rules_first(self) -> None:
        """Moves the FORWARD rules back to the top of the chain: kube-proxy inserts its own
        jumps (KUBE-FORWARD accepts marked and established traffic) before them."""
        if not self.bridge:
            return
        for tool in _TOOLS:
            for rule in (self._forward_rule(), self._inbound_rule()):
                _run(tool, "-D", *rule, check=False)
                _run(tool, "-I", *rule)

    def dropped(self) -> int:
        """Packets stopped so far (IPv4 + IPv6); 0 if the guard isn't installed."""
        total = 0
        for tool in _TOOLS:
            listing = _run(tool, "-n", "-v", "-x", "-L", self.chain, check=False)
            for line in listing.stdout.splitlines():
                match = re.match(r"\s*(\d+)\s+\d+\s+DROP\b", line)
                if match:
                    total += int(match.group(1))
        return total

    def check(self) -> None:
        """Raises NetworkGuardError if anything was stopped from leaving the machine."""
        self.check_count(self.dropped())

    def check_count(self, dropped: int) -> None:
        """Raises NetworkGuardError if `dropped` (a count read earlier) is not zero."""
        if dropped:
            raise NetworkGuardError(
                f"NETWORK GUARD: cluster components tried to send {dropped} packet(s) off "
                f"this machine (stopped by iptables chain {self.chain}; see `dmesg | grep "
                f"{self.chain}` for destinations)"
            )

    def uninstall(self) -> None:
        """Removes the rules and the (by now empty) cgroup."""
        for tool in _TOOLS:
            _run(tool, "-D", *self._output_rule(), check=False)
            if self.pod_cgroup is not None:
                _run(tool, "-D", *self._output_rule(self.pod_cgroup), check=False)
                _run(tool, "-D", *self._forward_rule(), check=False)
                _run(tool, "-D", *self._inbound_rule(), check=False)
            _run(tool, "-F", self.chain, check=False)
            _run(tool, "-X", self.chain, check=False)
        remove_cgroup(self.cgroup)
        if self.pod_cgroup is not None:
            remove_cgroup(self.pod_cgroup)


def remove_cgroup(path: Path) -> None:
    """Removes a cgroup directory tree bottom-up (cgroup files can't be unlinked, only
    the empty directories removed); retries briefly while exiting tasks leave it."""
    if not path.exists():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        _rmdir_retrying(child)
    _rmdir_retrying(path)


def _rmdir_retrying(path: Path) -> None:

    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    path.rmdir()


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [system_tool(argv[0]), *argv[1:]], check=check, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as error:
        raise NetworkGuardError(f"{' '.join(argv)}: {error.stderr.strip()}") from error
