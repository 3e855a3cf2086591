"""The full single-node cluster: pods run through containerd + runc + CNI, exec and logs
work, and teardown leaves the host exactly as it was."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.cluster.cluster import Cluster
from tests.cluster.controlplane import STANDARD_APISERVER_PORT
from tests.cluster.hoststate import fingerprint
from tests.cluster.node import MAX_PODS, NODE_NAME

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
                "command": ["sh", "-c", "echo started; exec sleep 3600"],
                "resources": {"limits": {"memory": "32Mi", "cpu": "100m"}},
            }
        ],
        "terminationGracePeriodSeconds": 1,
    },
}


def _wait_running(cluster: Cluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        out = cluster.node.kubectl("get", "pod", "probe", "-o", "json", check=False)
        if out.returncode == 0:
            phase = json.loads(out.stdout)["status"].get("phase", "")
            if phase == "Running":
                return
        time.sleep(0.25)
    raise AssertionError(f"pod not Running after {timeout} s (phase {phase!r})")


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
    finally:
        cluster.down()
    assert fingerprint() == before
    guard = cluster.supervisor.guard
    assert not guard.cgroup.exists()
    rules = subprocess.run(["/usr/sbin/iptables", "-S"], capture_output=True, text=True, check=True)
    assert guard.chain not in rules.stdout
