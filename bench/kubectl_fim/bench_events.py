"""How many fimd lines per second `kubectl fim events` reads, merges, filters and prints.

    bazel run //bench/kubectl_fim:bench_events -- [--lines 200000] [--pods 4] [--repeat 3]

Writes LINES event lines (runtime-stamped, as `kubectl logs --timestamps` prints them,
interleaved in time across PODS fimd pods) into a temporary directory, then runs the built
zipapp (`events`, not following) against a stand-in kubectl, a shell script that prints
those files (so kubectl's own cost is not measured: on a cluster the API server and kubelet
stream the logs). Reports lines per second of wall time and per CPU second (the fairer
figure on a shared machine) for `-o compact`, `-o json` and `-o compact` with a namespace
filter that keeps a quarter of the lines; the best of REPEAT runs each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Under `bazel run`, next to this file in the runfiles tree; run directly, from bazel-bin.
BUILT = "plugins/kubectl_fim/kubectl-fim"
KUBECTL = """#!/bin/sh
# A stand-in kubectl: `get pods` prints pods.json, `logs ... POD ...` prints POD.log.
dir="$(dirname "$0")"
case "$1" in
  get) exec cat "$dir/pods.json" ;;
  logs) exec cat "$dir/$3.log" ;;
esac
exit 2
"""


def _binary() -> Path:
    runfiles = Path(__file__).absolute().parents[2]
    for candidate in (runfiles / BUILT, Path("bazel-bin") / BUILT):
        if candidate.exists():
            return candidate
    sys.exit(f"{BUILT} not found: bazel build //plugins/kubectl_fim:kubectl-fim")


def write_logs(root: Path, lines: int, pods: int) -> None:
    names = [f"fimd-{i}" for i in range(pods)]
    items = [
        {
            "metadata": {"name": name},
            "spec": {"nodeName": f"node-{i}"},
            "status": {"containerStatuses": [{"name": "fimd", "state": {"running": {}}}]},
        }
        for i, name in enumerate(names)
    ]
    (root / "pods.json").write_text(json.dumps({"items": items}))
    files = [open(root / f"{name}.log", "w") for name in names]  # noqa: SIM115
    try:
        for n in range(lines):
            pod = n % pods
            seconds, micros = divmod(n * 37, 1_000_000)
            stamp = f"2026-12-01T10:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micros:06d}"
            record = {"kind": "event", "time": stamp + "Z", "node": f"node-{pod}",
                      "namespace": f"ns-{n % 4}", "pod": f"web-{n % 50}", "container": "app",
                      "watcher": f"ns-{n % 4}/logs", "event": "MODIFY",
                      "path": f"/var/log/app/file-{n % 1000}.log", "isDir": False,
                      "tags": {"team": "payments"}}  # fmt: skip
            files[pod].write(f"{stamp}123Z {json.dumps(record, separators=(',', ':'))}\n")
    finally:
        for f in files:
            f.close()
    script = root / "kubectl"
    script.write_text(KUBECTL)
    script.chmod(0o755)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(root: Path, args: list[str], repeat: int) -> tuple[float, float, int]:
    """(best wall seconds, best CPU seconds, lines printed) of `kubectl-fim events ARGS`.
    CPU time is the plugin's own (user + system; the stand-in kubectl's `cat` included)."""
    best, best_cpu, printed = float("inf"), float("inf"), 0
    for _ in range(repeat):
        started, cpu = time.perf_counter(), _cpu()
        done = subprocess.run(
            [str(_binary()), "events", f"--kubectl={root / 'kubectl'}", *args],
            capture_output=True, check=True,
        )  # fmt: skip
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, _cpu() - cpu)
        printed = done.stdout.count(b"\n")
    return best, best_cpu, printed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_logs(root, args.lines, args.pods)
        for name, extra in (
            ("-o compact", ["-o", "compact"]),
            ("-o json", ["-o", "json"]),
            ("-o compact -n ns-1", ["-o", "compact", "-n", "ns-1"]),
        ):
            seconds, cpu, printed = run(root, extra, args.repeat)
            print(
                f"{name:<20} {args.lines} lines of {args.pods} pods, {printed} printed: "
                f"{seconds:.2f} s ({args.lines / seconds:,.0f} lines/s), "
                f"CPU {cpu:.2f} s ({args.lines / cpu:,.0f} lines per CPU second)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
