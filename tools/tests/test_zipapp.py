"""tools/bazel/zipapp.py: one executable file from Python sources, reproducibly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bazel import zipapp


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/hello.py").write_text("def greet() -> str:\n    return 'hello'\n")
    (tmp_path / "pkg/__main__.py").write_text(
        "import sys\nfrom pkg.hello import greet\nprint(greet(), *sys.argv[1:])\n"
    )
    return ["pkg/hello.py", "pkg/__main__.py", "pkg/__init__.py"]


def test_builds_one_executable_that_runs(tmp_path: Path, sources: list[str]) -> None:
    out = tmp_path / "hello"
    assert zipapp.main(["--output", str(out), "--main", "pkg/__main__.py", *sources]) == 0
    assert os.access(out, os.X_OK)
    assert out.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    argv = [sys.executable, str(out), "x"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "hello x\n")


def test_reproducible(sources: list[str]) -> None:
    first = zipapp.build(sources, "pkg/__main__.py")
    os.utime("pkg/hello.py", (0, 0))
    assert zipapp.build(list(reversed(sources)), "pkg/__main__.py") == first


def test_bad_arguments(sources: list[str]) -> None:
    with pytest.raises(ValueError, match="not among the sources"):
        zipapp.build(sources, "pkg/other.py")
    with pytest.raises(ValueError, match=r"expected a relative \.py path"):
        zipapp.build([*sources, "/etc/passwd"], "pkg/__main__.py")
