"""A stand-in for `kubectl` in the plugin's tests: a real process that answers the calls the
plugin makes from files in $FAKE_KUBECTL_DIR, as the API server and kubelet would.

- `get pods ... -o json`: prints `pods.json` (the test rewrites it to add or stop pods).
- `logs ... POD ... --timestamps [--follow] [--since-time=T] [--since=D]`: prints `POD.log`
  (lines already carrying their runtime timestamp), from second T on like the API server
  (sinceTime has second precision); with --follow, keeps printing lines appended to the file
  until `POD.end` exists (the container stopped); `POD.fail` makes it fail with that text on
  stderr.
- `get --raw PATH`: prints `raw/<last path component>` of the path's pod (`POD.metrics`), or
  fails when missing.
- `get fimwatchers.fim-k8s.io ...`: prints `fimwatchers.json`; `get secret NAME`:
  `secret-NAME.json`.
Every call's argv is appended to `calls.log`, one JSON array per line, and its PID to
`pids.log`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _positional(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-")]


def _logs(state: Path, args: list[str]) -> int:
    pod = _positional(args)[1]
    if (state / f"{pod}.fail").exists():
        sys.stderr.write((state / f"{pod}.fail").read_text())
        return 1
    since = next((a.split("=", 1)[1] for a in args if a.startswith("--since-time=")), "")
    since = since[:19]  # second precision, like the API server
    log = state / f"{pod}.log"
    offset = 0
    while True:
        data = log.read_bytes()[offset:] if log.exists() else b""
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines(keepends=True):
            if line[:19].decode(errors="replace") >= since:
                sys.stdout.buffer.write(line)
        sys.stdout.flush()
        offset += end
        if "--follow" not in args or (state / f"{pod}.end").exists():
            return 0
        time.sleep(0.02)


def _get(state: Path, args: list[str], words: list[str]) -> int:
    if words[1] == "pods":
        sys.stdout.write((state / "pods.json").read_text())
    elif words[1] == "fimwatchers.fim-k8s.io":
        sys.stdout.write((state / "fimwatchers.json").read_text())
    elif words[1] == "secret":
        sys.stdout.write((state / f"secret-{words[2]}.json").read_text())
    else:
        path = args[args.index("--raw") + 1]
        pod = path.split("/pods/")[1].split(":")[0]
        metrics = state / f"{pod}.metrics"
        if not metrics.exists():
            sys.stderr.write(f'Error from server (ServiceUnavailable): no endpoints for "{pod}"\n')
            return 1
        sys.stdout.write(metrics.read_text())
    return 0


def main(args: list[str]) -> int:
    state = Path(os.environ["FAKE_KUBECTL_DIR"])
    with open(state / "calls.log", "a") as calls:
        calls.write(json.dumps(args) + "\n")
    with open(state / "pids.log", "a") as pids:
        pids.write(f"{os.getpid()}\n")
    words = _positional(args)
    if words[:1] == ["logs"]:
        return _logs(state, args)
    if words[:1] == ["get"] and len(words) > 1:
        return _get(state, args, words)
    sys.stderr.write(f"fake kubectl: unexpected call {args}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
