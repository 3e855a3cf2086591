"""`kubectl fim verify` runs libs.auditstream's verifier with the plugin's kubectl flags."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import pytest

from libs.auditstream.tests.streams import boot_lines, ring
from plugins.kubectl_fim import cli

FAKE = Path(__file__).with_name("fake_kubectl.py")
RING = ring()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "fimd.log"
    path.write_bytes(b"\n".join(boot_lines("n1", 5, RING)) + b"\n")
    return path


def test_key_file_intact_and_tampered(
    tmp_path: Path, log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "keys.json"
    key.write_bytes(RING.dumps())
    assert cli.main(["verify", "--key", str(key), str(log)]) == 0
    assert "5 lines verified in 1 boots; 0 failed" in capsys.readouterr().out
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + b"\n")
    assert cli.main(["verify", "--key", str(key), "-o", "json", str(log)]) == 1
    [report] = json.loads(capsys.readouterr().out)
    assert report["findings"]


def test_secret_read_with_the_plugins_kubectl(
    tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECTL", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("FAKE_KUBECTL_DIR", str(tmp_path))
    secret = {"kind": "Secret", "data": {"keys.json": base64.b64encode(RING.dumps()).decode()}}
    (tmp_path / "secret-fim-audit-key.json").write_text(json.dumps(secret))
    wrapper = tmp_path / "kubectl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    argv = ["--kubectl", str(wrapper), "--kubeconfig=/k", "verify", str(log)]
    assert cli.main(argv, io.StringIO(), io.StringIO()) == 0
    call = json.loads((tmp_path / "calls.log").read_text().splitlines()[-1])
    assert call[:3] == ["get", "secret", "fim-audit-key"]


def test_flags_verify_cannot_honour_are_refused() -> None:
    err = io.StringIO()
    assert cli.main(["--context=prod", "verify", "x.log"], io.StringIO(), err) == 2
    assert "--context cannot be passed on to verify" in err.getvalue()
