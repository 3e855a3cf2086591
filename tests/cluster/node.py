"""The node half of the local cluster: containerd + runc + a CNI bridge, the kubelet,
kube-proxy, and the controller-manager and scheduler that a node's pods need.

All of it follows the machine facts: cgroupfs driver, cgroup v1 allowed, runc, streaming and
every server but the API server on 127.0.0.1, the node named `127.0.0.1` so its InternalIP is
loopback. The pod network is the harness's own bridge `fimk8s0` on a private /24 whose
gateway address 10.244.77.1 the harness puts on the bridge before the control plane starts:
the API server binds it (see `controlplane`), pods get a default route to it, kube-proxy
(iptables mode) DNATs the `kubernetes` Service to it, and the host reaches pod IPs through
the bridge (kubelet probes, tests). Nothing of the pod network leaves the machine: no NAT,
the network guard drops (and counts) anything forwarded from the bridge to another
interface, and drops whatever another interface would forward into it; the service range
keeps an unreachable route, so a service address without a kube-proxy rule goes nowhere.
containerd keeps its content store in the cache (images survive between runs: warm
bring-up imports nothing); everything else lives in the cluster's state directory or is
undone by `tests.cluster.hoststate` on teardown (kube-proxy's rules by `kube-proxy --cleanup`,
then checked).

Images: the pause and workload images are imported archives; the fim-k8s service images are
pulled from the cluster's OCI registry on 127.0.0.1:5000 (`tests.cluster.registry`) by
digest, through containerd's registry host configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cluster.config import SYSTEM_PATH, Binaries, system_tool
from tests.cluster.controlplane import LOOPBACK, SERVICE_CIDR, ControlPlane, free_port
from tests.cluster.hoststate import HostSnapshot
from tests.cluster.kubeconfig import write_kubeconfig
from tests.cluster.registry import Registry
from tests.cluster.supervisor import Supervisor, log_tail

NODE_NAME = LOOPBACK
BRIDGE = "fimk8s0"
POD_CIDR = "10.244.77.0/24"
# The bridge's own address: the pods' gateway, and the address the API server binds.
BRIDGE_ADDRESS = "10.244.77.1"
# The kubelet's default maxPods is 110, exactly the capacity contract's workload (issue 10:
# 110 pods x 5 FimWatchers on one node). fim-k8s's own pods (fimd, the controller, the PKI
# Job's pod while it runs) and a test's other pods come on top, so the node admits 130. Pod
# IPs are not the limit: POD_CIDR's /24 holds 253 pods (.1 is the bridge's own address).
MAX_PODS = 130
KUBELET_PORT = 10250
RUN_DIR = Path("/run/fim-k8s")  # containerd's state and sockets (short socket paths)
# Stopped in this order (containerd last: pods are removed through it first).
NODE_COMPONENTS = ("kube-proxy", "kube-scheduler", "kube-controller-manager", "kubelet")


class Node:
    """containerd, kubelet, controller-manager and scheduler of one single-node cluster."""

    def __init__(
        self, supervisor: Supervisor, binaries: Binaries, control_plane: ControlPlane
    ) -> None:
        self.supervisor = supervisor
        self.binaries = binaries
        self.cp = control_plane
        self.dir = supervisor.state_dir
        self.containerd_root = binaries.cache / "containerd"
        self.registry = Registry(supervisor, binaries)

    @property
    def pod_logs_dir(self) -> Path:
        """The kubelet's podLogsDir: this cluster's own, never the host's /var/log/pods."""
        return self.dir / "pod-logs"

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / f"containerd-{self.supervisor.guard.ident}.sock"

    def owned_dirs(self) -> list[Path]:
        """Directories whose mounts teardown must undo."""
        return [self.dir, self.containerd_root, RUN_DIR]

    def prepare_network(self) -> None:
        """Records the host, then makes the bridge with its address (the API server binds
        it, so this comes before the control plane) and the service range's unreachable
        route."""
        self.binaries.require(
            "kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl",
            "crictl", "registry",
        )  # fmt: skip
        if bridge_exists():
            raise RuntimeError(
                f"bridge {BRIDGE} exists: another full local cluster is running (`python3 -m "
                f"tests.cluster status`), or a killed one left it (`ip link delete {BRIDGE}`)"
            )
        if "host" not in self.supervisor.extra:
            self.supervisor.extra["host"] = HostSnapshot.take().to_json()
            self.supervisor.save()
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "replace", f"{BRIDGE_ADDRESS}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        _ip("route", "replace", "unreachable", SERVICE_CIDR)
        self.supervisor.extra["service_route"] = True
        self.supervisor.save()

    def start(self, images: list[Path], timeout: float) -> None:
        """Starts the registry and containerd (importing missing images), then the kubelet,
        kube-proxy, controller-manager and scheduler; returns when the node is Ready and
        kube-proxy has programmed the `kubernetes` Service. `prepare_network` must have run."""
        self._write_cni_config()
        self.registry.start(timeout)
        self.supervisor.start(
            "containerd", [system_tool("containerd"), "--config", str(self._containerd_config())]
        )
        self._wait_for(self.containerd_socket.exists, "containerd socket", timeout)
        self.forget_other_imports(images)
        self.import_images(images)
        self.supervisor.start(
            "kubelet", self._kubelet_argv(), env={"AWS_EC2_METADATA_DISABLED": "true"}
        )
        self.supervisor.extra["kube_proxy"] = True  # its rules are cleaned up even if it dies
        self.supervisor.start("kube-proxy", self._kube_proxy_argv())
        self.supervisor.start("kube-controller-manager", self._controller_manager_argv())
        self.supervisor.start("kube-scheduler", self._scheduler_argv())
        self._wait_for(self.ready, "node Ready", timeout)
        what = "kube-proxy's rules for the kubernetes Service"
        self._wait_for(self._service_programmed, what, timeout)
        self.supervisor.guard.forward_rules_first()
        # Pods are rejected until the controller-manager made the namespace's ServiceAccount.
        self._wait_for(self._default_service_account, "default ServiceAccount", timeout)

    def stop(self) -> list[str]:
        """Stops the node's processes and pods and restores the host; returns problems."""
        running = {record.name for record in self.supervisor.records}
        for name in NODE_COMPONENTS:
            if name in running:
                self.supervisor.stop(name)
        if "containerd" in running:
            self._remove_pods()
            self.supervisor.stop("containerd")
        self._kill_leftovers()
        self._remove_runtime_dirs()
        if self.supervisor.extra.pop("kube_proxy", False):
            self._kube_proxy_cleanup()
        problems: list[str] = []
        host = self.supervisor.extra.pop("host", None)
        if host is not None:
            problems += HostSnapshot.from_json(host).restore(self.owned_dirs())
        if self.supervisor.extra.pop("service_route", False):
            _ip("route", "delete", "unreachable", SERVICE_CIDR, check=False)
        self.supervisor.save()
        return problems

    def ready(self) -> bool:
        self.supervisor.ensure_alive()
        out = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs the pinned kubectl as admin; with check, failures raise with kubectl's stderr."""
        argv = [str(self.binaries.kube("kubectl")), f"--kubeconfig={self.cp.kubeconfig}", *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def import_images(self, archives: list[Path]) -> None:
        """Imports image archives (OCI or docker) into containerd's k8s.io namespace.

        A marker per image name in the persistent content store records the sha256 of the
        archive it was last imported from: unchanged images are skipped (warm bring-ups
        import nothing), a rebuilt one (or one built back to an older state) is imported."""
        markers = self.containerd_root / "imported"
        markers.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            digest = _sha256(archive)
            paths = [markers / name.replace("/", "_") for name in archive_names(archive)]
            if paths and all(p.exists() and p.read_text() == digest for p in paths):
                continue
            started = time.monotonic()
            self._ctr("images", "import", "--no-unpack", str(archive))
            for path in paths:
                path.write_text(digest)
            print(f"[cluster] imported {archive.name} in {time.monotonic() - started:.1f} s")

    def forget_other_imports(self, archives: list[Path]) -> None:
        """Removes images an earlier bring-up imported from archives other than these (the
        service images did, before they came from the registry): the persistent store then
        holds no stale import that a pod could run instead of the pulled image."""
        markers = self.containerd_root / "imported"
        if not markers.is_dir():
            return
        wanted = {name.replace("/", "_") for archive in archives for name in archive_names(archive)}
        stale = {marker.name: marker for marker in markers.iterdir() if marker.name not in wanted}
        if not stale:
            return
        for name in self.images():  # a marker names its image with `/` as `_`
            if name.replace("/", "_") in stale:
                self._ctr("images", "remove", name)
                print(f"[cluster] removed {name}, imported by an earlier bring-up")
        for marker in stale.values():
            marker.unlink()

    def images(self) -> list[str]:
        """Image references in containerd's k8s.io namespace."""
        return sorted(self._ctr("images", "list", "--quiet").stdout.split())

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            system_tool("ctr"),
            "--address",
            str(self.containerd_socket),
            "--namespace",
            "k8s.io",
            *args,
        ]
        return subprocess.run(argv, capture_output=True, text=True, check=True)

    def _wait_for(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervisor.ensure_alive()
            if condition():
                return
            time.sleep(0.25)
        raise TimeoutError(
            f"{what} not reached after {timeout} s; kubelet log:\n"
            + log_tail(self.supervisor.log_dir / "kubelet.log")
        )

    def _remove_pods(self) -> None:
        """Stops and removes every pod sandbox through CRI (which also tears down its
        network namespace and veth), then every container."""
        endpoint = f"unix://{self.containerd_socket}"
        for args in (["rmp", "--all", "--force"], ["rm", "--all", "--force"]):
            subprocess.run(
                [
                    str(self.binaries.crictl),
                    f"--runtime-endpoint={endpoint}",
                    "--timeout=30s",
                    *args,
                ],
                capture_output=True,
                check=False,
            )

    def _kill_leftovers(self) -> None:
        """Kills processes still in the guard cgroup (container shims and their containers,
        started by containerd) by PID."""
        procs = self.supervisor.guard.cgroup_procs
        for _ in range(50):
            pids = [int(p) for p in procs.read_text().split()] if procs.exists() else []
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _remove_runtime_dirs(self) -> None:
        """containerd's state directory and sockets below /run/fim-k8s (after unmounting
        anything left there: shm and rootfs mounts of killed sandboxes)."""
        HostSnapshot.unmount_below([RUN_DIR])
        ident = self.supervisor.guard.ident
        for path in RUN_DIR.glob(f"containerd-{ident}*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            RUN_DIR.rmdir()

    def _write_cni_config(self) -> None:
        conflist = {
            "cniVersion": "1.0.0",
            "name": "fim-k8s",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    # A default route via BRIDGE_ADDRESS in every pod (service traffic reaches
                    # kube-proxy's rules on the host); the plugin turns on net.ipv4.ip_forward
                    # (restored on teardown). Forwarding off the bridge: the guard drops it.
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipMasq": False,
                    # A pod reaching itself through a Service (kube-proxy masquerades that).
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_ADDRESS}]],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        path = self.dir / "cni" / "net.d" / "10-fim-k8s.conflist"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(conflist, indent=2) + "\n")

    def _containerd_config(self) -> Path:
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        runc = f"{cri[:-1]}.containerd.runtimes.runc]"
        config = f"""version = 2
root = "{self.containerd_root / "root"}"
state = "{RUN_DIR}/containerd-{self.supervisor.guard.ident}"
disabled_plugins = ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[metrics]
  address = ""
{cri}
  sandbox_image = "localhost/fim-k8s/pause:local"
  # CAP_SYS_RESOURCE is missing here: negative oom_score_adj values fail with EPERM.
  restrict_oom_score_adj = true
  stream_server_address = "{LOOPBACK}"
  stream_server_port = "0"
  enable_cdi = false
{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false
{runc}
  runtime_type = "io.containerd.runc.v2"
{runc[:-1]}.options]
  BinaryName = "/usr/sbin/runc"
  SystemdCgroup = false
{cri[:-1]}.registry]
  # certs.d/<host>/hosts.toml: the cluster's registry on 127.0.0.1, plain HTTP.
  config_path = "{self.registry.hosts_dir}"
{cri[:-1]}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.dir / "cni" / "net.d"}"
  max_conf_num = 1
"""
        path = self.dir / "containerd.toml"
        path.write_text(config)
        return path

    def _kubelet_argv(self) -> list[str]:
        pki = self.cp.pki
        client = pki.issue("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",))
        serving = pki.issue("kubelet-serving", NODE_NAME, server_names=(LOOPBACK,), client=False)
        kubeconfig = write_kubeconfig(
            self.dir / "kubelet.kubeconfig", self.cp.server, pki.ca.cert, client, "kubelet"
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": LOOPBACK,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca.cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            # This machine has hybrid cgroups (v1 controllers); 1.35+ refuse v1 by default.
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "makeIPTablesUtilChains": False,
            "protectKernelDefaults": False,
            "enforceNodeAllocatable": [],
            "resolvConf": "",
            "podLogsDir": str(self.pod_logs_dir),
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            # Disk and image GC thresholds of a shared dev machine say nothing about pods.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "maxPods": MAX_PODS,
        }  # fmt: skip
        path = self.dir / "kubelet.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return [
            str(self.binaries.kube("kubelet")),
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            "--v=1",
        ]

    def _client_component_argv(
        self, binary: str, name: str, user: str, kube_user: str
    ) -> list[str]:
        """The binary and the flags kube-controller-manager and kube-scheduler share: one
        client-certificate kubeconfig for API, authentication and authorization."""
        pki = self.cp.pki
        pair = pki.issue(name, user)
        kubeconfig = write_kubeconfig(
            self.dir / f"{name}.kubeconfig", self.cp.server, pki.ca.cert, pair, kube_user
        )
        return [
            str(self.binaries.kube(binary)),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        ]

    def _controller_manager_argv(self) -> list[str]:
        pki = self.cp.pki
        return [
            *self._client_component_argv(
                "kube-controller-manager",
                "controller-manager",
                "system:kube-controller-manager",
                "kcm",
            ),
            f"--service-account-private-key-file={pki.service_account_keys().key}",
            f"--root-ca-file={pki.ca.cert}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]

    def _kube_proxy_argv(self) -> list[str]:
        """kube-proxy in iptables mode (no IPVS here) as a host process, configured to change
        no host sysctl: conntrack sizing and timeouts left as they are (maxPerCore 0, zero
        timeouts), no localhost NodePorts (route_localnet stays 0), NodePorts only on the
        bridge address, no health server, metrics on a free port of 127.0.0.1, oomScoreAdj 0
        (negative values fail here without CAP_SYS_RESOURCE)."""
        pki = self.cp.pki
        pair = pki.issue("kube-proxy", "system:kube-proxy")  # bound to system:node-proxier
        kubeconfig = write_kubeconfig(
            self.dir / "kube-proxy.kubeconfig", self.cp.server, pki.ca.cert, pair, "kube-proxy"
        )
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": LOOPBACK,
            "healthzBindAddress": "",
            "metricsBindAddress": f"{LOOPBACK}:{free_port()}",
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "detectLocalMode": "ClusterCIDR",
            "nodePortAddresses": [f"{BRIDGE_ADDRESS}/32"],
            "oomScoreAdj": 0,
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False,
                         "syncPeriod": "30s", "minSyncPeriod": "1s"},
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s", "udpTimeout": "0s",
                          "udpStreamTimeout": "0s"},
        }  # fmt: skip
        path = self.dir / "kube-proxy.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return [str(self.binaries.kube("kube-proxy")), f"--config={path}", "--v=1"]

    def _service_programmed(self) -> bool:
        """kube-proxy has DNATed the `kubernetes` Service to the API server's address."""
        rules = subprocess.run(
            [system_tool("iptables"), "-t", "nat", "-S"], capture_output=True, text=True,
            check=False,
        ).stdout  # fmt: skip
        target = f"{self.cp.address}:{self.cp.ports['apiserver']}"
        return f"--to-destination {target}" in rules

    def _kube_proxy_cleanup(self) -> None:
        """`kube-proxy --cleanup`: removes every proxy mode's rules and chains (IPv4 and
        IPv6). Whatever is left is found (and reported) by the host snapshot's check."""
        done = subprocess.run(
            [str(self.binaries.kube("kube-proxy")), "--cleanup", "--v=1"],
            capture_output=True, text=True, check=False, env={"PATH": SYSTEM_PATH},
        )  # fmt: skip
        log = self.supervisor.log_dir / "kube-proxy-cleanup.log"
        log.write_text(done.stdout + done.stderr)
        # Non-zero also when only the IPVS/ipset cleanup failed (unavailable here): the
        # iptables comparison in HostSnapshot.restore decides.

    def _scheduler_argv(self) -> list[str]:
        return self._client_component_argv(
            "kube-scheduler", "scheduler", "system:kube-scheduler", "scheduler"
        )


def bridge_exists() -> bool:
    """A full local cluster is running (or a killed one left its bridge)."""
    return Path("/sys/class/net", BRIDGE).exists()


def archive_names(archive: Path) -> list[str]:
    """Image names an archive declares: docker `RepoTags`, else OCI name annotations."""
    with tarfile.open(archive) as tar:
        members = {member.name.removeprefix("./"): member for member in tar.getmembers()}

        def read(name: str) -> Any:
            stream = tar.extractfile(members[name]) if name in members else None
            return json.load(stream) if stream else None

        docker = read("manifest.json") or []
        names = [tag for entry in docker for tag in entry.get("RepoTags") or []]
        if names:
            return sorted(names)
        index = read("index.json") or {}
        annotations = [m.get("annotations", {}) for m in index.get("manifests", [])]
        return sorted(a["io.containerd.image.name"] for a in annotations if a)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run([system_tool("ip"), *args], capture_output=True, check=check)
