"""Following fimd's logs on every node: one `kubectl logs --timestamps [-f]` per fimd pod.

- The fimd pods are the pods of fimd's namespace (default `fim-system`) with the DaemonSet's
  label (`app.kubernetes.io/name=fimd`), container `fimd`.
- While following, the pod list is read again every `poll` seconds: a pod that appears later
  (a new node, a replaced pod) is followed from its first line; a pod whose `kubectl logs -f`
  ended (its container restarted, or the connection broke) while it still runs is followed
  again from the runtime timestamp of the last line read (`--since-time`), skipping lines up
  to that timestamp, so nothing is shown twice. (Lines with exactly that nanosecond timestamp
  after it would be skipped too; the runtime stamps each line as it reads it.)
- Lines are read bounded (`libs.fimlines.MAX_LINE_BYTES`): a longer line is skipped and
  counted, and the counts are reported at the end (`Stats`).
- `kubectl logs` reads the container's current log file: lines in files the kubelet already
  rotated (10 MiB) are not shown, as with `kubectl logs`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from libs.fimlines import MAX_LINE_BYTES
from plugins.kubectl_fim.kubectl import Kubectl, KubectlError, read_stderr
from plugins.kubectl_fim.merge import normalise_time

FIMD_SELECTOR = "app.kubernetes.io/name=fimd"
FIMD_CONTAINER = "fimd"
#: Lines read but not yet consumed, per all pods: a slow terminal slows kubectl down.
_QUEUE_LINES = 10_000


@dataclass(frozen=True)
class Line:
    """One line of one fimd pod, without its line break."""

    pod: str
    #: The runtime's timestamp of the line (`merge.normalise_time`; "" if none).
    stamp: str
    text: str


@dataclass(frozen=True)
class FimdPod:
    name: str
    node: str
    #: Whether its fimd container runs now (its log can be followed).
    running: bool


#: Distinct failure messages kept (a pod whose log keeps failing repeats its message).
MAX_ERRORS = 100


@dataclass
class Stats:
    """What was skipped or failed: overlong lines per pod, failures by message (counted)."""

    overlong: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def failed(self, message: str) -> bool:
        """Counts `message`; True the first time it is seen (the caller reports it then)."""
        if message not in self.errors and len(self.errors) >= MAX_ERRORS:
            message = "(more failures)"
        self.errors[message] = self.errors.get(message, 0) + 1
        return self.errors[message] == 1


def fimd_pods(items: list[dict[str, Any]]) -> list[FimdPod]:
    """The fimd pods of a pod list (`kubectl get pods -o json`'s items), by name."""
    out = []
    for pod in items:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        running = any(
            s.get("name") == FIMD_CONTAINER and "running" in (s.get("state") or {})
            for s in statuses
        )
        name = str(pod.get("metadata", {}).get("name", ""))
        out.append(FimdPod(name, str(pod.get("spec", {}).get("nodeName", "")), running))
    return sorted(out, key=lambda p: p.name)


def split_stamp(raw: str) -> tuple[str, str]:
    """(normalised timestamp, text) of a `kubectl logs --timestamps` line."""
    stamp, space, text = raw.partition(" ")
    key = normalise_time(stamp)
    return (key, text) if space and key else ("", raw)


def read_lines(stream: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[str | None]:
    """The lines of `stream` (decoded, without the line break); None for each line longer than
    `limit` bytes, which is skipped to its end without being held."""
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        if chunk.endswith(b"\n"):
            yield chunk[:-1].decode("utf-8", "replace")
            continue
        if len(chunk) <= limit:  # the last line, without a line break
            yield chunk.decode("utf-8", "replace")
            return
        while chunk and not chunk.endswith(b"\n"):
            chunk = stream.readline(limit + 1)
        yield None


class _Follower(threading.Thread):
    """One `kubectl logs` run of one pod; puts its Lines, then itself, on `out`."""

    def __init__(self, kubectl: Kubectl, args: list[str], pod: str, after: str, out: Any) -> None:
        super().__init__(name=f"logs {pod}", daemon=True)
        self.pod = pod
        self.last = after  # skip lines up to this stamp (a resumed follow)
        self.overlong = 0
        self.error = ""
        self._out = out
        self._process = kubectl.start(*args)

    def run(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        for raw in read_lines(stdout):
            if raw is None:
                self.overlong += 1
                continue
            stamp, text = split_stamp(raw)
            if stamp and self.last and stamp <= self.last:
                continue
            self.last = stamp or self.last
            self._out.put(Line(self.pod, stamp, text))
        code = self._process.wait()
        if code not in (0, -15):
            self.error = read_stderr(self._process.stderr) or f"kubectl exited {code}"
        self._out.put(self)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()


class LogStreams:
    """The lines of every fimd pod, as they come (`poll`)."""

    def __init__(
        self,
        kubectl: Kubectl,
        namespace: str,
        *,
        follow: bool,
        since: str = "",
        poll: float = 2.0,
        selector: str = FIMD_SELECTOR,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._kubectl = kubectl
        self._namespace = namespace
        self._follow = follow
        self._since = since
        self._poll = poll
        self._selector = selector
        self._warn = warn  # told each distinct failure when it first happens (while following)
        self._queue: queue.Queue[Line | _Follower] = queue.Queue(_QUEUE_LINES)
        self._live: dict[str, _Follower] = {}
        self._last: dict[str, str] = {}  # pod -> stamp of its last line
        self._known: set[str] = set()
        self._listed_at = -float("inf")
        self.stats = Stats()
        self.nodes: dict[str, str] = {}  # pod -> node

    def start(self) -> list[FimdPod]:
        """Lists the fimd pods and starts following them; raises KubectlError."""
        pods = self._list()
        self._known = {p.name for p in pods}
        for pod in pods:
            if pod.running or not self._follow:
                self._begin(pod.name, initial=True)
        return pods

    @property
    def done(self) -> bool:
        """Not following, every pod's log read to the end and every line consumed."""
        return not self._follow and not self._live and self._queue.empty()

    def poll(self, timeout: float) -> list[Line]:
        """The lines that arrived within `timeout` seconds (at least one waits for)."""
        out: list[Line] = []
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                self._take(item, out)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._follow and time.monotonic() - self._listed_at >= self._poll:
            self._rediscover()
        return out

    def stop(self) -> None:
        for follower in list(self._live.values()):
            follower.stop()

    def _take(self, item: Line | _Follower, out: list[Line]) -> None:
        if isinstance(item, Line):
            out.append(item)
            return
        self._live.pop(item.pod, None)
        if item.last:
            self._last[item.pod] = item.last
        if item.overlong:
            self.stats.overlong[item.pod] = self.stats.overlong.get(item.pod, 0) + item.overlong
        if item.error:
            self._failed(f"{self._namespace}/{item.pod}: {item.error}")

    def _failed(self, message: str) -> None:
        if self.stats.failed(message):
            self._warn(message)

    def _list(self) -> list[FimdPod]:
        listing = self._kubectl.json(
            "get", "pods", f"--namespace={self._namespace}", f"--selector={self._selector}"
        )
        self._listed_at = time.monotonic()
        pods = fimd_pods(listing.get("items") or [])
        self.nodes.update({p.name: p.node for p in pods})
        return pods

    def _rediscover(self) -> None:
        try:
            pods = self._list()
        except KubectlError as error:
            self._failed(str(error))
            return
        for pod in pods:
            if pod.running and pod.name not in self._live:
                self._begin(pod.name, initial=False)
            self._known.add(pod.name)

    def _begin(self, pod: str, *, initial: bool) -> None:
        args = ["logs", f"--namespace={self._namespace}", pod, "--container", FIMD_CONTAINER]
        args.append("--timestamps")
        if self._follow:
            args.append("--follow")
        after = self._last.get(pod, "")
        if after:
            args.append(f"--since-time={after}")
        elif self._since and (initial or pod in self._known):
            args.append(f"--since={self._since}")
        try:
            follower = _Follower(self._kubectl, args, pod, after, self._queue)
        except KubectlError as error:
            self._failed(str(error))
            return
        self._live[pod] = follower
        follower.start()
