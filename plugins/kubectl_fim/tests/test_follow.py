"""Following fimd's logs across pods, against a stand-in kubectl process (fake_kubectl.py):
merging streams, pods that appear later, resuming a pod's log without duplicates, overlong
lines and kubectl failures, and the whole `events` command."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugins.kubectl_fim import cli
from plugins.kubectl_fim.follow import Line, LogStreams, read_lines, split_stamp
from plugins.kubectl_fim.kubectl import Kubectl
from plugins.kubectl_fim.tests import fake_kubectl


def _pod(name: str, node: str, running: bool = True) -> dict[str, Any]:
    state = {"running": {}} if running else {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "containerStatuses": [{"name": "fimd", "state": state}]},
    }


def event(stamp: str, node: str, path: str, namespace: str = "shop", ev: str = "MODIFY") -> str:
    """A runtime-stamped fimd event line as `kubectl logs --timestamps` prints it."""
    record = {"kind": "event", "time": stamp.replace("000Z", "Z"), "node": node,
              "namespace": namespace, "pod": "web", "container": "app",
              "watcher": f"{namespace}/w", "event": ev, "path": path, "isDir": False,
              "tags": {}}  # fmt: skip
    return f"{stamp} {json.dumps(record, separators=(',', ':'))}\n"


class Cluster:
    """The files fake_kubectl answers from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pods: list[dict[str, Any]] = []
        self.kubectl = Kubectl(fake_kubectl.install(root), ("--kubeconfig=/nonexistent",))
        self.set_pods()

    def set_pods(self, *pods: dict[str, Any]) -> None:
        self.pods = list(pods)
        tmp = self.root / "pods.json.tmp"
        tmp.write_text(json.dumps({"items": self.pods}))
        tmp.replace(self.root / "pods.json")

    def append(self, pod: str, *lines: str) -> None:
        with open(self.root / f"{pod}.log", "a") as f:
            f.write("".join(lines))

    def end(self, pod: str) -> None:
        (self.root / f"{pod}.end").touch()

    def calls(self) -> list[list[str]]:
        return fake_kubectl.calls(self.root)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("FAKE_KUBECTL_DIR", str(tmp_path))
    return Cluster(tmp_path)


def collect(
    streams: LogStreams, until: Callable[[list[Line]], bool], timeout: float = 20
) -> list[Line]:
    """Polls `streams` until `until(lines so far)` holds; fails after `timeout` seconds."""
    lines: list[Line] = []
    deadline = time.monotonic() + timeout
    while not until(lines):
        assert time.monotonic() < deadline, f"timed out; got {lines}"
        lines += streams.poll(0.05)
    return lines


def texts(lines: list[Line]) -> list[str]:
    return [json.loads(line.text)["path"] for line in lines]


def test_split_stamp_and_bounded_lines() -> None:
    assert split_stamp("2026-12-01T13:04:05.5Z {}") == ("2026-12-01T13:04:05.500000000Z", "{}")
    assert split_stamp("no stamp here") == ("", "no stamp here")
    stream = io.BytesIO(b"short\n" + b"x" * 50 + b"\nafter\nlast")
    assert list(read_lines(stream, limit=20)) == ["short", None, "after", "last"]


def test_events_merges_nodes_in_time_order_keeping_each_nodes_order(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"), _pod("fimd-b", "n2"))
    cluster.append(
        "fimd-a",
        event("2026-12-01T10:00:01.000001000Z", "n1", "/a1"),
        event("2026-12-01T10:00:03.000000000Z", "n1", "/a3"),
        "2026-12-01T10:00:03.100000000Z plain text line of a logFormat\n",
    )
    cluster.append(
        "fimd-b",
        event("2026-12-01T10:00:02.000000000Z", "n2", "/b2"),
        event("2026-12-01T10:00:04.000000000Z", "n2", "/b4", namespace="other"),
    )
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["events", "--kubectl", cluster.kubectl.binary, "-o", "json"], out, err)
    assert (code, err.getvalue()) == (0, "")
    assert [json.loads(x)["path"] for x in out.getvalue().splitlines()] == [
        "/a1",
        "/b2",
        "/a3",
        "/b4",
    ]

    out = io.StringIO()
    assert cli.main(["events", "--kubectl", cluster.kubectl.binary, "-n", "shop"], out, err) == 0
    shown = out.getvalue().splitlines()
    assert [line.split()[4] for line in shown] == ["/a1", "/b2", "/a3"]
    assert all("\x1b" not in line for line in shown)  # not a terminal: no colours


def test_plain_lines_are_shown_unfiltered_with_their_pod(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"))
    cluster.append("fimd-a", "2026-12-01T10:00:03.100000000Z evil \x1b[2J text\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["events", "--kubectl", cluster.kubectl.binary], out, err) == 0
    assert out.getvalue() == "fimd-a | evil \\x1b[2J text\n"


def test_follow_picks_up_new_pods_and_resumes_a_restarted_one(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"), _pod("fimd-b", "n2", running=False))
    cluster.append("fimd-a", event("2026-12-01T10:00:01.000000000Z", "n1", "/a1"))
    streams = LogStreams(cluster.kubectl, "fim-system", follow=True, poll=0.1)
    try:
        assert [p.name for p in streams.start()] == ["fimd-a", "fimd-b"]
        assert texts(collect(streams, lambda got: len(got) >= 1)) == ["/a1"]

        # fimd-b starts running, and a pod on a new node appears.
        cluster.append("fimd-b", event("2026-12-01T10:00:02.000000000Z", "n2", "/b2"))
        cluster.append("fimd-c", event("2026-12-01T10:00:02.500000000Z", "n3", "/c2"))
        cluster.set_pods(_pod("fimd-a", "n1"), _pod("fimd-b", "n2"), _pod("fimd-c", "n3"))
        got = collect(streams, lambda got: len(got) >= 2)
        assert sorted(texts(got)) == ["/b2", "/c2"]

        # fimd-a's container stops (its `kubectl logs -f` ends) and runs again with more lines
        # in the same second as its last one: they are read once, the old line not again.
        cluster.append("fimd-a", event("2026-12-01T10:00:01.500000000Z", "n1", "/a1b"))
        assert texts(collect(streams, lambda got: len(got) >= 1)) == ["/a1b"]
        cluster.end("fimd-a")

        def resumed() -> list[list[str]]:
            return [c for c in cluster.calls() if "fimd-a" in c and "--follow" in c
                    and "--since-time=2026-12-01T10:00:01.500000000Z" in c]  # fmt: skip

        assert collect(streams, lambda _: bool(resumed())) == []
        (cluster.root / "fimd-a.end").unlink()
        cluster.append("fimd-a", event("2026-12-01T10:00:01.700000000Z", "n1", "/a1c"))
        got = collect(streams, lambda got: len(got) >= 1)
        assert texts(got) == ["/a1c"]
    finally:
        streams.stop()
    assert streams.stats.errors == {}


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_sigterm_stops_the_plugin_and_its_kubectl_processes(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"), _pod("fimd-b", "n2"))
    cluster.append("fimd-a", event("2026-12-01T10:00:01.000000000Z", "n1", "/a1"))
    argv = [sys.executable, "-m", "plugins.kubectl_fim", "events", "-f", "-o", "json"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "FIM_KUBECTL": cluster.kubectl.binary,
    }
    plugin = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert plugin.stdout is not None
        first = plugin.stdout.readline()  # blocks until the plugin printed a line
        assert json.loads(first)["path"] == "/a1"
        pids: list[int] = []
        deadline = time.monotonic() + 20
        while len(pids) < 3:  # get pods, logs fimd-a, logs fimd-b: each writes its PID
            assert time.monotonic() < deadline, pids
            pids = [int(p) for p in (cluster.root / "pids.log").read_text().split()]
        plugin.send_signal(signal.SIGTERM)
        assert plugin.wait(timeout=20) == 130
    finally:
        if plugin.poll() is None:
            plugin.kill()
            plugin.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)


def test_overlong_lines_and_failures_are_reported(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"), _pod("fimd-b", "n2"))
    huge = "2026-12-01T10:00:01.000000000Z {" + "x" * (1 << 20) + "}\n"
    cluster.append("fimd-a", huge, event("2026-12-01T10:00:02.000000000Z", "n1", "/after"))
    (cluster.root / "fimd-b.fail").write_text("Error from server (Forbidden): pods/log\n")
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["events", "--kubectl", cluster.kubectl.binary, "-o", "json"], out, err)
    assert code == 1
    assert [json.loads(x)["path"] for x in out.getvalue().splitlines()] == ["/after"]
    assert "fimd-a: 1 line(s) longer than 1 MiB skipped" in err.getvalue()
    assert "fim-system/fimd-b: Error from server (Forbidden): pods/log" in err.getvalue()


def test_repeated_failures_are_counted_and_told_once_while_following(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"))
    (cluster.root / "fimd-a.fail").write_text("Error from server (Forbidden): pods/log\n")
    told: list[str] = []
    streams = LogStreams(cluster.kubectl, "fim-system", follow=True, poll=0.05, warn=told.append)
    try:
        streams.start()
        key = "fim-system/fimd-a: Error from server (Forbidden): pods/log"
        collect(streams, lambda _: streams.stats.errors.get(key, 0) >= 3)
    finally:
        streams.stop()
    assert told == [key]
    assert list(streams.stats.errors) == [key]


def test_no_fimd_pods_is_an_error(cluster: Cluster) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["events", "--kubectl", cluster.kubectl.binary], out, err) == 1
    assert "no fimd pods in namespace fim-system" in err.getvalue()


def test_connection_flags_reach_kubectl_before_or_after_the_command(cluster: Cluster) -> None:
    cluster.set_pods()
    argv = ["--context=prod", "--kubectl", cluster.kubectl.binary, "events",
            "--kubeconfig=/k", "--fim-namespace=fim"]  # fmt: skip
    assert cli.main(argv, io.StringIO(), io.StringIO()) == 1
    call = cluster.calls()[-1]
    # The wrapper's own --kubeconfig is not used: the plugin passes only the user's flags.
    assert call[:2] == ["--kubeconfig=/k", "--context=prod"]
    assert "--namespace=fim" in call


def test_status_shows_watchers_nodes_and_capacity(cluster: Cluster) -> None:
    cluster.set_pods(_pod("fimd-a", "n1"), _pod("fimd-b", "n2"))
    ready = {"type": "Ready", "status": "False", "reason": "Pending"}
    status = {"observablePods": 3, "watchedPods": 2, "conditions": [ready]}
    watchers = {"items": [{"metadata": {"namespace": "shop", "name": "logs"}, "status": status}]}
    (cluster.root / "fimwatchers.json").write_text(json.dumps(watchers))
    (cluster.root / "fimd-a.metrics").write_text(
        'fimd_watches{phase="active"} 2.0\nfimd_inotify_watches 10.0\n'
        "fimd_inotify_watch_budget 100.0\nfimd_engines 2.0\nfimd_engines_running 2.0\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", "--kubectl", cluster.kubectl.binary], out, err) == 0
    text = out.getvalue()
    assert "shop        logs   3            2         False   Pending" in text
    assert "10/100 (10%)" in text
    assert "fimd-b: capacity unknown:" in text
    assert "--all-namespaces" in next(c for c in cluster.calls() if "fimwatchers.fim-k8s.io" in c)
    assert os.path.exists(cluster.root / "calls.log")
