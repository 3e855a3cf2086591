#!/usr/bin/env bash
# Installs the system packages fim-k8s needs to build and test on a fresh Debian
# bookworm machine (idempotent; apt runs only when something is missing).
set -euo pipefail

PACKAGES=(
  bazel-bootstrap    # the build and test system (Bazel 4, offline-capable)
  bazel-rules-java   # local rules_java so Bazel never downloads it
  python3 python3-pip python3-venv  # the interpreter the wheels and images target
  inotify-tools      # inotifywait: the reference in benchmarks
  openssl            # test certificates for mTLS
  util-linux         # unshare: namespaced "containers" in tests
  iproute2 procps
  # The local Kubernetes cluster (tests/cluster, e2e, demo): container runtime, pod network,
  # the network guard's iptables rules, busybox for the workload image.
  containerd runc containernetworking-plugins iptables busybox-static
  # Service images (images/): Debian rootfs without a Docker engine; the image tests unpack
  # the OCI layout for runc and read the docker-archive.
  mmdebstrap umoci skopeo
  prometheus         # promtool: unit tests of the alert rules in deploy/logging
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi
