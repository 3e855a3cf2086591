"""`kubectl fim verify` (libs.auditstream.cli.main) on fimd's real log: after the scenarios
above ran, the log collected with `kubectl logs` verifies with the key ring Secret the fim-pki
Job created, and each of four tamperings of that collected log is detected on its own."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from libs.auditstream.cli import main
from tests.e2e import expect
from tests.e2e.kube import Kube
from tests.e2e.system import SYSTEM_NAMESPACE, FimSystem, ignore_missing
from tests.e2e.workloads import pod, running, watched, watcher


@dataclass(frozen=True)
class Collected:
    key: Path  # the Secret as `kubectl get secret -o json` prints it
    log: list[str]  # `kubectl logs` of the node's fimd pod, line by line
    node: str


@pytest.fixture(scope="module")
def collected(
    kube: Kube, system: FimSystem, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Collected]:
    """fimd's log after the scenarios above, plus event lines of its own (so that it has
    some whichever tests ran before), and the key ring Secret."""
    namespace = f"e2e-verify-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.apply(pod("audited", namespace, {"app": "audited"}, "mkdir -p /data && exec sleep 3600"))
    node = running(kube, namespace, "audited")["spec"]["nodeName"]
    kube.apply(
        watcher(
            "audited", namespace, {"app": "audited"}, [{"paths": ["/data"], "events": ["create"]}]
        )
    )
    watched(kube, namespace, "audited", pods=1)
    kube.exec(namespace, "audited", "for i in 1 2 3 4 5 6; do touch /data/f$i; done")
    expect.events(system, node, namespace, [("CREATE", f"/data/f{i}") for i in range(1, 7)])
    directory = tmp_path_factory.mktemp("verify")
    key = directory / "fim-audit-key.json"
    key.write_text(kube.run("get", "secret", "fim-audit-key", "-n", SYSTEM_NAMESPACE, "-o", "json"))
    log = kube.logs(SYSTEM_NAMESPACE, system.fimd_pod(node)).splitlines()
    yield Collected(key, log, node)
    ignore_missing(lambda: kube.run("delete", "namespace", namespace, "--wait=false"))


def run(
    collected: Collected, lines: list[str], path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]]]:
    path.write_text("\n".join(lines) + "\n")
    code = main(["--key", str(collected.key), "-o", "json", str(path)])
    return code, json.loads(capsys.readouterr().out)


def event_indexes(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith('{"kind":"event"')]


def test_the_collected_log_verifies(
    collected: Collected, kube: Kube, system: FimSystem, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, reports = run(collected, collected.log, tmp_path / "fimd.log", capsys)
    assert code == 0, reports
    [report] = reports
    assert (report["node"], report["ok"]) == (collected.node, True)
    assert report["verified"] >= len(collected.log) - 1  # the first may be unanchored
    assert report["heartbeats"] >= 1
    assert all(kid.startswith(f"{collected.node}/") for kid in report["kids"])
    assert len(event_indexes(collected.log)) >= 6
    # The same log with --timestamps and --prefix verifies too.
    pod = system.fimd_pod(collected.node)
    decorated = kube.logs(SYSTEM_NAMESPACE, pod, "--timestamps", "--prefix").splitlines()
    code, [again] = run(collected, decorated, tmp_path / "decorated.log", capsys)
    assert code == 0, again
    assert again["verified"] >= report["verified"]


def tampered(
    collected: Collected,
    change: Callable[[list[str], int], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Any]:
    lines = list(collected.log)
    events = [i for i in event_indexes(lines) if i + 1 < len(lines)]
    middle = events[len(events) // 2]
    change(lines, middle)
    code, [report] = run(collected, lines, tmp_path / "tampered.log", capsys)
    assert code == 1, report
    assert not report["ok"]
    findings: dict[str, Any] = report["findings"]
    return findings


def test_one_deleted_line_is_detected(
    collected: Collected, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def delete(lines: list[str], i: int) -> None:
        del lines[i]

    findings = tampered(collected, delete, tmp_path, capsys)
    assert list(findings) == ["gap"]
    assert findings["gap"]["count"] == 1


def test_one_edited_line_is_detected(
    collected: Collected, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(lines: list[str], i: int) -> None:
        doc = json.loads(lines[i])
        lines[i] = lines[i].replace(
            json.dumps(doc["path"], ensure_ascii=False),
            json.dumps(doc["path"] + "-x", ensure_ascii=False),
            1,
        )
        assert lines[i] != collected.log[i]

    findings = tampered(collected, edit, tmp_path, capsys)
    assert list(findings) == ["altered"]
    assert findings["altered"]["count"] == 1


def test_one_reordered_pair_is_detected(
    collected: Collected, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def swap(lines: list[str], i: int) -> None:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]

    findings = tampered(collected, swap, tmp_path, capsys)
    assert list(findings) == ["reordered"]


def test_one_inserted_line_is_detected(
    collected: Collected, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def insert(lines: list[str], i: int) -> None:
        # A forged event with the seal of a real one: same seq, other content.
        lines.insert(i + 1, lines[i].replace('"event":"', '"event":"X', 1))

    findings = tampered(collected, insert, tmp_path, capsys)
    assert list(findings) == ["inserted"]
    assert findings["inserted"]["count"] == 1
