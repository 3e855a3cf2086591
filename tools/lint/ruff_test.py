"""`ruff check` and `ruff format --check` over all first-party code, as a Bazel test."""

import subprocess
import sys

from ruff.__main__ import find_ruff_bin


def ruff(*args: str) -> int:
    cmd = [find_ruff_bin(), *args, "--no-cache", "--config", "pyproject.toml"]
    return subprocess.run([*cmd, *sys.argv[1:]], check=False).returncode


def main() -> int:
    lint = ruff("check")
    fmt = ruff("format", "--check")
    return lint or fmt


if __name__ == "__main__":
    sys.exit(main())
