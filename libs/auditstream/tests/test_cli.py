"""`main(argv) -> int`: the entry point `kubectl fim verify` calls."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from libs.auditstream.cli import main
from libs.auditstream.tests.streams import boot_lines, ring

RING = ring(2)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_bytes(RING.dumps())
    return path


def write_log(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_intact_log_exits_0(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "fimd.log", boot_lines("n1", 12, RING))
    assert main(["--key", str(key_file), log]) == 0
    out = capsys.readouterr().out
    assert ": OK: 12 lines verified; seq 1..12; 1 heartbeats" in out
    assert out.endswith("12 lines verified in 1 boots; 0 failed\n")


def test_tampered_log_exits_1_and_json_names_the_finding(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = boot_lines("n1", 12, RING)
    del lines[3]
    log = write_log(tmp_path / "fimd.log", lines)
    assert main(["--key", str(tmp_path), "-o", "json", log]) == 1
    [report] = json.loads(capsys.readouterr().out)
    assert report["findings"] == {"gap": {"count": 1, "first": "after seq 3: 1 missing"}}


def test_secret_json_as_key(tmp_path: Path) -> None:
    secret = {"kind": "Secret", "data": {"keys.json": base64.b64encode(RING.dumps()).decode()}}
    key = tmp_path / "secret.json"
    key.write_text(json.dumps(secret))
    log = write_log(tmp_path / "fimd.log", boot_lines("n1", 3, RING))
    assert main(["--key", str(key), log]) == 0


def test_unusable_key_or_input_exits_2(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    log = write_log(tmp_path / "fimd.log", boot_lines("n1", 3, RING))
    assert main(["--key", str(bad), log]) == 2
    assert main(["--key", str(key_file), str(tmp_path / "missing.log")]) == 2
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert main(["--key", str(key_file), str(empty)]) == 2
    assert "verify: " in capsys.readouterr().err
