#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, runs
# `bazel test //...` (builds everything, generates code, runs unit, integration,
# type and lint tests), then prints `N passed, N failed` from this run's results.
set -uo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh || exit 1

# The cluster tests need the pinned Kubernetes/etcd binaries and the base images in the cache
# (${FIM_CACHE:-/var/cache/fim-k8s}); built once (cold: about 15 min on 2 cores), then cached.
bash tools/cluster/build.sh all || exit 1
PYTHONPATH=. python3 -m images.build || exit 1

events="$(mktemp)"
trap 'rm -f "$events"' EXIT
# One retry for a failed test target, so a single timing hiccup on a loaded 2-core machine
# does not fail the run; the summary names every target that needed it.
bazel test //... --keep_going --flaky_test_attempts=2 --build_event_json_file="$events" "$@"
rc=$?

summary="$(python3 tools/test_summary.py "$events" $(bazel query 'tests(//...)' 2>/dev/null))"
# CI machines keep no Bazel server between runs.
if [[ -n "${CI:-}" ]]; then
  bazel shutdown 2>/dev/null
fi
echo "$summary"
exit "$rc"
