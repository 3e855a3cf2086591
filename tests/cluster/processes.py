"""Starting and stopping cluster components by PID.

Every component is started in its own session (so a terminal's Ctrl-C reaches only the
harness, which then stops components in order), inside the network guard's cgroup (joined by
a tiny shell before it execs the binary, so not even its first packet escapes the guard), with
its output in a log file. A record of each process (PID plus its kernel start time) is kept
in the cluster's state file, so a different Python process (`python -m tests.cluster down`)
can stop exactly those processes and never a later process that reused the PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# `$0` is the cgroup.procs file to join; the rest is the command to exec.
_JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'


@dataclass(frozen=True)
class ProcessRecord:
    """A started component: enough to find and stop it from any process."""

    name: str
    pid: int
    start_time: int
    log: str

    def alive(self) -> bool:
        """True while the PID still belongs to the process we started (not a reuse)."""
        return _start_time(self.pid) == self.start_time

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns when the process is gone."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        if not _wait_gone(self, timeout):
            os.kill(self.pid, signal.SIGKILL)
            if not _wait_gone(self, 10.0):
                raise RuntimeError(f"{self.name} (pid {self.pid}) survived SIGKILL")


def start(
    name: str,
    argv: list[str],
    log: Path,
    *,
    cgroup_procs: Path,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Starts argv detached from the caller's session, in the cgroup, logging to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _JOIN_CGROUP, str(cgroup_procs), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc, ProcessRecord(name, proc.pid, _start_time(proc.pid) or 0, str(log))


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if it's gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() remains
        return None
    return int(fields[19])


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not record.alive():
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    """Collects the exit status if the process is our child (so it doesn't stay a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
