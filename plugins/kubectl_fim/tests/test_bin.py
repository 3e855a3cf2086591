"""The built `kubectl-fim` file runs: through its shebang, and with `python3 -S` (no
site-packages, so it needs nothing but the standard library)."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

BIN = Path(os.environ.get("TEST_SRCDIR", "")) / "fim_k8s/plugins/kubectl_fim/kubectl-fim"


def test_help_through_the_shebang() -> None:
    assert BIN.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(BIN, os.X_OK)
    done = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: kubectl fim" in done.stdout
    for command in ("events", "status", "verify"):
        assert command in done.stdout


def test_standard_library_only() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run(
        ["python3", "-S", "-I", str(BIN), "events", "--event", "nosuch", "--kubectl=/none"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "unknown event name 'nosuch'" in done.stderr
    verify = subprocess.run(
        ["python3", "-S", "-I", str(BIN), "verify", "--help"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "usage: kubectl fim verify" in verify.stdout
    names = zipfile.ZipFile(BIN).namelist()
    assert "__main__.py" in names
    assert "plugins/kubectl_fim/cli.py" in names
    assert not [n for n in names if "/tests/" in n]
