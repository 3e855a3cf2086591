#!/usr/bin/env bash
# The fim-k8s demo on this machine, in one command: builds what is missing, starts the local
# single-node Kubernetes cluster (tests/cluster) with its OCI registry on 127.0.0.1:5000,
# pushes the images there by digest, deploys fim-k8s with `kubectl apply -k` of
# deploy/overlays/standard pinned to those digests, starts a demo workload and a FimWatcher on it,
# and streams the file events live with the kubectl plugin (`kubectl fim events -f`, one
# readable line per event) while the workload changes files. Ctrl-C stops everything and
# restores the host.
#
#   bash tools/demo.sh            (as root; nothing leaves the machine: see tests/cluster)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m[demo] %s\033[0m\n' "$*" >&2; }

say "1/6 system packages"
bash tools/setup.sh

say "2/6 Kubernetes and etcd binaries (cached after the first run; cold: ~10 min)"
bash tools/cluster/build.sh all
source tools/cluster/versions.env
kubectl="${FIM_CACHE:-/var/cache/fim-k8s}/k8s-$KUBERNETES_VERSION/bin/kubectl"

say "3/6 images: pause and workload, then controller and fimd, and the kubectl plugin (Bazel)"
PYTHONPATH=. python3 -m images.build
bazel build //images:controller //images:fimd //plugins/kubectl_fim:kubectl-fim
bin="$(bazel info bazel-bin 2>/dev/null)"
# The plugin as a user runs it once it is on PATH (`kubectl fim ...`), with the pinned kubectl.
fim() { "$bin/plugins/kubectl_fim/kubectl-fim" "$@" --kubectl "$kubectl"; }

state=/var/lib/fim-k8s-cluster
export KUBECONFIG="$state/kubeconfig"
cluster() { PYTHONPATH=. python3 -m tests.cluster "$@" --state-dir "$state"; }
stop() {
  # Teardown must run even if the terminal or a pipe on stderr is gone already.
  trap - INT TERM HUP PIPE EXIT
  set +e
  say "stopping the cluster and restoring the host" 2>/dev/null
  # If stderr is a pipe whose reader died with Ctrl-C, drain instead of failing mid-teardown.
  cluster down 2>&1 | { cat >&2 || cat >/dev/null; }
}
if [[ -f "$state/state.json" ]]; then
  say "a cluster from an earlier run is still recorded: stopping it first"
  cluster down
fi

say "4/6 local cluster (etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy)"
trap stop INT TERM HUP PIPE EXIT
cluster up

say "5/6 pushing controller and fimd to the cluster's registry by digest; deploying fim-k8s"
# The overlay, wrapped in a kustomization that pins the pushed digests (images/push.py).
PYTHONPATH=. python3 -m images.push 127.0.0.1:5000 --images-dir "$bin/images" \
  --pin deploy/overlays/standard --out "$state/pinned" --kubectl "$kubectl"
"$kubectl" apply -k "$state/pinned"
"$kubectl" -n fim-system rollout status daemonset/fimd --timeout=180s
"$kubectl" -n fim-system rollout status deployment/fim-controller --timeout=180s

say "6/6 demo workload (writes under /var/log/shop every 2 s) and its FimWatcher"
"$kubectl" apply -f - <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: localhost/fim-k8s/workload:local
      imagePullPolicy: Never
      command:
        - sh
        - -c
        - |
          mkdir -p /var/log/shop
          i=0
          while true; do
            i=$((i + 1))
            echo "order $i" >> /var/log/shop/orders.log
            if [ $((i % 3)) = 0 ]; then mv /var/log/shop/orders.log "/var/log/shop/orders.$i.log"; fi
            if [ $((i % 5)) = 0 ]; then rm -f /var/log/shop/orders.*.log; fi
            sleep 2
          done
---
apiVersion: fim-k8s.io/v1alpha1
kind: FimWatcher
metadata: {name: shop-logs, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  subjects:
    - paths: [/var/log/shop]
      events: [create, modify, movedfrom, movedto, delete]
      tags: {team: payments, pci: "10.2"}
EOF
"$kubectl" -n shop wait --for=condition=Ready pod/web --timeout=120s
"$kubectl" -n shop wait --for=condition=Ready fimwatcher/shop-logs --timeout=120s
fim status

say "file events from every node's fimd (kubectl fim events -f -n shop; -o json for the raw lines); Ctrl-C to stop and clean up"
fim events -f -n shop
