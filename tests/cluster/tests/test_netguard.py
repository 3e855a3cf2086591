"""The network guard stops and counts packets of guarded processes that would leave through
an interface other than loopback, and leaves unguarded processes alone.

"Off the machine" is simulated with a network namespace of this test's own, reached over a
veth pair: the guarded process's packets would leave through the veth, never further.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.netguard import NetworkGuard, NetworkGuardError
from tests.cluster.processes import start

PEER = "10.254.254.2"  # inside this test's own network namespace
SEND = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "try:\n"
    f"    s.sendto(b'x', ('{PEER}', 9))\n"
    "    print('sent')\n"
    "except OSError as e:\n"
    "    print('blocked', e.errno)\n"
)


NETNS_DIR = "/run/netns"


def _ip(*args: str) -> None:
    subprocess.run(["/usr/sbin/ip", *args], check=True, capture_output=True)


def _mounted(path: str) -> bool:
    # os.path.ismount cannot see a bind mount of a directory onto itself.
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == path for line in mounts)


def _restore_netns_dir() -> None:
    """Undoes what `ip netns add` leaves behind: /run/netns bind-mounted onto itself."""
    while _mounted(NETNS_DIR):
        subprocess.run(["/usr/bin/umount", "--lazy", NETNS_DIR], check=True)
    if not os.listdir(NETNS_DIR):
        os.rmdir(NETNS_DIR)


@pytest.fixture
def peer_namespace() -> Iterator[None]:
    existed = os.path.exists(NETNS_DIR)
    _ip("netns", "add", "fimk8s-guardtest")
    try:
        _ip("link", "add", "fimk8sgt0", "type", "veth", "peer", "name", "fimk8sgt1")
        _ip("link", "set", "fimk8sgt1", "netns", "fimk8s-guardtest")
        _ip("addr", "add", "10.254.254.1/30", "dev", "fimk8sgt0")
        _ip("link", "set", "fimk8sgt0", "up")
        _ip("-n", "fimk8s-guardtest", "addr", "add", f"{PEER}/30", "dev", "fimk8sgt1")
        _ip("-n", "fimk8s-guardtest", "link", "set", "fimk8sgt1", "up")
        yield
    finally:
        subprocess.run(["/usr/sbin/ip", "link", "del", "fimk8sgt0"], check=False)
        _ip("netns", "delete", "fimk8s-guardtest")
        if not existed:
            _restore_netns_dir()


def _send(guard: NetworkGuard | None, log: Path) -> str:
    if guard is None:
        return subprocess.run(
            [sys.executable, "-c", SEND], capture_output=True, text=True, check=True
        ).stdout
    proc, _ = start("send", [sys.executable, "-c", SEND], log, cgroup_procs=guard.cgroup_procs)
    proc.wait(timeout=10)
    return log.read_text()


@pytest.mark.usefixtures("peer_namespace")
def test_guarded_packets_are_dropped_counted_and_reported(tmp_path: Path) -> None:
    guard = NetworkGuard("guardtest")
    guard.install()
    try:
        assert _send(None, tmp_path / "unguarded.log").strip() == "sent"
        assert guard.dropped() == 0
        assert _send(guard, tmp_path / "guarded.log").startswith("blocked")
        assert guard.dropped() == 1
        with pytest.raises(NetworkGuardError, match="1 packet"):
            guard.check()
    finally:
        guard.uninstall()
    assert not guard.cgroup.exists()
    rules = subprocess.run(
        ["/usr/sbin/iptables", "-S"], capture_output=True, text=True, check=True
    ).stdout
    assert guard.chain not in rules
