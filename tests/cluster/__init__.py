"""A real local Kubernetes cluster for tests, started and stopped from Python.

Binaries: pinned upstream Kubernetes and etcd (`tools/cluster/versions.env`), built by
`bash tools/cluster/build.sh` (or `... build.sh apiserver` for etcd + kube-apiserver only)
into `${FIM_CACHE:-/var/cache/fim-k8s}`. Nothing here downloads anything.

Command line (state in /var/lib/fim-k8s-cluster; API server on 10.244.77.1:6443, the address
of the cluster's own bridge, or on 127.0.0.1:6443 with --apiserver-only):

    python3 -m tests.cluster up                    # the full single-node cluster
    python3 -m tests.cluster up --apiserver-only   # or only etcd + kube-apiserver
    export KUBECONFIG=/var/lib/fim-k8s-cluster/kubeconfig
    python3 -m images.push 127.0.0.1:5000 --images-dir bazel-bin/images   # by digest
    python3 -m tests.cluster import some-image.tar ...   # or import an archive into containerd
    python3 -m tests.cluster status
    python3 -m tests.cluster down                  # stop by PID, restore the host

The full cluster needs every binary (`build.sh all`) and the pause and workload images
(`python3 -m images.build`, imported into containerd). It runs an OCI registry (the CNCF
distribution registry) on 127.0.0.1:5000 that containerd pulls from over plain HTTP
(`tests.cluster.registry`): push images there (`python3 -m images.push 127.0.0.1:5000 ...`)
and run them by digest. The node is named `127.0.0.1`, pods get 10.244.77.0/24 on the
bridge `fimk8s0`, whose address 10.244.77.1 is their gateway and the API server's address
(pods reach it through the `kubernetes` Service, 10.96.0.1:443, which kube-proxy in iptables
mode translates; nothing is forwarded off the bridge); the rest of the service range
10.96.0.0/24 is an unreachable route. No cluster DNS: nothing fim-k8s deploys resolves
names. The CLI uses only the standard library (no venv needed).

pytest (see `tests.cluster.fixtures`): put `pytest_plugins = ["tests.cluster.fixtures"]` in a
test module (or import the fixtures into a conftest.py) and ask for `control_plane` (a
`ControlPlane`: `.kubeconfig`, `.server`, `.kubeconfig_for(user, groups)`) or
`local_cluster` (a full `Cluster`: `.kubeconfig`, `.registry`, `.import_images(paths)`,
`.node.kubectl()`).

Python: `Cluster(state_dir, apiserver_only=True).up()` ... `.down()`.

Guarantees: every server listens on 127.0.0.1 only, but the full cluster's API server, which
listens on the bridge's address (an address of this machine that only the harness's bridge
carries); every component runs inside a network guard (`tests.cluster.netguard`) that drops
and counts any packet leaving other than through loopback or the cluster's own bridge, and
any packet forwarded from the bridge elsewhere, and `down()` fails loudly if it counted one;
every process is stopped by PID (checked against its start time, never by name); teardown
restores the host (`tests.cluster.hoststate`: mounts, links, cgroups, sysctls, directories,
and every iptables table, after `kube-proxy --cleanup`).
"""

from tests.cluster.cluster import Cluster
from tests.cluster.config import BinariesMissingError
from tests.cluster.controlplane import ControlPlane
from tests.cluster.netguard import NetworkGuardError

__all__ = ["BinariesMissingError", "Cluster", "ControlPlane", "NetworkGuardError"]
