"""A container-like process for integration tests and benchmarks: own mount namespace with a
private tmpfs, inside a real kubepods cgroup, that writes files on command.

The tmpfs is mounted over `<workdir>/root` inside the process's mount namespace only, so a
file it writes is visible at that path from inside the "container" (and through
/proc/<pid>/root), never on the host. Commands on stdin: `w <path> [count]` appends a line to
the file `count` times (open/append/close each) and answers `ok <seconds>`; `b` and `l` are
the paced benchmark writers (see the script). EOF ends the process.
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
import os, subprocess, sys, time
procs, mountpoint = sys.argv[1], sys.argv[2]
for path in procs.split(","):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
subprocess.run(["mount", "-t", "tmpfs", "fimd-test", mountpoint], check=True)
os.mkdir(os.path.join(mountpoint, "data"))
print("ready", flush=True)

def paced(count, rate):
    start = time.monotonic()
    for i in range(count):
        ahead = start + i / rate - time.monotonic() if rate else 0
        if ahead > 0.001:
            time.sleep(ahead)
        yield i
    print("ok", time.monotonic() - start, flush=True)

for line in sys.stdin:
    cmd, path, *args = line.split()
    if cmd == "w":  # w PATH [COUNT]: append COUNT times
        for _ in paced(int(args[0]) if args else 1, 0):
            with open(path, "a") as f:
                f.write("x\n")
    elif cmd == "b":  # b DIR COUNT RATE NFILES: appends rotating over NFILES files
        count, rate, nfiles = map(int, args)
        for i in paced(count, rate):
            with open(f"{path}/f{i % nfiles}", "a") as f:
                f.write("x\n")
    elif cmd == "h":  # h DIR COUNT RATE NFILES SIZE: rewrites SIZE bytes, rotating files
        count, rate, nfiles, size = map(int, args)
        block = os.urandom(size)
        for i in paced(count, rate):
            with open(f"{path}/f{i % nfiles}", "wb") as f:
                f.write(i.to_bytes(8, "little") + block[8:])
    elif cmd == "l":  # l DIR COUNT RATE: new files named by their creation time (ns)
        count, rate = map(int, args)
        for _ in paced(count, rate):
            open(f"{path}/{time.time_ns()}", "w").close()
"""


class Container:
    """Start with `start()`, stop with `close()` (also removes its cgroup)."""

    def __init__(self, workdir: Path, qos: str = "besteffort", *, cpu: bool = False) -> None:
        """`cpu`: also join the QoS class's cpu cgroup with the cpu.shares a kubelet gives it
        (BestEffort: 2), so a benchmark's writers compete with fimd for CPU as pods do."""
        self.id = secrets.token_hex(32)
        self.container_id = f"containerd://{self.id}"
        self.root = workdir / "root"
        self.root.mkdir(parents=True)
        self._qos_path = "kubepods" if qos == "guaranteed" else f"kubepods/{qos}"
        self._stack = ExitStack()
        self.proc: subprocess.Popen[str] | None = None
        self._cgroup = Path()
        self._cpu_cgroup: Path | None = None
        self._cpu = cpu

    def start(self) -> Container:
        leaf = f"{self._qos_path}/pod{uuid.uuid4()}/{self.id}"
        self._cgroup = self._stack.enter_context(cgroup("pids", leaf))
        if self._cpu:
            self._cpu_cgroup = self._stack.enter_context(cgroup("cpu", leaf))
            shares = {"kubepods/besteffort": 2}.get(self._qos_path)
            if shares is not None:
                (self._cpu_cgroup.parent.parent / "cpu.shares").write_text(str(shares))
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
        procs = [self._cgroup / "cgroup.procs"]
        if self._cpu_cgroup is not None:
            procs.append(self._cpu_cgroup / "cgroup.procs")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c",
             _SCRIPT, ",".join(map(str, procs)), str(self.root)],
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
        self.command(f"w {path} {count}")
        self.result()

    def command(self, line: str) -> None:
        """Sends one command without waiting for it (see `result`)."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self) -> float:
        """Waits for the running command; returns its duration in seconds."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        answer, seconds = self.proc.stdout.readline().split()
        assert answer == "ok"
        return float(seconds)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.stdout.close()  # type: ignore[union-attr]
            self.proc = None
        self._stack.close()
