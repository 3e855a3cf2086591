"""Every Python file of the repository is type-checked and linted.

The lint tests see only the packages listed in FIRST_PARTY (tools/lint/BUILD.bazel); a
package missing there would silently escape mypy and ruff. This test compares that list
with the files git knows in the work tree. It reads the work tree, which is no declared
input, so its target is tagged to run unsandboxed and never from the cache.
"""

import subprocess
import sys
from pathlib import Path


def work_tree() -> Path:
    # Unsandboxed runfiles are symlinks into the source tree.
    return Path("pyproject.toml").resolve().parent


def python_files(root: Path) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {f for f in listed if (root / f).exists()}


def main() -> int:
    missing = sorted(python_files(work_tree()) - set(sys.argv[1:]))
    for path in missing:
        print(f"{path}: not covered by mypy/ruff; add its package's py_files to FIRST_PARTY")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
