"""fim-k8s runs as on any conformant cluster (deploy/overlays/standard is deploy/base with
image references only): the controller and fimd pods are on the pod network, not the
host's, and the controller reaches the API server through the `kubernetes` Service, which
is what its in-cluster configuration names. fimd never calls the API (no token); the
controller reaches fimd at fimd's pod IP, which the other scenarios exercise."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.kube import Kube, wait_for
from tests.e2e.system import CONTROLLER_LABEL, FIMD_LABEL, SYSTEM_NAMESPACE, FimSystem

# Run inside the controller container (python3, no shell): the API server address its
# in-cluster configuration uses, and the peers of its established TCP connections as the
# pod sees them (a Service's ClusterIP: the node translates it, the socket never knows).
CONNECTIONS = r"""
import json, os, socket, struct
def peers(path, family):
    found = []
    with open(path) as table:
        for line in list(table)[1:]:
            fields = line.split()
            if fields[3] != "01":  # ESTABLISHED
                continue
            raw, port = fields[2].split(":")
            packed = bytes.fromhex(raw)
            if family == socket.AF_INET6:
                packed = b"".join(struct.pack("<I", w) for w in struct.unpack(">4I", packed))
                address = socket.inet_ntop(family, packed)
                address = address.removeprefix("::ffff:")
            else:
                address = socket.inet_ntop(family, packed[::-1])
            found.append([address, int(port, 16)])
    return found
print(json.dumps({
    "host": os.environ.get("KUBERNETES_SERVICE_HOST"),
    "port": os.environ.get("KUBERNETES_SERVICE_PORT"),
    "peers": peers("/proc/net/tcp", socket.AF_INET) + peers("/proc/net/tcp6", socket.AF_INET6),
}))
"""


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_controller_and_fimd_are_on_the_pod_network(system: FimSystem) -> None:
    controllers, fimds = system.pods(CONTROLLER_LABEL), system.pods(FIMD_LABEL)
    assert len(controllers) == 2  # the base's replicas: leader and standby
    assert fimds
    for pod in controllers + fimds:
        assert not pod["spec"].get("hostNetwork"), pod["metadata"]["name"]
        assert pod["status"]["podIP"] != pod["status"]["hostIP"]
        assert _ready(pod), pod["metadata"]["name"]


def test_controller_reaches_the_api_server_through_the_kubernetes_service(
    kube: Kube, system: FimSystem
) -> None:
    service = kube.get("service", "kubernetes", "default")["spec"]
    cluster_ip = service["clusterIP"]
    (port,) = [p["port"] for p in service["ports"] if p["name"] == "https"]
    holder = kube.get("lease", "fim-controller", SYSTEM_NAMESPACE)["spec"]["holderIdentity"]
    names = [pod["metadata"]["name"] for pod in system.pods(CONTROLLER_LABEL)]
    assert holder in names  # the leader renews its Lease through that connection
    for name in names:  # both replicas watch FimWatchers and Pods (the standby's caches)

        def connections(name: str = name) -> dict[str, Any] | None:
            out = kube.run("exec", f"--namespace={SYSTEM_NAMESPACE}", name,
                           "--container=controller", "--", "/usr/bin/python3", "-c",
                           CONNECTIONS)  # fmt: skip
            seen: dict[str, Any] = json.loads(out)
            return seen if [cluster_ip, port] in seen["peers"] else None

        seen = wait_for(f"{name} connected to {cluster_ip}:{port}", connections, timeout=30)
        assert (seen["host"], seen["port"]) == (cluster_ip, str(port))
