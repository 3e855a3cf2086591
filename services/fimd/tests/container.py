"""A container-like process for integration tests and benchmarks: own mount namespace with a
private tmpfs, inside a real kubepods cgroup, that writes files on command.

The tmpfs is mounted over `<workdir>/root` inside the process's mount namespace only, so a
file it writes is visible at that path from inside the "container" (and through
/proc/<pid>/root), never on the host. Commands on stdin: `w <path> [count]` appends a line to
the file `count` times (open/append/close each) and answers `ok`; EOF ends the process.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

from services.fimd.tests.cgroups import cgroup

_SCRIPT = r"""
import os, subprocess, sys
procs, mountpoint = sys.argv[1], sys.argv[2]
with open(procs, "w") as f:
    f.write(str(os.getpid()))
subprocess.run(["mount", "-t", "tmpfs", "fimd-test", mountpoint], check=True)
os.mkdir(os.path.join(mountpoint, "data"))
print("ready", flush=True)
for line in sys.stdin:
    cmd, path, *count = line.split()
    for _ in range(int(count[0]) if count else 1):
        with open(path, "a") as f:
            f.write("x\n")
    print("ok", flush=True)
"""


class Container:
    """Start with `start()`, stop with `close()` (also removes its cgroup)."""

    def __init__(self, workdir: Path, qos: str = "besteffort") -> None:
        self.id = secrets.token_hex(32)
        self.container_id = f"containerd://{self.id}"
        self.root = workdir / "root"
        self.root.mkdir(parents=True)
        self._qos_path = "kubepods" if qos == "guaranteed" else f"kubepods/{qos}"
        self._stack = ExitStack()
        self.proc: subprocess.Popen[str] | None = None
        self._cgroup = Path()

    def start(self) -> Container:
        self._cgroup = self._stack.enter_context(
            cgroup("pids", f"{self._qos_path}/pod{uuid.uuid4()}/{self.id}")
        )
        self._spawn()
        return self

    def replace(self) -> None:
        """A new process takes over the container (same cgroup, same ID); the old one exits,
        as when a container's main process is restarted in place."""
        old = self.proc
        self._spawn()
        assert old is not None
        old.kill()
        old.wait()
        for stream in (old.stdin, old.stdout):
            assert stream is not None
            stream.close()

    def _spawn(self) -> None:
        directory = self._cgroup
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c",
             _SCRIPT, str(directory / "cgroup.procs"), str(self.root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "ready\n"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write(self, path: str, count: int = 1) -> None:
        """Appends to `path` (inside the container) `count` times; returns when done."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"w {path} {count}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.stdout.close()  # type: ignore[union-attr]
            self.proc = None
        self._stack.close()
