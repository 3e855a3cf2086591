"""fimd's pod seen from the node: memory working set, inotify instances, processes; and the
host's inotify and message-queue sysctls.

Only meaningful where this process runs on the node itself as root (the local cluster of
tests/cluster). That node runs cgroup v1 with the kubelet's cgroupfs driver, so a pod's
memory cgroup is `/sys/fs/cgroup/memory/kubepods[/burstable|/besteffort]/pod<uid>` and each
of its containers (the pause sandbox included) a child named by its container ID. The systemd
driver's `...-pod<uid with underscores>.slice` is found too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
PROC = Path("/proc")
# The sysctls fim-k8s must never change on a node (issue 10): fs.inotify.*, fs.mqueue.*.
SYSCTL_DIRS = ("fs/inotify", "fs/mqueue")
INOTIFY_LINK = "anon_inode:inotify"
MIB = 1024 * 1024


def host_sysctls(proc: Path = PROC) -> dict[str, str]:
    """Every fs.inotify.* and fs.mqueue.* sysctl of this machine (host namespaces)."""
    values: dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for path in sorted((proc / "sys" / directory).iterdir()):
            name = f"{directory}/{path.name}".replace("/", ".")
            values[name] = path.read_text().strip()
    return values


def pod_cgroup(uid: str, root: Path = MEMORY_ROOT) -> Path | None:
    """The memory cgroup of the pod with this UID, or None if it is not on this machine."""
    patterns = [
        f"kubepods/pod{uid}",
        f"kubepods/*/pod{uid}",
        f"kubepods.slice/*pod{uid.replace('-', '_')}.slice",
        f"kubepods.slice/*/*pod{uid.replace('-', '_')}.slice",
    ]
    for pattern in patterns:
        found = sorted(path for path in root.glob(pattern) if path.is_dir())
        if found:
            return found[0]
    return None


@dataclass(frozen=True)
class Memory:
    """A memory cgroup's usage and inactive page cache, in bytes."""

    usage: int
    inactive_file: int

    @property
    def working_set(self) -> int:
        """What the kubelet and cAdvisor call the working set (what gets a pod OOM-killed)."""
        return max(0, self.usage - self.inactive_file)


def memory(cgroup: Path) -> Memory:
    """usage_in_bytes and the hierarchical total_inactive_file of a cgroup v1 memory cgroup."""
    usage = int((cgroup / "memory.usage_in_bytes").read_text())
    inactive = 0
    for line in (cgroup / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "total_inactive_file":
            inactive = int(value)
    return Memory(usage, inactive)


def cgroup_pids(cgroup: Path) -> list[int]:
    """Processes in the cgroup and every cgroup below it."""
    pids: set[int] = set()
    for directory in [cgroup, *(p for p in cgroup.rglob("*") if p.is_dir())]:
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
    return sorted(pids)


def inotify_instances(pids: Iterable[int], proc: Path = PROC) -> int:
    """Open inotify instances held by these processes: fds whose link is anon_inode:inotify
    (an fd shared by processes, e.g. inherited, is counted once per process holding it)."""
    count = 0
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        for name in names:
            with contextlib.suppress(OSError):
                if os.readlink(fd_dir / name) == INOTIFY_LINK:
                    count += 1
    return count


def rss(pid: int, proc: Path = PROC) -> int:
    """Resident set size in bytes (VmRSS), 0 for a process that is gone or has none."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class Sample:
    """One look at fimd's pod from the node."""

    working_set: int  # the pod's memory cgroup: usage minus inactive file cache
    inotify_instances: int  # held by any process of the pod
    processes: int  # in fimd's container (fimd and its engine/notify children)
    rss: int  # summed VmRSS of those processes (shared pages counted once per process)


@dataclass(frozen=True)
class FimdPod:
    """fimd's pod cgroup and, below it, the cgroup of its fimd container."""

    cgroup: Path
    container: Path | None

    def sample(self) -> Sample:
        fim = cgroup_pids(self.container) if self.container else []
        return Sample(
            working_set=memory(self.cgroup).working_set,
            inotify_instances=inotify_instances(cgroup_pids(self.cgroup)),
            processes=len(fim),
            rss=sum(rss(pid) for pid in fim),
        )


def fimd_pod(uid: str, container_id: str, root: Path = MEMORY_ROOT) -> FimdPod | None:
    """fimd's pod (UID from the API) and container (`containerd://<id>` or the bare ID)."""
    cgroup = pod_cgroup(uid, root)
    if cgroup is None:
        return None
    bare = container_id.rpartition("://")[2]
    container = next((p for p in cgroup.iterdir() if p.is_dir() and bare and bare in p.name), None)
    return FimdPod(cgroup, container)


class PeakSampler:
    """Samples a FimdPod in a thread; keeps the peaks. Errors while sampling (the pod's cgroup
    gone after an OOM kill, say) are counted, not raised: the caller checks restarts."""

    def __init__(self, pod: FimdPod, interval: float = 0.5) -> None:
        self.pod = pod
        self.interval = interval
        self.samples = 0
        self.errors: list[str] = []
        self.peak_working_set = 0
        self.peak_inotify_instances = 0
        self.peak_processes = 0
        self.peak_rss = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fimd-sampler", daemon=True)

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> Sample:
        """One sample now, counted in the peaks."""
        sample = self.pod.sample()
        with self._lock:
            self.samples += 1
            self.peak_working_set = max(self.peak_working_set, sample.working_set)
            self.peak_inotify_instances = max(self.peak_inotify_instances, sample.inotify_instances)
            self.peak_processes = max(self.peak_processes, sample.processes)
            self.peak_rss = max(self.peak_rss, sample.rss)
        return sample

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.take()
            except (OSError, ValueError) as error:
                self.errors.append(str(error))
            self._stop.wait(self.interval)
