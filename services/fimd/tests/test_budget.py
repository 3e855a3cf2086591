"""Admission control (pure) and the cgroup reader behind it, on fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.fimd.budget import MIB, Budgets, Exhausted, Usage, check, parse_bytes
from services.fimd.capacity import CgroupMemory, MemoryReading

BUDGETS = Budgets(
    max_watches=3,
    inotify_watches=10,
    inotify_watches_source="half of fs.inotify.max_user_watches 20",
    memory_bytes=100 * MIB,
    memory_source="--memory-budget",
    watch_cost=4 * MIB,
)


def _usage(**changes: int | None) -> Usage:
    values: dict[str, int | None] = {
        "watches": 1,
        "inotify_watches": 5,
        "engines_usable": 2,
        "engines": 2,
        "working_set": 50 * MIB,
        "max_user_instances": 128,
    }
    values.update(changes)
    return Usage(**values)  # type: ignore[arg-type]


def test_within_every_budget_is_admitted() -> None:
    assert check(BUDGETS, _usage(), new_watch=True) is None
    # Exactly at the memory threshold (90% of 100 MiB minus one watch) is still fine.
    assert check(BUDGETS, _usage(working_set=86 * MIB), new_watch=True) is None


@pytest.mark.parametrize(
    ("usage", "budget", "message"),
    [
        (
            _usage(engines_usable=0),
            "instances",
            "NodeCapacity: inotify instances: none of the 2 engines is running with an "
            "inotify instance; fs.inotify.max_user_instances 128 is shared by every root "
            "process on the node",
        ),
        (
            _usage(watches=3),
            "watches",
            "NodeCapacity: watches: 3 of 3 in use (budget: --max-watches 3)",
        ),
        (
            _usage(inotify_watches=10),
            "inotify_watches",
            "NodeCapacity: inotify watches: 10 of 10 in use "
            "(budget: half of fs.inotify.max_user_watches 20)",
        ),
        (
            _usage(working_set=86 * MIB + 1),
            "memory",
            "NodeCapacity: memory: working set 86 MiB + 4.0 MiB for a watch would exceed 90% "
            "of the 100 MiB budget (--memory-budget)",
        ),
    ],
)
def test_each_budget_refuses_with_its_numbers(usage: Usage, budget: str, message: str) -> None:
    exhausted = check(BUDGETS, usage, new_watch=True)
    assert isinstance(exhausted, Exhausted)
    assert (exhausted.budget, str(exhausted)) == (budget, message)


def test_an_update_is_not_counted_as_another_watch() -> None:
    assert check(BUDGETS, _usage(watches=3), new_watch=False) is None
    # ... but it briefly runs twice, so the other budgets apply.
    refused = check(BUDGETS, _usage(watches=3, inotify_watches=10), new_watch=False)
    assert refused is not None
    assert refused.budget == "inotify_watches"


def test_unknown_or_absent_budgets_are_not_checked() -> None:
    unlimited = Budgets(max_watches=3, inotify_watches=0, memory_bytes=None)
    assert (
        check(unlimited, _usage(inotify_watches=10**6, working_set=10**12), new_watch=True) is None
    )
    assert check(BUDGETS, _usage(working_set=None), new_watch=True) is None


def test_byte_counts() -> None:
    assert parse_bytes("1073741824") == 1 << 30
    assert parse_bytes("900Mi") == 900 * MIB
    assert parse_bytes("2Gi") == 2 << 30
    assert parse_bytes("5M") == 5_000_000
    for bad in ("", "Mi", "-1", "1.5Gi", "10MB"):
        with pytest.raises(ValueError, match="not a byte count"):
            parse_bytes(bad)


# --- capacity.CgroupMemory -----------------------------------------------------------

V1_STAT = "cache 10\nhierarchical_memory_limit {limit}\ntotal_inactive_file {inactive}\n"


def _v1(directory: Path, limit: int, usage: int, inactive: int, hierarchical: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (directory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (directory / "memory.stat").write_text(V1_STAT.format(limit=hierarchical, inactive=inactive))


def _self(tmp_path: Path, text: str) -> str:
    path = tmp_path / "self-cgroup"
    path.write_text(text)
    return str(path)


UNLIMITED_V1 = 9223372036854771712


def test_v1_cgroup_by_its_path(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _v1(root / "memory" / "kubepods" / "podx" / "c1", UNLIMITED_V1, 700, 200, 500)
    found = CgroupMemory.find(
        _self(tmp_path, "12:pids:/kubepods/podx/c1\n4:memory:/kubepods/podx/c1\n0::/\n"),
        str(root),
    )
    assert found is not None
    assert (found.version, found.directory) == (1, str(root / "memory/kubepods/podx/c1"))
    # The pod's (a parent's) limit counts; the working set leaves inactive page cache out.
    assert found.read() == MemoryReading(limit=500, working_set=500)


def test_v1_container_sees_only_its_own_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _v1(root / "memory", 1 << 30, 100, 0, UNLIMITED_V1)
    found = CgroupMemory.find(_self(tmp_path, "4:memory:/kubepods/podx/c1\n"), str(root))
    assert found is not None
    assert found.directory == str(root / "memory")
    assert found.read() == MemoryReading(limit=1 << 30, working_set=100)


def test_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _v1(root / "memory", UNLIMITED_V1, 100, 10, UNLIMITED_V1)
    found = CgroupMemory.find(_self(tmp_path, "4:memory:/\n"), str(root))
    assert found is not None
    assert found.read() == MemoryReading(limit=None, working_set=90)


def test_v2_limit_is_the_smallest_of_the_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    pod = root / "kubepods.slice" / "pod.slice"
    ctr = pod / "cri-containerd-x.scope"
    ctr.mkdir(parents=True)
    (root / "kubepods.slice" / "memory.max").write_text("max\n")
    (pod / "memory.max").write_text("2000\n")
    (ctr / "memory.max").write_text("max\n")
    (ctr / "memory.current").write_text("1500\n")
    (ctr / "memory.stat").write_text("anon 1\ninactive_file 300\nactive_file 2\n")
    found = CgroupMemory.find(
        _self(tmp_path, "0::/kubepods.slice/pod.slice/cri-containerd-x.scope\n"), str(root)
    )
    assert found is not None
    assert found.version == 2
    assert found.read() == MemoryReading(limit=2000, working_set=1200)


def test_no_memory_cgroup(tmp_path: Path) -> None:
    assert CgroupMemory.find(str(tmp_path / "missing"), str(tmp_path)) is None
    assert CgroupMemory.find(_self(tmp_path, "4:memory:/x\n"), str(tmp_path / "none")) is None
    gone = CgroupMemory(str(tmp_path / "gone"), 1)
    assert gone.read() is None
