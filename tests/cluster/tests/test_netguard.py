"""The network guard stops and counts packets of guarded processes that would leave through
an interface other than loopback, and leaves unguarded processes alone; with a bridge, it
stops and counts what a pod on it would have forwarded elsewhere, and drops what would be
forwarded into it.

"Off the machine" is simulated with a network namespace of this test's own, reached over a
veth pair: the guarded process's packets would leave through the veth, never further.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


# A "pod" of this test's own: a network namespace on a bridge whose address is its default
# route, as the local cluster's pods are (tests/cluster/node.py), with IP forwarding on.
BRIDGE = "fimk8sgtb"
POD_NS = "fimk8s-gtpod"
POD_IP = "10.254.253.2"
RECEIVE = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 9))\n"
    "s.settimeout(float(sys.argv[1]))\n"
    "try:\n"
    "    print(s.recvfrom(100)[0].decode())\n"
    "except TimeoutError:\n"
    "    print('nothing')\n"
)
SEND_TO = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.sendto(sys.argv[2].encode(), (sys.argv[1], 9))\n"
)
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@pytest.fixture
def pod_namespace(peer_namespace: None) -> Iterator[None]:
    """The pod namespace on BRIDGE (10.254.253.0/24, gateway .1) and forwarding between it
    and the peer namespace (whose route back goes through this machine); all undone."""
    forward = IP_FORWARD.read_text()
    _ip("netns", "add", POD_NS)
    try:
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", "10.254.253.1/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        _ip("link", "add", "fimk8sgtp0", "type", "veth", "peer", "name", "fimk8sgtp1")
        _ip("link", "set", "fimk8sgtp0", "master", BRIDGE)
        _ip("link", "set", "fimk8sgtp0", "up")
        _ip("link", "set", "fimk8sgtp1", "netns", POD_NS)
        _ip("-n", POD_NS, "addr", "add", f"{POD_IP}/24", "dev", "fimk8sgtp1")
        _ip("-n", POD_NS, "link", "set", "fimk8sgtp1", "up")
        _ip("-n", POD_NS, "route", "add", "default", "via", "10.254.253.1")
        _ip("-n", "fimk8s-guardtest", "route", "add", "10.254.253.0/24", "via", "10.254.254.1")
        IP_FORWARD.write_text("1")
        yield
    finally:
        IP_FORWARD.write_text(forward)
        subprocess.run(["/usr/sbin/ip", "link", "del", "fimk8sgtp0"], check=False)
        subprocess.run(["/usr/sbin/ip", "link", "del", BRIDGE], check=False)
        _ip("netns", "delete", POD_NS)


def _exchange(sender_ns: str, receiver_ns: str, address: str, timeout: float = 2.0) -> str:
    """Sends one datagram from a namespace to `address`, port 9; what the receiving
    namespace got ("nothing" after `timeout` s)."""
    receiver = subprocess.Popen(
        ["/usr/sbin/ip", "netns", "exec", receiver_ns, sys.executable, "-c", RECEIVE,
         str(timeout)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)  # bound before the datagram arrives
    subprocess.run(
        ["/usr/sbin/ip", "netns", "exec", sender_ns, sys.executable, "-c", SEND_TO, address,
         "hello"],
        check=True,
    )  # fmt: skip
    out, _ = receiver.communicate(timeout=timeout + 10)
    return out.strip()


@pytest.mark.usefixtures("pod_namespace")
def test_pod_traffic_forwarded_off_the_bridge_is_dropped_and_counted() -> None:
    """A pod with a default route via the bridge reaches a peer beyond this machine's other
    interface when nothing guards the bridge; with the guard, the packet is dropped in
    FORWARD and counted, and nothing forwarded from elsewhere reaches the pod."""
    assert _exchange(POD_NS, "fimk8s-guardtest", PEER) == "hello"  # the path is real
    assert _exchange("fimk8s-guardtest", POD_NS, POD_IP) == "hello"
    guard = NetworkGuard("guardfwd", bridge=BRIDGE)
    guard.install()
    try:
        assert _exchange(POD_NS, "fimk8s-guardtest", PEER) == "nothing"
        assert guard.dropped() == 1
        assert _exchange("fimk8s-guardtest", POD_NS, POD_IP) == "nothing"  # inbound: dropped
        assert guard.dropped() == 1  # not counted: it is not a component reaching out
    finally:
        guard.uninstall()
    rules = subprocess.run(
        ["/usr/sbin/iptables", "-S"], capture_output=True, text=True, check=True
    ).stdout
    assert guard.chain not in rules
