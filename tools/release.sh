#!/usr/bin/env bash
# The release step: builds the fim-k8s service images with Bazel, pushes them by digest to
# REGISTRY (REGISTRY/fim-k8s/controller and REGISTRY/fim-k8s/fimd, with skopeo; the registry
# must answer with the digest Bazel built) and writes those digests into the production
# overlay's `images:` block, so `kubectl apply -k deploy/overlays/production` runs exactly the
# bytes that were built. Commit the rewritten kustomization.yaml: nobody edits digests by hand.
#
#   tools/release.sh REGISTRY [--tag TAG] [--kustomization FILE]
#
# REGISTRY is host[:port][/path]; log in first (`skopeo login`, or a Docker config) where the
# registry needs it. TLS is verified except for registries on 127.0.0.0/8 or localhost.
# --tag also tags each image (e.g. the version); --kustomization writes another file
# (default deploy/overlays/production/kustomization.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0" >&2; exit 2; }
(($#)) || usage
registry="$1"
shift
extra=()
kustomization=deploy/overlays/production/kustomization.yaml
while (($#)); do
  case "$1" in
    --tag) extra+=(--tag "$2"); shift 2 ;;
    --kustomization) kustomization="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[[ "$registry" == -* ]] && usage

bazel build //images:controller //images:fimd
bin="$(bazel info bazel-bin 2>/dev/null)"
PYTHONPATH=. python3 -m images.push "$registry" --images-dir "$bin/images" \
  --write-images "$kustomization" "${extra[@]}"
