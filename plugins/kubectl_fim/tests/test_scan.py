"""`kubectl fim scan` and `kubectl fim baseline` against a stand-in kubectl process
(fake_kubectl.py) that plays the API server, the controller's status and fimd's
/baselines answers; and their pure parts."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from libs.k8s.model import SCAN_REQUEST_ANNOTATION
from plugins.kubectl_fim import baselines, cli, scan
from plugins.kubectl_fim.tests import fake_kubectl

UID = "0b3c9c1e-2f54-4a43-9d1e-6c1a4d1b2a01"
LAST = {"time": "2026-12-01T10:00:05Z", "scanned": 240, "added": 1, "removed": 0,
        "changed": 2, "containers": 2, "answeredBefore": 1}  # fmt: skip


def _watcher(subject: dict[str, Any] | None = None, pods: int = 2) -> dict[str, Any]:
    subject = subject or {"paths": ["/cfg"], "events": ["modify"], "hash": "sha256"}
    return {
        "metadata": {"name": "w", "namespace": "shop", "uid": UID},
        "spec": {"selector": {}, "subjects": [subject]},
        "status": {"observablePods": pods, "watchedPods": pods},
    }


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.kubectl = fake_kubectl.install(root)
        self.put("fimwatcher-w.json", _watcher())
        self.put("pods.json", {"items": []})

    def put(self, name: str, value: Any) -> None:
        (self.root / name).write_text(json.dumps(value))

    def run(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main([*argv, "--kubectl", self.kubectl], out, err)
        return code, out.getvalue(), err.getvalue()

    def calls(self) -> list[list[str]]:
        return fake_kubectl.calls(self.root)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("FAKE_KUBECTL_DIR", str(tmp_path))
    return Cluster(tmp_path)


def test_the_annotation_is_the_models() -> None:
    assert scan.SCAN_REQUEST_ANNOTATION == SCAN_REQUEST_ANNOTATION


def test_durations_and_request_values() -> None:
    assert [scan.seconds(d) for d in ("5m", "1h30m", "0.5s", "250ms")] == [300, 5400, 0.5, 0.25]
    when = datetime(2026, 12, 1, 10, 0, 0, 12, tzinfo=UTC)
    assert scan.new_request(when, "5f0c2a91") == "2026-12-01T10:00:00.000012Z-5f0c2a91"


def test_scan_asks_with_a_fresh_value_and_waits_until_every_container_answered(
    cluster: Cluster,
) -> None:
    cluster.put("scan-w.json", {"answerAfter": 3, "lastScan": LAST})
    code, out, err = cluster.run("scan", "w", "-n", "shop", "--poll-interval", "0.01")
    assert (code, err) == (0, "")
    calls = cluster.calls()
    (annotate,) = [c for c in calls if c[0] == "annotate"]
    assert annotate[:2] == ["annotate", "fimwatchers.fim-k8s.io"]
    assert "--overwrite" in annotate
    assert "--namespace=shop" in annotate
    key, _, value = annotate[-1].partition("=")
    assert key == SCAN_REQUEST_ANNOTATION
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z-[0-9a-f]{8}", value)
    assert len([c for c in calls if c[0] == "get"]) == 4  # the check, then 3 polls
    assert out == (
        f"FimWatcher shop/w: scan {value}\n"
        "answered by 2 of 2 containers, latest comparison 2026-12-01T10:00:05Z\n"
        "scanned 240  added 1  removed 0  changed 2\n"
    )
    # A second scan writes another value.
    assert cluster.run("scan", "w", "-n", "shop", "--poll-interval", "0.01")[0] == 0
    second = [c for c in cluster.calls() if c[0] == "annotate"][-1][-1]
    assert second != annotate[-1]


def test_a_scan_that_is_not_answered_in_time_says_how_many_answered(cluster: Cluster) -> None:
    cluster.put("scan-w.json", {"answerAfter": 10**9, "lastScan": LAST})
    argv = ("scan", "w", "-n", "shop", "--timeout", "0.2s", "--poll-interval", "0.01")
    code, out, err = cluster.run(*argv)
    assert (code, out) == (1, "")
    assert err.startswith("kubectl fim scan: timed out after 0.2s waiting for FimWatcher shop/w")
    assert "1 of 2 containers answered scan request 2026-" in err


def test_no_wait_only_asks(cluster: Cluster) -> None:
    code, out, _ = cluster.run("scan", "w", "--no-wait")
    assert code == 0
    assert re.fullmatch(r"FimWatcher shop/w: scan \S+ requested\n", out)
    assert [c[0] for c in cluster.calls()] == ["get", "annotate"]


@pytest.mark.parametrize(
    ("watcher", "says"),
    [
        (None, "FimWatcher nope not found in namespace shop"),
        (_watcher({"paths": ["/x"], "events": ["modify"]}), "has no baseline subjects"),
        (_watcher(pods=0), "selects no running pods: nothing to scan"),
    ],
    ids=["not-found", "no-baseline-subjects", "no-pods"],
)
def test_a_scan_that_cannot_be_asked_for_is_a_clear_error(
    cluster: Cluster, watcher: dict[str, Any] | None, says: str
) -> None:
    name = "nope" if watcher is None else "w"
    if watcher is not None:
        cluster.put("fimwatcher-w.json", watcher)
    code, out, err = cluster.run("scan", name, "-n", "shop")
    assert (code, out) == (1, "")
    assert says in err
    assert not [c for c in cluster.calls() if c[0] == "annotate"]  # nothing asked


def test_a_later_request_answers_an_earlier_one() -> None:
    watcher = _watcher()
    watcher["metadata"]["annotations"] = {SCAN_REQUEST_ANNOTATION: "later"}
    watcher["status"]["lastScan"] = {**LAST, "request": "later", "answered": 2}
    step = scan.progress(watcher)
    assert (step.done, step.answered, step.containers, step.request) == (True, 2, 2, "later")
    assert "scan mine (answered by a later request later)" in scan.result(watcher, "mine")
    watcher["status"]["lastScan"]["request"] = ""
    assert not scan.progress(watcher).done


def _fimd(name: str, node: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeName": node}}


ROW = {"namespace": "shop", "pod": "web-0", "podUID": "p1", "container": "app",
       "subject": "a" * 32, "paths": ["/cfg", "/etc/app"], "watched": True, "entries": 6,
       "files": 3, "dirs": 1, "symlinks": 1, "other": 1, "bytes": 3 << 20, "hashed": 2,
       "hashSkipped": 1, "updated": "2026-12-01T10:00:05.123456Z", "truncated": False}  # fmt: skip


def _answer(*rows: dict[str, Any], clipped: bool = False) -> str:
    return json.dumps({"node": "n1", "watcher": UID, "baselines": list(rows),
                       "shown": len(rows), "total": len(rows), "clipped": clipped})  # fmt: skip


def test_baseline_reads_every_fimd_and_shows_one_row_per_subject(cluster: Cluster) -> None:
    cluster.put("pods.json", {"items": [_fimd("fimd-a", "n1"), _fimd("fimd-b", "n2")]})
    gone = {**ROW, "pod": "", "podUID": "p9", "paths": None, "watched": False,
            "truncated": True, "pod\x1b": 1}  # fmt: skip
    del gone["paths"]
    (cluster.root / "fimd-a.baselines").write_text(_answer(ROW))
    (cluster.root / "fimd-b.baselines").write_text(_answer(gone, clipped=True))
    code, out, err = cluster.run("baseline", "w", "-n", "shop")
    assert (code, err) == (0, "kubectl fim baseline: n2 (fimd-b): clipped: 1 baselines shown, "
                              "more are stored\n")  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "FimWatcher shop/w: 2 stored baselines"
    assert lines[1].split() == list(baselines.HEADERS)
    assert lines[2].split() == ["n1", "web-0", "app", "/cfg,/etc/app", "6", "3", "1", "2",
                                "3Mi", "2", "1", "2026-12-01T10:00:05Z", "no"]  # fmt: skip
    assert lines[3].split()[:5] == ["n2", "(gone)", "p9", "app", "key"]
    assert lines[3].split()[-1] == "yes"
    raw = [c for c in cluster.calls() if "--raw" in c]
    assert sorted(c[2] for c in raw) == [
        f"/api/v1/namespaces/fim-system/pods/fimd-{x}:9464/proxy/baselines?watcher={UID}"
        for x in "ab"
    ]


def test_baseline_as_json_and_a_node_that_does_not_answer(cluster: Cluster) -> None:
    cluster.put("pods.json", {"items": [_fimd("fimd-a", "n1"), _fimd("fimd-b", "n2")]})
    (cluster.root / "fimd-a.baselines").write_text(_answer(ROW))
    code, out, err = cluster.run("baseline", "w", "-n", "shop", "-o", "json")
    assert code == 1  # incomplete: fimd-b did not answer
    assert "n2 (fimd-b): no answer: kubectl get --raw" in err
    doc = json.loads(out)
    assert (doc["watcher"], doc["uid"]) == ("shop/w", UID)
    assert doc["baselines"] == [{"node": "n1", **ROW}]
    assert doc["nodes"][0] == {"node": "n1", "pod": "fimd-a", "clipped": False}
    assert doc["nodes"][1]["error"].startswith("kubectl get --raw")


def test_baseline_errors(cluster: Cluster) -> None:
    code, _, err = cluster.run("baseline", "w", "-n", "shop")
    assert (code, err) == (1, "kubectl fim baseline: no fimd pods in namespace fim-system "
                              "(app.kubernetes.io/name=fimd)\n")  # fmt: skip
    cluster.put("fimwatcher-w.json", _watcher({"paths": ["/x"], "events": ["modify"]}))
    code, _, err = cluster.run("baseline", "w", "-n", "shop")
    assert code == 1
    assert "has no baseline subjects" in err
    assert baselines.parse("n", "p", "{").error.startswith("not JSON")
    assert baselines.parse("n", "p", "[]").error == "not a baseline summary"
