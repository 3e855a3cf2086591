"""Real cgroups for tests: create a container-like cgroup, run a process tree in it, clean up.

Needs root and the host's cgroup hierarchies (tests using it are tagged no-sandbox).
Directories are removed bottom-up in teardown: the container's own, and then each parent
below the hierarchy's root that is empty by then (the last container of a test removes the
shared `TEST_PARENT/kubepods/...`).

Hierarchies are found where the host really mounts them (`mounted`): a v1 hierarchy by its
controller (`pids`, `cpu`, ...), the v2 one as `unified`, wherever it is (/sys/fs/cgroup on a
pure v2 host, /sys/fs/cgroup/unified on a hybrid one). A hierarchy the host does not mount is
never faked (a directory named `pids` in the v2 tree would be a v2 cgroup): `cgroup` raises
`NotMountedError` and the test says which version it could not exercise.

Test cgroups live below `TEST_PARENT`, never at the top-level `kubepods`: a real kubelet on
this machine (the cluster tests) owns that one and kills the processes of pod cgroups it
does not know. Nested kubepods trees are realistic too (kind, or a node in a container).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEST_PARENT = f"fimd-test-{os.getpid()}"
UNIFIED = "unified"


class NotMountedError(LookupError):
    """The host mounts no such cgroup hierarchy."""


def mounted(mountinfo: str | None = None) -> dict[str, tuple[Path, int]]:
    """The cgroup hierarchies the host mounts: controller (or `name=...`) of each v1 one, and
    UNIFIED for the v2 one -> (mount point, version)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    found: dict[str, tuple[Path, int]] = {}
    for line in mountinfo.splitlines():
        mount_fields, _, fs_fields = line.partition(" - ")
        fstype, _source, options = [*fs_fields.split(), "", "", ""][:3]
        point = Path(mount_fields.split()[4])
        if fstype == "cgroup2":
            found[UNIFIED] = (point, 2)
        elif fstype == "cgroup":
            for option in options.split(","):
                if option not in ("rw", "ro") and not option.startswith("release_agent="):
                    found[option] = (point, 1)
    return found


def hierarchy_root(hierarchy: str) -> tuple[Path, int]:
    """(mount point, version) of `hierarchy`; NotMountedError if the host has no such mount."""
    try:
        return mounted()[hierarchy]
    except KeyError:
        raise NotMountedError(f"this host mounts no cgroup hierarchy {hierarchy!r}") from None


@contextmanager
def cgroup(hierarchy: str, relative: str) -> Iterator[Path]:
    """Creates <mount of hierarchy>/<TEST_PARENT>/<relative> (and missing parents)."""
    base, _version = hierarchy_root(hierarchy)
    relative = f"{TEST_PARENT}/{relative}"
    created: list[Path] = []
    path = base
    for part in relative.strip("/").split("/"):
        path = path / part
        if not path.exists():
            path.mkdir()
            created.append(path)
    try:
        yield path
    finally:
        if path in created:
            for _ in range(50):  # killed processes leave the cgroup asynchronously
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        # Parents are shared by other containers of the test: whoever leaves last removes
        # them (one try each; a parent still in use is not empty).
        parent = path.parent
        while parent != base:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def run_in(cgroup_dirs: list[Path], command: str) -> subprocess.Popen[bytes]:
    """Starts `sh -c command` after moving the shell into every cgroup in `cgroup_dirs`;
    the command runs only once the move is done (its children inherit the cgroups)."""
    moves = " && ".join(f"echo $$ > {d}/cgroup.procs" for d in cgroup_dirs)
    return subprocess.Popen(["sh", "-c", f"{moves} && exec sh -c '{command}'"])


def wait_members(cgroup_dir: Path, count: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(p) for p in (cgroup_dir / "cgroup.procs").read_text().split()]
        if len(pids) >= count:
            return sorted(pids)
        time.sleep(0.01)
    raise AssertionError(f"{cgroup_dir} has fewer than {count} processes")


def stop(proc: subprocess.Popen[bytes], cgroup_dir: Path | None = None) -> None:
    """Kills the shell started by run_in and its children; waits until `cgroup_dir` is
    empty (killed children leave it once init has reaped them)."""
    for child in _children(proc.pid):
        os.kill(child, 9)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while cgroup_dir is not None and (cgroup_dir / "cgroup.procs").read_text().strip():
        assert time.monotonic() < deadline, f"{cgroup_dir} did not empty"
        time.sleep(0.01)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
