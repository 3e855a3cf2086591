"""etcd + kube-apiserver: the API-server-only cluster, and the control plane of the full one.

The API server binds one address. Alone (API-server-only) that is 127.0.0.1. In a full
cluster it is the address the harness gives the cluster's own bridge (`node.BRIDGE_ADDRESS`,
10.244.77.1): pods reach it through the `kubernetes` Service (ClusterIP 10.96.0.1, DNATed by
kube-proxy to that address, which the API server advertises), and every host client
(kubectl, kubelet, controller-manager, scheduler, kube-proxy) uses it too. It exists only on
this machine (a bridge without any port but the pods' veths); etcd stays on 127.0.0.1.

RBAC and Node authorization on, client-certificate authentication, service-account tokens
signed by a key of this cluster, and an admin kubeconfig (`system:masters`) at
`<state_dir>/kubeconfig`. `kubeconfig_for(user, groups)` makes a kubeconfig for any other
identity, e.g. a ServiceAccount's, to prove that RBAC rules suffice.
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.cluster.config import Binaries
from tests.cluster.kubeconfig import write_kubeconfig
from tests.cluster.pki import Pki
from tests.cluster.supervisor import Supervisor

LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_CLUSTER_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of the range
# The full cluster's (and the CLI's) API server port, the usual one.
STANDARD_APISERVER_PORT = 6443
# Every request that changes something, at Metadata level (who, what, when; no bodies):
# tests read it to prove which client wrote what when (e.g. two controllers never overlap).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Metadata
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ControlPlane:
    """etcd and kube-apiserver of the cluster in `supervisor.state_dir`."""

    def __init__(
        self,
        supervisor: Supervisor,
        binaries: Binaries,
        apiserver_port: int | None = None,
        address: str = LOOPBACK,
    ) -> None:
        self.supervisor = supervisor
        self.binaries = binaries
        self.dir = supervisor.state_dir
        self.pki = Pki(self.dir / "pki")
        # Recorded, so that `Cluster.attach` (another process) talks to the same address.
        self.address: str = supervisor.extra.setdefault("apiserver_address", address)
        ports = supervisor.extra.setdefault("ports", {})
        ports.setdefault("apiserver", apiserver_port or free_port())
        ports.setdefault("etcd", free_port())
        ports.setdefault("etcd_peer", free_port())
        self.ports: dict[str, int] = ports

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON event per line (see AUDIT_POLICY)."""
        return self.dir / "audit.log"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.dir / "kubeconfig"

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` by client certificate."""
        safe = "".join(c if c.isalnum() else "-" for c in user)
        pair = self.pki.issue(f"user-{safe}", user, groups)
        return write_kubeconfig(
            self.dir / "kubeconfigs" / f"{safe}.kubeconfig",
            self.server,
            self.pki.ca.cert,
            pair,
            user,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Starts etcd and kube-apiserver and returns when the API server is ready."""
        self.binaries.require("etcd", "kube-apiserver")
        admin = self.pki.issue("admin", "fim-k8s-admin", ("system:masters",))
        write_kubeconfig(self.kubeconfig, self.server, self.pki.ca.cert, admin, "admin")
        self.supervisor.start("etcd", self._etcd_argv())
        self.supervisor.start("kube-apiserver", self._apiserver_argv())
        self.wait_ready(timeout)

    def stop(self) -> None:
        for name in ("kube-apiserver", "etcd"):
            if any(record.name == name for record in self.supervisor.records):
                self.supervisor.stop(name)

    def _etcd_argv(self) -> list[str]:
        client = f"http://{LOOPBACK}:{self.ports['etcd']}"
        peer = f"http://{LOOPBACK}:{self.ports['etcd_peer']}"
        return [
            str(self.binaries.etcd),
            "--name=fim",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=fim={peer}",
            "--log-level=warn",
            # A throwaway test store: durability across power loss buys nothing here.
            "--unsafe-no-fsync",
        ]

    def _apiserver_argv(self) -> list[str]:
        serving = self.pki.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                *dict.fromkeys((self.address, LOOPBACK)),
                "localhost",
                SERVICE_CLUSTER_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            client=False,
        )
        kubelet_client = self.pki.issue(
            "apiserver-kubelet-client", "kube-apiserver", ("system:masters",)
        )
        sa = self.pki.service_account_keys()
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [
            str(self.binaries.kube("kube-apiserver")),
            f"--etcd-servers=http://{LOOPBACK}:{self.ports['etcd']}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.pki.ca.cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={self.pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            # The `kubernetes` Service's endpoints: the advertised address (lease reconciler),
            # except on loopback, which the reconciler refuses every 10 s.
            f"--endpoint-reconciler-type={'none' if self.address == LOOPBACK else 'lease'}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            "--profiling=false",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=200",
            "--audit-log-maxbackup=1",
            "--v=1",
        ]

    def wait_ready(self, timeout: float) -> None:
        """Polls /readyz as admin until it answers 200; fails early if a component died."""
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        admin = self.pki.issue("admin", "fim-k8s-admin", ("system:masters",))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.supervisor.ensure_alive()
            try:
                # An https URL built from our own constant: no user-supplied scheme.
                url = f"{self.server}/readyz"
                with urllib.request.urlopen(url, context=context, timeout=2):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {timeout} s: {last}")
