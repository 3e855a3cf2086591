#!/usr/bin/env bash
# Builds the pinned upstream Kubernetes and etcd binaries of the local test cluster from the
# Go module proxy into a cache outside the repository, keyed by version:
#   ${FIM_CACHE:-/var/cache/fim-k8s}/k8s-<version>/bin/{kube-apiserver,kubelet,...}
#   ${FIM_CACHE:-/var/cache/fim-k8s}/etcd-<version>/bin/etcd
#   ${FIM_CACHE:-/var/cache/fim-k8s}/cri-tools-<version>/bin/crictl (teardown of pod sandboxes)
#   ${FIM_CACHE:-/var/cache/fim-k8s}/registry-<version>/bin/registry (the cluster's OCI registry)
#   ${FIM_CACHE:-/var/cache/fim-k8s}/otelcol-<version>/bin/otelcol-fim (deploy/logging/otel's
#     OpenTelemetry Collector, made by the collector builder from otelcol-builder.yaml)
# Usage: tools/cluster/build.sh [all | apiserver | NAME...]   (NAME: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl, kube-proxy, crictl, registry,
# otelcol). Binaries already in the cache are not rebuilt. Builds run at nice 19: the machine's
# two cores are shared. kube-proxy (iptables mode) gives the local cluster the `kubernetes`
# Service, so deploy/base runs there unpatched; it shares nearly all its packages with the
# other Kubernetes commands.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${FIM_CACHE:-/var/cache/fim-k8s}"
k8s_dir="$cache/k8s-$KUBERNETES_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
crictl_dir="$cache/cri-tools-$CRI_TOOLS_VERSION"
registry_dir="$cache/registry-$REGISTRY_VERSION"
otelcol_dir="$cache/otelcol-$OTELCOL_CONTRIB_VERSION"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)

# Go 1.26+ (Kubernetes 1.37's go.mod): preinstalled on these machines in /usr/local/go.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "cluster-build: no go on PATH (need Go >= 1.26)" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
# Reproducible: no VCS stamping, no local paths in the binaries.
BUILD_FLAGS=(-trimpath -buildvcs=false)

log() { printf '[cluster-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Turns `go build -v` output (one line per compiled package) into a progress line every 25.
progress() {
  awk -v what="$1" '{ n++; if (n % 25 == 0) { printf "[cluster-build] %s: %d packages compiled (%s)\n", what, n, $0; fflush() } }
    END { printf "[cluster-build] %s: %d packages compiled\n", what, n }' >&2
}

# A throwaway module requiring k8s.io/kubernetes, with every k8s.io staging module replaced by
# its published v0.<minor>.<patch> tag (the staging replaces of k8s.io/kubernetes' own go.mod
# point into its repository and are ignored for a dependency).
prepare_k8s_module() {
  local src="$k8s_dir/src" staging_version="v0.${KUBERNETES_VERSION#v1.}"
  [[ -f "$src/.ready" ]] && return 0
  log "preparing module for k8s.io/kubernetes $KUBERNETES_VERSION (staging $staging_version)"
  rm -rf "$src" && mkdir -p "$src"
  local gomod
  gomod="$(cd "$src" && printf 'module fimk8s.local/k8sbuild\ngo 1.26.0\n' > go.mod &&
    go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module fimk8s.local/k8sbuild"
    echo
    grep -E '^(go|godebug) ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } > "$src/go.mod"
  local pkgs=()
  for cmd in "${K8S_COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  log "resolving dependencies (go get; downloads from the module proxy)"
  (cd "$src" && nice -n 19 go get "${pkgs[@]}")
  touch "$src/.ready"
}

prepare_etcd_module() {
  local src="$etcd_dir/src"
  [[ -f "$src/.ready" ]] && return 0
  log "preparing module for go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  rm -rf "$src" && mkdir -p "$src"
  printf 'module fimk8s.local/etcdbuild\n\ngo 1.26.0\n' > "$src/go.mod"
  (cd "$src" && nice -n 19 go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  touch "$src/.ready"
}

k8s_ldflags() {
  local minor="${KUBERNETES_VERSION#v1.}" flags="-s -w"
  minor="${minor%%.*}"
  local key val
  for kv in "gitVersion=$KUBERNETES_VERSION" "gitMajor=1" "gitMinor=$minor" \
            "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
    key="${kv%%=*}" val="${kv#*=}"
    flags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
  done
  echo "$flags"
}

build_k8s() {
  local todo=()
  for cmd in "$@"; do [[ -x "$k8s_dir/bin/$cmd" ]] || todo+=("$cmd"); done
  ((${#todo[@]})) || { log "cached: $* ($k8s_dir/bin)"; return 0; }
  prepare_k8s_module
  mkdir -p "$k8s_dir/bin"
  local start=$SECONDS pkgs=()
  for cmd in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  log "building ${todo[*]} $KUBERNETES_VERSION"
  # Each command into a temporary name, renamed when complete: a cached binary is whole.
  for cmd in "${todo[@]}"; do
    (cd "$k8s_dir/src" && nice -n 19 go build -v "${BUILD_FLAGS[@]}" -ldflags "$(k8s_ldflags)" \
      -o "$k8s_dir/bin/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" 2>&1 | progress "$cmd")
    [[ "${PIPESTATUS[0]}" == 0 ]] || { log "FAILED: $cmd"; exit 1; }
    mv "$k8s_dir/bin/.$cmd.tmp" "$k8s_dir/bin/$cmd"
    log "built $cmd ($((SECONDS - start)) s so far)"
  done
}

build_etcd() {
  [[ -x "$etcd_dir/bin/etcd" ]] && { log "cached: etcd ($etcd_dir/bin)"; return 0; }
  prepare_etcd_module
  mkdir -p "$etcd_dir/bin"
  local start=$SECONDS
  log "building etcd $ETCD_VERSION"
  (cd "$etcd_dir/src" && nice -n 19 go build -v "${BUILD_FLAGS[@]}" \
    -ldflags "-s -w" -o "$etcd_dir/bin/.etcd.tmp" go.etcd.io/etcd/server/v3 2>&1 | progress etcd)
  [[ "${PIPESTATUS[0]}" == 0 ]] || { log "FAILED: etcd"; exit 1; }
  mv "$etcd_dir/bin/.etcd.tmp" "$etcd_dir/bin/etcd"
  log "built etcd ($((SECONDS - start)) s)"
}

# crictl: the CRI client the harness uses to stop and remove pod sandboxes (which also tears
# down their network) on teardown; Debian has no cri-tools package.
build_crictl() {
  [[ -x "$crictl_dir/bin/crictl" ]] && { log "cached: crictl ($crictl_dir/bin)"; return 0; }
  local src="$crictl_dir/src" start=$SECONDS
  if [[ ! -f "$src/.ready" ]]; then
    log "preparing module for sigs.k8s.io/cri-tools $CRI_TOOLS_VERSION"
    rm -rf "$src" && mkdir -p "$src"
    printf 'module fimk8s.local/critoolsbuild\n\ngo 1.26.0\n' > "$src/go.mod"
    (cd "$src" && nice -n 19 go get "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION")
    touch "$src/.ready"
  fi
  mkdir -p "$crictl_dir/bin"
  log "building crictl $CRI_TOOLS_VERSION"
  (cd "$src" && nice -n 19 go build -v "${BUILD_FLAGS[@]}" -ldflags "-s -w" \
    -o "$crictl_dir/bin/.crictl.tmp" sigs.k8s.io/cri-tools/cmd/crictl 2>&1 | progress crictl)
  [[ "${PIPESTATUS[0]}" == 0 ]] || { log "FAILED: crictl"; exit 1; }
  mv "$crictl_dir/bin/.crictl.tmp" "$crictl_dir/bin/crictl"
  log "built crictl ($((SECONDS - start)) s)"
}

# registry: the CNCF distribution registry, which the local cluster runs on 127.0.0.1 and
# containerd pulls the fim-k8s images from, by digest. Its own command (`registry serve
# CONFIG`, `registry garbage-collect`) from a two-line main that links the filesystem storage
# driver only: upstream's cmd/registry also links the S3, Azure and GCS drivers, about 430 of
# its 1,000 packages and more than half of its build time (cold, on this 2-core machine under
# load: 167 s instead of 399 s), for storage the cluster never uses.
build_registry() {
  [[ -x "$registry_dir/bin/registry" ]] && { log "cached: registry ($registry_dir/bin)"; return 0; }
  local src="$registry_dir/src" start=$SECONDS module=github.com/distribution/distribution/v3
  if [[ ! -f "$src/.ready" ]]; then
    log "preparing module for $module $REGISTRY_VERSION"
    rm -rf "$src" && mkdir -p "$src"
    printf 'module fimk8s.local/registrybuild\n\ngo 1.26.0\n' > "$src/go.mod"
    printf '%s\n' \
      '// The distribution registry command with the filesystem storage driver only.' \
      'package main' '' 'import (' \
      "	\"$module/registry\"" \
      "	_ \"$module/registry/storage/driver/filesystem\"" \
      ')' '' 'func main() { _ = registry.RootCmd.Execute() }' > "$src/main.go"
    (cd "$src" && nice -n 19 go get "$module/registry@$REGISTRY_VERSION" \
      "$module/registry/storage/driver/filesystem@$REGISTRY_VERSION")
    touch "$src/.ready"
  fi
  mkdir -p "$registry_dir/bin"
  log "building registry $REGISTRY_VERSION"
  (cd "$src" && nice -n 19 go build -v "${BUILD_FLAGS[@]}" -ldflags "-s -w" \
    -o "$registry_dir/bin/.registry.tmp" . 2>&1 | progress registry)
  [[ "${PIPESTATUS[0]}" == 0 ]] || { log "FAILED: registry"; exit 1; }
  mv "$registry_dir/bin/.registry.tmp" "$registry_dir/bin/registry"
  log "built registry ($((SECONDS - start)) s)"
}

# The OpenTelemetry Collector of deploy/logging/otel. The collector builder (ocb, at the core
# release) generates the collector's main module from otelcol-builder.yaml; its own dependency
# step (`go mod tidy`) is skipped because tidy also resolves the tests of every component, and
# some modules only those tests import are not on the module proxy: `go build -mod=mod`
# resolves exactly what the binary imports.
build_otelcol() {
  local bin="$otelcol_dir/bin/otelcol-fim"
  [[ -x "$bin" ]] && { log "cached: otelcol-fim ($otelcol_dir/bin)"; return 0; }
  local src="$otelcol_dir/src" start=$SECONDS
  if [[ ! -f "$src/.ready" ]]; then
    log "generating the collector module with ocb $OTELCOL_CORE_VERSION (contrib $OTELCOL_CONTRIB_VERSION)"
    rm -rf "$src" && mkdir -p "$src"
    GOBIN="$src/ocb" nice -n 19 go install "${BUILD_FLAGS[@]}" \
      "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_CORE_VERSION"
    sed -e "s#@OTELCOL_DIST_VERSION@#${OTELCOL_CONTRIB_VERSION#v}#" \
        -e "s#@OTELCOL_CONTRIB_VERSION@#$OTELCOL_CONTRIB_VERSION#" \
        -e "s#@OTELCOL_CORE_VERSION@#$OTELCOL_CORE_VERSION#" \
        -e "s#@OTELCOL_CORE_STABLE_VERSION@#$OTELCOL_CORE_STABLE_VERSION#" \
        -e "s#@OUTPUT_PATH@#$src/collector#" "$here/otelcol-builder.yaml" > "$src/builder.yaml"
    grep -q '@[A-Z_]*@' "$src/builder.yaml" && { log "FAILED: unfilled placeholder in $src/builder.yaml"; exit 1; }
    (cd "$src" && nice -n 19 ./ocb/builder --config builder.yaml --skip-compilation --skip-get-modules)
    # The module: the manifest's components and the collector core at their pinned versions.
    local mods=("go.opentelemetry.io/collector/otelcol@$OTELCOL_CORE_VERSION"
                "go.opentelemetry.io/collector/service@$OTELCOL_CORE_VERSION")
    mods+=($(sed -n 's/^ *- gomod: \([^ ]*\) \(v[^ ]*\)$/\1@\2/p' "$src/builder.yaml"))
    (cd "$src/collector" && go mod init fimk8s.local/otelcol && nice -n 19 go get "${mods[@]}")
    touch "$src/.ready"
  fi
  mkdir -p "$otelcol_dir/bin"
  log "building otelcol-fim $OTELCOL_CONTRIB_VERSION"
  (cd "$src/collector" && nice -n 19 go build -v "${BUILD_FLAGS[@]}" -ldflags "-s -w" \
    -o "$otelcol_dir/bin/.otelcol-fim.tmp" . 2>&1 | progress otelcol-fim)
  [[ "${PIPESTATUS[0]}" == 0 ]] || { log "FAILED: otelcol-fim"; exit 1; }
  # One release: every collector module the binary holds is at the pinned core, stable-core or
  # contrib version (MVS could have raised one through another module's requirement).
  local strays
  strays="$(go version -m "$otelcol_dir/bin/.otelcol-fim.tmp" | awk -v core="$OTELCOL_CORE_VERSION" \
    -v stable="$OTELCOL_CORE_STABLE_VERSION" -v contrib="$OTELCOL_CONTRIB_VERSION" '
      $1 == "dep" && $2 ~ /^go\.opentelemetry\.io\/collector(\/|$)/ && $3 != core && $3 != stable { print $2, $3 }
      $1 == "dep" && $2 ~ /^github\.com\/open-telemetry\/opentelemetry-collector-contrib\// && $3 != contrib { print $2, $3 }')"
  [[ -z "$strays" ]] || { log "FAILED: collector modules off the pinned release: $strays"; exit 1; }
  mv "$otelcol_dir/bin/.otelcol-fim.tmp" "$bin"
  log "built otelcol-fim ($((SECONDS - start)) s)"
}

main() {
  local targets=("$@")
  ((${#targets[@]})) || targets=(all)
  case "${targets[*]}" in
    all) targets=(etcd "${K8S_COMMANDS[@]}" crictl registry otelcol) ;;
    apiserver) targets=(etcd kube-apiserver) ;;
  esac
  local start=$SECONDS
  for t in "${targets[@]}"; do
    case "$t" in
      etcd) build_etcd ;;
      crictl) build_crictl ;;
      registry) build_registry ;;
      otelcol) build_otelcol ;;
      *) build_k8s "$t" ;;
    esac
  done
  log "done in $((SECONDS - start)) s: $k8s_dir/bin, $etcd_dir/bin, $otelcol_dir/bin"
}

main "$@"
