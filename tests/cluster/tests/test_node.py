"""The full single-node cluster: pods run through containerd + runc + CNI on the pod network,
reach the API server through the `kubernetes` Service (kube-proxy), are reachable from the
host through the bridge, exec and logs work, an image pushed to the cluster's registry is
pulled by digest, and teardown leaves the host exactly as it was (kube-proxy's iptables rules
and the sysctls included)."""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.cluster.cluster import Cluster
from tests.cluster.config import system_tool
from tests.cluster.controlplane import SERVICE_CLUSTER_IP, STANDARD_APISERVER_PORT
from tests.cluster.hoststate import fingerprint
from tests.cluster.node import BRIDGE_ADDRESS, MAX_PODS, NODE_NAME, POD_CIDR

# In the pod: a plain HTTP request to the `kubernetes` Service, as the pod's environment names
# it. Busybox's TLS cannot talk to the API server, but the API server (Go's HTTPS server)
# answers a plaintext request on its TLS port with a fixed 400 text, here through kube-proxy's
# translation of the ClusterIP. (The e2e suite's controller makes real API calls through the
# Service, TLS verified: tests/e2e/test_network.py.)
API_THROUGH_SERVICE = (
    r'printf "GET /api HTTP/1.0\r\n\r\n"'
    ' | nc -w 5 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT"'
)
API_ANSWER = "Client sent an HTTP request to an HTTPS server."

# A file served on the pod network (busybox httpd), for the host to fetch through the bridge.
SERVE = "echo hello > /tmp/hello; httpd -p 8080 -h /tmp; echo started; exec sleep 3600"
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "probe", "namespace": "default"},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "localhost/fim-k8s/workload:local",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", SERVE],
                "resources": {"limits": {"memory": "32Mi", "cpu": "100m"}},
            }
        ],
        "terminationGracePeriodSeconds": 1,
    },
}


def _wait_running(cluster: Cluster, name: str = "probe", timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        out = cluster.node.kubectl("get", "pod", name, "-o", "json", check=False)
        if out.returncode == 0:
            pod = json.loads(out.stdout)
            phase = pod["status"].get("phase", "")
            if phase == "Running":
                return pod
        time.sleep(0.25)
    raise AssertionError(f"pod {name} not Running after {timeout} s (phase {phase!r})")


def _pulled_by_digest(cluster: Cluster, tmp_path: Path) -> None:
    """The workload image, pushed to the node's registry by digest (skopeo, from its OCI
    archive), runs in a pod that names only that digest; the kubelet reports it as the
    image it runs, and containerd holds it under the registry's name."""
    archive = cluster.binaries.images / "workload.tar"
    digest = (cluster.binaries.images / "workload.digest").read_text().split()[-1]
    reference = f"{cluster.registry}/fim-k8s/workload@{digest}"
    subprocess.run(
        [system_tool("skopeo"), "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
         f"oci-archive:{archive}", f"docker://{reference}"],
        check=True, capture_output=True,
    )  # fmt: skip
    pod: Any = copy.deepcopy(POD)
    pod["metadata"]["name"] = "pulled"
    container = pod["spec"]["containers"][0]
    container.update(image=reference, imagePullPolicy="IfNotPresent")
    manifest = tmp_path / "pulled.json"
    manifest.write_text(json.dumps(pod))
    cluster.node.kubectl("apply", "-f", str(manifest))
    status = _wait_running(cluster, "pulled")["status"]["containerStatuses"][0]
    assert status["imageID"] == reference
    assert reference in cluster.node.images()


def test_pods_run_and_teardown_restores_the_host(tmp_path: Path) -> None:
    before = fingerprint()
    cluster = Cluster(
        tmp_path / "cluster", apiserver_only=False, apiserver_port=STANDARD_APISERVER_PORT
    )
    cluster.up()
    try:
        print(f"node Ready {cluster.startup_seconds:.1f} s after start")
        node = json.loads(cluster.node.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
        assert node["status"]["capacity"]["pods"] == str(MAX_PODS)  # above the default 110
        manifest = tmp_path / "pod.json"
        manifest.write_text(json.dumps(POD))
        cluster.node.kubectl("apply", "-f", str(manifest))
        _wait_running(cluster)
        exec_out = cluster.node.kubectl("exec", "probe", "--", "sh", "-c", "touch /tmp/x; ls /tmp")
        assert "x" in exec_out.stdout.split()
        assert "started" in cluster.node.kubectl("logs", "probe").stdout
        _pod_network_and_service(cluster)
        _pulled_by_digest(cluster, tmp_path)
    finally:
        cluster.down()
    assert fingerprint() == before
    guard = cluster.supervisor.guard
    assert not guard.cgroup.exists()
    rules = subprocess.run(["/usr/sbin/iptables", "-S"], capture_output=True, text=True, check=True)
    assert guard.chain not in rules.stdout


def _pod_network_and_service(cluster: Cluster) -> None:
    """The pod is on the pod network, the host reaches it through the bridge, and it reaches
    the API server as any in-cluster client does: the `kubernetes` Service's ClusterIP,
    DNATed by kube-proxy to the address the API server binds and advertises."""
    pod = json.loads(cluster.node.kubectl("get", "pod", "probe", "-o", "json").stdout)
    assert not pod["spec"].get("hostNetwork")
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(POD_CIDR)
    with urllib.request.urlopen(f"http://{pod_ip}:8080/hello", timeout=5) as response:
        assert response.read() == b"hello\n"

    service = json.loads(cluster.node.kubectl("get", "service", "kubernetes", "-o", "json").stdout)
    assert service["spec"]["clusterIP"] == SERVICE_CLUSTER_IP
    slices = json.loads(
        cluster.node.kubectl(
            "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes", "-o", "json"
        ).stdout
    )["items"]
    assert [(e["addresses"], p["port"]) for s in slices for e in s["endpoints"]
            for p in s["ports"]] == [([BRIDGE_ADDRESS], STANDARD_APISERVER_PORT)]  # fmt: skip
    assert cluster.control_plane.server == f"https://{BRIDGE_ADDRESS}:{STANDARD_APISERVER_PORT}"

    env = cluster.node.kubectl("exec", "probe", "--", "env").stdout.splitlines()
    assert f"KUBERNETES_SERVICE_HOST={SERVICE_CLUSTER_IP}" in env
    assert "KUBERNETES_SERVICE_PORT=443" in env
    answer = cluster.node.kubectl("exec", "probe", "--", "sh", "-c", API_THROUGH_SERVICE).stdout
    assert answer.startswith("HTTP/1.0 400 Bad Request")
    assert API_ANSWER in answer
