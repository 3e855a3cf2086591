"""A stand-in for `kubectl` in the plugin's tests: a real process that answers the calls the
plugin makes from files in $FAKE_KUBECTL_DIR, as the API server and kubelet would.

- `get pods ... -o json`: prints `pods.json` (the test rewrites it to add or stop pods).
- `logs ... POD ... --timestamps [--follow] [--since-time=T] [--since=D]`: prints `POD.log`
  (lines already carrying their runtime timestamp), from second T on like the API server
  (sinceTime has second precision); with --follow, keeps printing lines appended to the file
  until `POD.end` exists (the container stopped); `POD.fail` makes it fail with that text on
  stderr.
- `get --raw PATH`: prints the path's pod's `POD.metrics` (a `/proxy/metrics` path) or
  `POD.baselines` (`/proxy/baselines?...`), or fails when missing.
- `get fimwatchers.fim-k8s.io ...`: prints `fimwatchers.json`; `get secret NAME`:
  `secret-NAME.json`.
- `get fimwatchers.fim-k8s.io NAME`: prints `fimwatcher-NAME.json`, or fails NotFound.
  `annotate fimwatchers.fim-k8s.io NAME ... KEY=VALUE`: sets the annotation in that file.
  With `scan-NAME.json` ({"answerAfter": N, "lastScan": {...}}) it plays the controller
  answering a scan request: the N-th get after an annotate, and every later one, shows
  `status.lastScan` with `request` = the annotation's value; earlier ones show it with
  `request` "" and `answered` = lastScan's `answeredBefore`.
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
    """The words that are not flags (nor the value of `-o`)."""
    return [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1 : i] != ["-o"]]


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


def _watcher(state: Path, name: str) -> int:
    path = state / f"fimwatcher-{name}.json"
    if not path.exists():
        sys.stderr.write(
            f'Error from server (NotFound): fimwatchers.fim-k8s.io "{name}" not found\n'
        )
        return 1
    watcher = json.loads(path.read_text())
    scan = state / f"scan-{name}.json"
    if scan.exists():
        plan = json.loads(scan.read_text())
        plan["gets"] = plan.get("gets", 0) + 1
        scan.write_text(json.dumps(plan))
        request = watcher["metadata"].get("annotations", {}).get("fim-k8s.io/scan-requested")
        last = dict(plan["lastScan"])
        done = request and plan["gets"] >= plan["answerAfter"]
        last.update(
            request=request if done else "",
            answered=last["containers"] if done else last.pop("answeredBefore", 0),
        )
        last.pop("answeredBefore", None)
        watcher.setdefault("status", {})["lastScan"] = last
    sys.stdout.write(json.dumps(watcher))
    return 0


def _annotate(state: Path, words: list[str]) -> int:
    path = state / f"fimwatcher-{words[2]}.json"
    watcher = json.loads(path.read_text())
    key, _, value = words[3].partition("=")
    watcher["metadata"].setdefault("annotations", {})[key] = value
    path.write_text(json.dumps(watcher))
    scan = state / f"scan-{words[2]}.json"
    if scan.exists():
        scan.write_text(json.dumps({**json.loads(scan.read_text()), "gets": 0}))
    return 0


def _get(state: Path, args: list[str], words: list[str]) -> int:
    if words[1] == "pods":
        sys.stdout.write((state / "pods.json").read_text())
    elif words[1] == "fimwatchers.fim-k8s.io" and len(words) > 2:
        return _watcher(state, words[2])
    elif words[1] == "fimwatchers.fim-k8s.io":
        sys.stdout.write((state / "fimwatchers.json").read_text())
    elif words[1] == "secret":
        sys.stdout.write((state / f"secret-{words[2]}.json").read_text())
    else:
        path = args[args.index("--raw") + 1]
        pod = path.split("/pods/")[1].split(":")[0]
        kind = "baselines" if "/proxy/baselines?" in path else "metrics"
        answer = state / f"{pod}.{kind}"
        if not answer.exists():
            sys.stderr.write(f'Error from server (ServiceUnavailable): no endpoints for "{pod}"\n')
            return 1
        sys.stdout.write(answer.read_text())
    return 0


def install(state: Path) -> str:
    """Writes `state/kubectl`, which runs this stand-in, and returns its path (the test sets
    $FAKE_KUBECTL_DIR to `state`)."""
    wrapper = state / "kubectl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__)}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def calls(state: Path) -> list[list[str]]:
    """The argv of every call so far, in order."""
    return [json.loads(line) for line in (state / "calls.log").read_text().splitlines()]


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
    if words[:2] == ["annotate", "fimwatchers.fim-k8s.io"] and len(words) == 4:
        return _annotate(state, words)
    sys.stderr.write(f"fake kubectl: unexpected call {args}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
