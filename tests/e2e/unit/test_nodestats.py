"""tests.e2e.nodestats against fake cgroup trees, and its inotify count against this process."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import nodestats

UID = "0b8e7a1c-1111-2222-3333-444455556666"
SYSTEMD_UID = UID.replace("-", "_")
CONTAINER = "a" * 64


def _cgroup(path: Path, usage: int, inactive: int, pids: list[int]) -> Path:
    path.mkdir(parents=True)
    (path / "memory.usage_in_bytes").write_text(f"{usage}\n")
    stat = f"cache 5\ninactive_file 1\ntotal_cache 9\ntotal_inactive_file {inactive}\n"
    (path / "memory.stat").write_text(stat)
    (path / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
    return path


@pytest.mark.parametrize(
    "layout",
    [
        f"kubepods/burstable/pod{UID}",
        f"kubepods/besteffort/pod{UID}",
        f"kubepods/pod{UID}",
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice",
    ],
)
def test_pod_cgroup_is_found_in_every_qos_layout(tmp_path: Path, layout: str) -> None:
    _cgroup(tmp_path / layout, 1, 0, [])
    _cgroup(tmp_path / "kubepods/burstable/podother", 1, 0, [])
    assert nodestats.pod_cgroup(UID, tmp_path) == tmp_path / layout
    assert nodestats.pod_cgroup("missing", tmp_path) is None


def test_working_set_is_usage_minus_total_inactive_file(tmp_path: Path) -> None:
    pod = _cgroup(tmp_path / "pod", 100 * nodestats.MIB, 30 * nodestats.MIB, [])
    measured = nodestats.memory(pod)
    assert measured == nodestats.Memory(100 * nodestats.MIB, 30 * nodestats.MIB)
    assert measured.working_set == 70 * nodestats.MIB
    assert nodestats.Memory(5, 9).working_set == 0


def test_fimd_pod_finds_the_container_and_every_process_below(tmp_path: Path) -> None:
    pod = _cgroup(tmp_path / f"kubepods/burstable/pod{UID}", 1, 0, [])
    _cgroup(pod / ("b" * 64), 1, 0, [os.getppid()])  # the sandbox
    _cgroup(pod / CONTAINER, 1, 0, [os.getpid()])
    found = nodestats.fimd_pod(UID, f"containerd://{CONTAINER}", tmp_path)
    assert found == nodestats.FimdPod(pod, pod / CONTAINER)
    assert nodestats.cgroup_pids(pod) == sorted({os.getpid(), os.getppid()})
    sample = found.sample()
    assert sample.processes == 1
    assert sample.rss == nodestats.rss(os.getpid()) > 0


@pytest.fixture
def inotify_fd() -> Iterator[int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_CLOEXEC))
    assert fd >= 0, os.strerror(ctypes.get_errno())
    yield fd
    os.close(fd)


def test_inotify_instances_of_this_process_are_counted(inotify_fd: int) -> None:
    held = nodestats.inotify_instances([os.getpid()])
    assert held >= 1
    duplicate = os.dup(inotify_fd)  # counted too: the contract counts fds, as /proc shows them
    try:
        assert nodestats.inotify_instances([os.getpid()]) == held + 1
    finally:
        os.close(duplicate)
    assert nodestats.inotify_instances([os.getpid()]) == held
    assert nodestats.inotify_instances([2**22 + 1]) == 0  # no such process


def test_host_sysctls_cover_inotify_and_mqueue() -> None:
    values = nodestats.host_sysctls()
    assert "fs.inotify.max_user_instances" in values
    assert "fs.mqueue.queues_max" in values
    assert all(name.startswith(("fs.inotify.", "fs.mqueue.")) for name in values)


def test_sampler_keeps_peaks(tmp_path: Path) -> None:
    pod = _cgroup(tmp_path / "pod", 50, 10, [os.getpid()])
    sampler = nodestats.PeakSampler(nodestats.FimdPod(pod, pod), interval=0.01)
    sampler.take()
    (pod / "memory.usage_in_bytes").write_text("20\n")
    assert sampler.take().working_set == 10
    assert sampler.peak_working_set == 40
    assert sampler.samples == 2
    sampler.start()
    sampler.stop()
    assert sampler.samples >= 3
    assert not sampler.errors
