"""`kubectl fim`, the kubectl plugin, run as the Bazel-built zipapp (a user's install):
`events -o compact` shows an event written in a pod (following, and from the log), with a
hostile file name neutralised; `status` shows the FimWatcher and the node's fimd; `scan`
asks for a comparison and prints its answer, and `baseline` the stored baseline, with the
numbers fimd wrote."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from typing import IO, Any

from tests.e2e.kube import Kube, wait_for
from tests.e2e.system import FimSystem, artifact
from tests.e2e.workloads import pod, running, watched, watcher

# A file name with an ANSI escape sequence (ESC [ 3 1 m) and a carriage return in it.
HOSTILE = "evil\x1b[31m\rred"
SHOWN = "evil\\x1b[31m\\x0dred"


def plugin_argv(kube: Kube, *args: str) -> list[str]:
    binary = artifact("plugins/kubectl_fim/kubectl-fim")
    return [str(binary), *args, f"--kubectl={kube.kubectl}", f"--kubeconfig={kube.kubeconfig}"]


def plugin(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    argv = plugin_argv(kube, *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _read_into(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def _until(lines: queue.Queue[str], pattern: re.Pattern[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if pattern.search(line):
            return line
    raise AssertionError(f"no line matching {pattern.pattern!r} in {timeout} s; got {seen[-20:]}")


def test_events_compact_shows_an_event_written_in_a_pod(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    kube.apply(pod("web", namespace, {"app": "web"}, "mkdir -p /data && exec sleep 3600"))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    subject = {"paths": ["/data"], "events": ["create", "delete"], "tags": {"team": "payments"}}
    kube.apply(watcher("data", namespace, {"app": "web"}, [subject]))
    watched(kube, namespace, "data", pods=1)

    follow = plugin_argv(kube, "events", "-f", "-o", "compact", "-n", namespace)
    process = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_into, args=(process.stdout, lines), daemon=True).start()
    try:
        kube.exec(namespace, "web", f"touch /data/a; touch '/data/{HOSTILE}'")
        who = rf"{re.escape(node)} CREATE +{namespace}/web:app"
        created = re.compile(rf"^\S+Z {who} /data/a watcher=data team=payments$")
        _until(lines, created, timeout=30)
        hostile = _until(lines, re.compile(re.escape(SHOWN)), timeout=30)
        assert "\x1b" not in hostile
        assert "\r" not in hostile
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 130, process.stderr.read() if process.stderr else ""

    # Without -f: what the logs hold now, filtered by event; and the JSON lines as written.
    done = plugin(kube, "events", "-o", "compact", "-n", namespace, "--event", "create")
    assert done.returncode == 0, done.stderr
    assert any(created.search(line) for line in done.stdout.splitlines()), done.stdout
    assert SHOWN in done.stdout
    assert "\x1b" not in done.stdout
    as_json = plugin(kube, "events", "-o", "json", "-n", namespace, "--pod", "web")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {(r["event"], r["path"]) for r in records} >= {
        ("CREATE", "/data/a"),
        ("CREATE", f"/data/{HOSTILE}"),
    }
    assert {r["namespace"] for r in records} == {namespace}


def test_status_shows_the_watcher_and_the_node(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    kube.apply(pod("app", namespace, {"app": "st"}, "mkdir -p /srv && exec sleep 3600"))
    node = running(kube, namespace, "app")["spec"]["nodeName"]
    kube.apply(watcher("srv", namespace, {"app": "st"}, [{"paths": ["/srv"], "events": ["all"]}]))
    watched(kube, namespace, "srv", pods=1)
    row = re.compile(rf"^{namespace}\s+srv\s+1\s+1\s+True\s+AllPodsWatched$", re.MULTILINE)
    fimd = system.fimd_pod(node)

    def probe() -> str | None:
        done = plugin(kube, "status", "-n", namespace)
        assert done.returncode == 0, done.stderr
        return done.stdout if row.search(done.stdout) else None

    out = wait_for("kubectl fim status showing the watcher ready", probe, timeout=30)
    node_row = next(line for line in out.splitlines() if f" {fimd} " in line)
    cells = node_row.split()
    assert cells[:4] == [node, fimd, "Running", "yes"], out
    # Capacity from fimd's metrics through the API server's pod proxy: watches held, of
    # which active (this test's watch at least), and inotify watches against the budget.
    assert re.search(r"[1-9]\d* \([1-9]\d* active\)\s+[1-9]\d*/\d+ \(\d+%\)", node_row), out
    assert "capacity unknown" not in out, out


def _scan_lines(system: FimSystem, node: str, namespace: str) -> list[dict[str, Any]]:
    return [
        line
        for line in system.lines(node)
        if line.get("kind") == "scan" and line.get("namespace") == namespace
    ]


def test_scan_waits_for_the_answer_and_baseline_sums_up_the_stored_tree(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    script = "mkdir -p /cfg && echo v1 > /cfg/app.conf && exec sleep 3600"
    kube.apply(pod("web", namespace, {"app": "web"}, script))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    subject = {"paths": ["/cfg"], "events": ["closewrite"], "hash": "sha256"}
    kube.apply(watcher("w", namespace, {"app": "web"}, [subject]))
    watched(kube, namespace, "w", pods=1)
    # The activation comparison stores the first baseline (/cfg and app.conf).
    wait_for("the first scan line", lambda: _scan_lines(system, node, namespace), 30)
    kube.exec(namespace, "web", "echo v2 > /cfg/app.conf && echo new > /cfg/new")

    done = plugin(kube, "scan", "w", "-n", namespace, "--timeout", "45s")
    assert done.returncode == 0, done.stderr
    request = re.search(r"^FimWatcher \S+/w: scan (\S+)$", done.stdout, re.MULTILINE)
    assert request, done.stdout
    assert "answered by 1 of 1 containers" in done.stdout
    assert "scanned 3  added 1  removed 0  changed 1" in done.stdout
    # The numbers are those of the comparison fimd ran for the request.
    (line,) = wait_for(
        "the requested scan line",
        lambda: [s for s in _scan_lines(system, node, namespace) if s["reason"] == "requested"],
        30,
    )
    assert (line["scanned"], line["added"], line["changed"]) == (3, 1, 1)
    status = kube.get("fimwatcher", "w", namespace)["status"]["lastScan"]
    assert (status["request"], status["answered"]) == (request.group(1), 1)

    as_json = plugin(kube, "baseline", "w", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    (row,) = json.loads(as_json.stdout)["baselines"]
    assert (row["node"], row["pod"], row["container"], row["paths"]) == (
        node, "web", "app", ["/cfg"],
    )  # fmt: skip
    counts = ("entries", "files", "dirs", "hashed", "hashSkipped", "bytes", "truncated")
    assert tuple(row[c] for c in counts) == (3, 2, 1, 2, 0, len("v2\nnew\n"), False)
    table = plugin(kube, "baseline", "w", "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert re.search(
        rf"^{re.escape(node)}\s+web\s+app\s+/cfg\s+3\s+2\s+1\s+0\s+7\s+2\s+0\s",
        table.stdout,
        re.MULTILINE,
    ), table.stdout
