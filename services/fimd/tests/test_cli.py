"""fimd's command line: help text, flag checks, and where each budget comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.fimd.budget import DEFAULT_MAX_WATCHES
from services.fimd.capacity import CgroupMemory, MemoryReading
from services.fimd.cli import budgets, parse_args

BASE = ["--node-name", "n1", "--insecure"]


def test_help_lists_the_engine_and_budget_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--engines", "--max-dirs", "--max-watches", "--inotify-watch-budget"):
        assert flag in text
    assert "refused beyond 90% of it" in text


@pytest.mark.parametrize(
    "bad",
    [
        ["--engines", "0"],
        ["--max-dirs", "0"],
        ["--memory-budget", "lots"],
        ["--queue-messages", "0"],
    ],
)
def test_bad_flags_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([*BASE, *bad])
    assert exit_.value.code == 2


def _proc(tmp_path: Path, max_user_watches: int) -> str:
    inotify = tmp_path / "sys" / "fs" / "inotify"
    inotify.mkdir(parents=True)
    (inotify / "max_user_watches").write_text(f"{max_user_watches}\n")
    return str(tmp_path)


def test_budgets_default_to_the_node_and_the_cgroup(tmp_path: Path) -> None:
    args = parse_args([*BASE, "--proc-root", _proc(tmp_path, 8192)])
    cgroup = CgroupMemory("/sys/fs/cgroup/memory", 1)
    result = budgets(args, cgroup, MemoryReading(limit=1 << 30, working_set=0))
    assert (result.max_watches, result.inotify_watches) == (DEFAULT_MAX_WATCHES, 4096)
    assert result.inotify_watches_source == "half of fs.inotify.max_user_watches 8192"
    assert (result.memory_bytes, result.memory_source) == (
        1 << 30,
        "memory limit of cgroup /sys/fs/cgroup/memory",
    )
    # No limit and no flag: no memory budget.
    assert budgets(args, cgroup, MemoryReading(limit=None, working_set=0)).memory_bytes is None


def test_flags_override_the_budgets(tmp_path: Path) -> None:
    args = parse_args(
        [*BASE, "--proc-root", _proc(tmp_path, 8192), "--max-watches", "7",
         "--inotify-watch-budget", "100", "--memory-budget", "900Mi"]
    )  # fmt: skip
    result = budgets(args, None, None)
    assert (result.max_watches, result.inotify_watches, result.memory_bytes) == (
        7,
        100,
        900 << 20,
    )
    assert (result.inotify_watches_source, result.memory_source) == (
        "--inotify-watch-budget",
        "--memory-budget",
    )
