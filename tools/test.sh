#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, runs
# `bazel test //...` (builds everything, generates code, runs unit, integration,
# type and lint tests), then prints `N passed, N failed` from this run's results.
set -uo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh || exit 1

events="$(mktemp)"
trap 'rm -f "$events"' EXIT
bazel test //... --keep_going --build_event_json_file="$events" "$@"
rc=$?

summary="$(python3 tools/test_summary.py "$events" $(bazel query 'tests(//...)' 2>/dev/null))"
# CI machines keep no Bazel server between runs.
if [[ -n "${CI:-}" ]]; then
  bazel shutdown 2>/dev/null
fi
echo "$summary"
exit "$rc"
