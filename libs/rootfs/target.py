"""A pinned target process: its /proc directory, its root and a pidfd, checked to be the
process that was resolved (PID reuse cannot swap it for another one)."""

from __future__ import annotations

import os

import attrs

from libs.fimnotify_api.identity import ProcessIdentity, mismatch


class TargetGoneError(Exception):
    """The target process does not exist (any more)."""


class TargetMismatchError(Exception):
    """The PID belongs to another process than the one fimd resolved."""


@attrs.define
class Target:
    """Descriptors pinning the target process: its /proc dir, root, and a pidfd.

    The /proc/<pid> directory descriptor is opened first and checked again after the root
    and pidfd are opened, so a recycled PID can never be mistaken for the target. With an
    identity (start time, cgroup leaf names) the process is also checked to be the one fimd
    resolved, before and after the root is opened (`libs.fimnotify_api.identity`).
    """

    pid: int
    piddir: int
    root: int
    pidfd: int | None

    @classmethod
    def open(cls, proc_root: str, pid: int, identity: ProcessIdentity | None = None) -> Target:
        identity = identity or ProcessIdentity()
        try:
            piddir = os.open(f"{proc_root}/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TargetGoneError(f"process {pid} not found in {proc_root}") from None
        try:
            _check(piddir, pid, identity)
        except BaseException:
            os.close(piddir)
            raise
        try:
            root = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=piddir)
        except (FileNotFoundError, ProcessLookupError):  # a zombie has no root any more
            os.close(piddir)
            raise TargetGoneError(f"process {pid} has exited") from None
        pidfd = _pidfd(pid) if os.path.realpath(proc_root) == "/proc" else None
        target = cls(pid, piddir, root, pidfd)
        if not target.alive():
            target.close()
            raise TargetGoneError(f"process {pid} exited during start")
        try:
            _check(piddir, pid, identity)
        except BaseException:
            target.close()
            raise
        return target

    def alive(self) -> bool:
        """True while the pinned process exists (its /proc dir still answers)."""
        try:
            os.stat("stat", dir_fd=self.piddir)
        except (ProcessLookupError, FileNotFoundError):
            return False
        return True

    def close(self) -> None:
        for fd in (self.piddir, self.root, self.pidfd):
            if fd is not None:
                os.close(fd)


def _read(piddir: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=piddir)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def _check(piddir: int, pid: int, identity: ProcessIdentity) -> None:
    """Raises TargetMismatchError unless the pinned process is the resolved one."""
    if not identity.start_time and not identity.cgroup_leaves:
        return
    try:
        stat, cgroups = _read(piddir, "stat"), _read(piddir, "cgroup")
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGoneError(f"process {pid} has exited") from None
    why = mismatch(identity, stat, cgroups.decode("utf-8", "replace"))
    if why:
        raise TargetMismatchError(f"process {pid}: {why}")


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None
