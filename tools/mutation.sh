#!/usr/bin/env bash
# Mutation score of the pure cores: a measured figure for docs/testing.md, not a CI gate.
#
# Usage: tools/mutation.sh [NAME | MODULE.py=TEST.py[,TEST.py...]] ...
#   NAME is one of the modules below (default: all of them). The second form runs any module
#   against the test files given. Prints one line per module:
#     <module>: <killed> killed of <total> (<score>%), <survived> survived[, <other>]
#   and writes each module's surviving mutants (name and diff) to
#   ${MUTATION_OUT:-/tmp/fim-mutation}/<name>/survivors.txt.
#
# How: mutmut (pinned in requirements_lock.txt) runs in a throwaway copy of the work tree
# (tracked files as they are on disk now, so uncommitted edits count; mutmut never touches
# the repository), with the fim.v1 protos generated into the copy. Only the named module is
# mutated; mutmut runs, for each mutant, the given tests that cover the mutated function.
# "killed" counts mutants a test failed on or that timed out (mutmut's own verdicts).
# The venv is built once from requirements_lock.txt under ${FIM_CACHE:-/var/cache/fim-k8s}.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

declare -A MODULES=(
  [supervisor]="services/fimd/supervisor.py=services/fimd/tests/test_supervisor.py"
  [tree]="services/fimnotify/tree.py=services/fimnotify/tests/test_tree.py"
  [wire]="libs/fimnotify_api/wire.py=libs/fimnotify_api/tests/test_wire.py,libs/fimnotify_api/tests/test_wire_fuzz.py"
  [model]="libs/k8s/model.py=libs/k8s/tests/test_model.py"
  [reconcile]="services/controller/reconcile.py=services/controller/tests/test_reconcile.py"
  [status]="services/controller/status.py=services/controller/tests/test_status.py"
)
ORDER=(supervisor tree wire model reconcile status)

cache="${FIM_CACHE:-/var/cache/fim-k8s}"
lock_hash="$(sha256sum requirements_lock.txt | cut -c1-16)"
venv="$cache/mutation-venv-$lock_hash"
if [[ ! -x "$venv/bin/mutmut" ]]; then
  rm -rf "$venv"
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps --require-hashes --only-binary=:all: -r requirements_lock.txt
fi

out="${MUTATION_OUT:-/tmp/fim-mutation}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

specs=()
if [[ $# -eq 0 ]]; then
  set -- "${ORDER[@]}"
fi
for arg in "$@"; do
  if [[ "$arg" == *=* ]]; then
    specs+=("$(basename "${arg%%=*}" .py)|$arg")
  elif [[ -n "${MODULES[$arg]:-}" ]]; then
    specs+=("$arg|${MODULES[$arg]}")
  else
    echo "unknown module '$arg' (known: ${ORDER[*]}, or MODULE.py=TEST.py,...)" >&2
    exit 2
  fi
done

status=0
for spec in "${specs[@]}"; do
  name="${spec%%|*}"
  pair="${spec#*|}"
  module="${pair%%=*}"
  tests="${pair#*=}"
  copy="$work/$name"
  mkdir -p "$copy"
  git ls-files -z libs services tests tools pyproject.toml | tar --null -T - -cf - | tar -xf - -C "$copy"
  "$venv/bin/python" "$copy/tools/proto/protoc.py" -I"$copy/libs/proto" \
    --python_out="$copy/libs/proto" --grpc_python_out="$copy/libs/proto" \
    "$copy/libs/proto/fim/v1/fim.proto"
  test_list="$(printf '"%s", ' ${tests//,/ })"
  cat >>"$copy/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["libs", "services"]
only_mutate = ["$module"]
pytest_add_cli_args_test_selection = [${test_list%, }]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
EOF
  mkdir -p "$out/$name"
  (
    cd "$copy"
    # mutmut imports the mutated copy from ./mutants; the generated protos are in the copy
    # (mutmut's ./mutants does not hold them).
    export PYTHONPATH="$copy/mutants/libs/proto:$copy/libs/proto"
    "$venv/bin/mutmut" run --max-children "${MUTATION_JOBS:-2}" >"$out/$name/run.log" 2>&1 || true
    "$venv/bin/mutmut" export-cicd-stats >/dev/null
    cp mutants/mutmut-cicd-stats.json "$out/$name/stats.json"
    : >"$out/$name/survivors.txt"
    "$venv/bin/mutmut" results 2>/dev/null | awk -F: '/: survived$/ {gsub(/ /, "", $1); print $1}' |
      while read -r mutant; do
        "$venv/bin/mutmut" show "$mutant" >>"$out/$name/survivors.txt" 2>&1
        echo >>"$out/$name/survivors.txt"
      done
  )
  if ! python3 - "$module" "$out/$name/stats.json" <<'EOF'
import json
import sys

module, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))
killed = s["killed"] + s["timeout"]
total = s["total"]
if total == 0 or killed == 0 or killed + s["survived"] + s["no_tests"] < total / 2:
    # No mutant killed, or most never checked: the tests did not run (collection failed?).
    print(f"{module}: mutmut did not run the tests ({s}); see run.log")
    sys.exit(1)
other = {k: v for k, v in s.items() if k not in ("killed", "timeout", "survived", "total") and v}
extra = "".join(f", {v} {k}" for k, v in other.items())
print(f"{module}: {killed} killed of {total} ({100 * killed / total:.1f}%), {s['survived']} survived{extra}")
EOF
  then
    status=1
  fi
  rm -rf "$copy"
done
echo "survivors: $out/<name>/survivors.txt" >&2
exit "$status"
