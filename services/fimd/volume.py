"""Event volume of one watch: lossless coalescing (opt-in per subject) and the line budget.

Pure: no I/O and no clock. The daemon passes `now` (monotonic seconds) with every call,
feeds each event of a watch to `Volume.add`, calls `Volume.tick` on a timer and
`Volume.flush` when the watch goes away or fimd stops, and renders what comes out. Nothing
that goes in is lost: the `count` of every `Line` plus the `count` of every `Summary` that
comes out add up exactly to the events that went in (`tests/test_volume.py` checks it).

Coalescing (a subject with a window W > 0): the first occurrence of an (event, path, isDir)
of that subject opens a bucket; occurrences of the same key until W seconds later are
counted into it; when W has passed, the bucket becomes one `Line` with `count`, the time of
the first and the last occurrence. Buckets are bounded (MAX_BUCKETS, MAX_BUCKET_BYTES per
watch): a new key beyond the bound closes the oldest bucket of the watch early (its line is
emitted at once, with the count so far). So a line of a coalescing subject comes at most W
seconds after its first occurrence, and one key costs at most one line per W.

Line budget (lines per second per watch; 0 = none): time is cut into intervals of
BUDGET_INTERVAL seconds, starting with the first line after a quiet one. The first `budget`
lines of an interval are emitted as they come; the lines beyond it are not emitted but
summed into one `Summary`, emitted when the interval ends: the events per kind, the top
TOP_PATHS paths with their counts, and the number of distinct paths. The next interval
starts with a fresh budget, so a watch returns to normal lines as soon as its rate falls.
A summary tracks at most MAX_SUMMARY_PATHS paths (MAX_SUMMARY_PATH_BYTES in total); events
of further paths are still counted (`untracked`), and `paths_complete` says whether
`distinct_paths` and `top_paths` saw every path.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import attrs

#: Seconds of one budget interval.
BUDGET_INTERVAL = 1.0
#: Open coalescing buckets of one watch, and the path bytes (plus BUCKET_OVERHEAD each) they
#: may hold together.
MAX_BUCKETS = 4096
MAX_BUCKET_BYTES = 1 << 20
BUCKET_OVERHEAD = 128
#: Paths (and their bytes) one summary counts individually; paths named in a summary.
MAX_SUMMARY_PATHS = 1024
MAX_SUMMARY_PATH_BYTES = 256 << 10
TOP_PATHS = 10


@attrs.frozen
class Line:
    """One event line: `count` occurrences of `event` on `path` from `first_ns` to
    `last_ns` (wall clock). `coalesced` lines come from a coalescing subject and carry
    count/first/last; the others are single events (count 1) written as before."""

    subject: int
    event: str  # upper case, e.g. "MODIFY"
    path: bytes
    is_dir: bool
    first_ns: int
    last_ns: int
    count: int = 1
    coalesced: bool = False
    #: Rendered JSON members (",..." each) of the file's attributes (`attributes.render`).
    extra: str = ""


@attrs.frozen
class Summary:
    """The lines of one budget interval that were over the budget, summed up."""

    first_ns: int  # wall clock of the first and last event summed up
    last_ns: int
    budget: int
    lines: int  # lines not written (each would have been one Line)
    count: int  # events in those lines (a coalesced line holds many)
    by_event: tuple[tuple[str, int], ...]  # (event, count), sorted by event
    top_paths: tuple[tuple[bytes, int], ...]  # (path, count), highest count first
    distinct_paths: int  # of the tracked paths
    untracked: int  # events of paths beyond MAX_SUMMARY_PATHS (then paths_complete False)

    @property
    def paths_complete(self) -> bool:
        return self.untracked == 0


Item = Line | Summary


@attrs.define
class Counts:
    """Running totals of one watch since the last `Volume.take_counts`."""

    events: int = 0  # occurrences added
    lines: int = 0  # Lines and Summaries emitted
    summaries: int = 0  # of them Summaries
    saved_coalescing: int = 0  # occurrences merged into another's line (count - 1 each)
    saved_budget: int = 0  # lines summarised, minus the summary lines written for them


@attrs.define
class _Bucket:
    first_ns: int
    last_ns: int
    count: int
    deadline: float
    cost: int


@attrs.define
class _Interval:
    """The budget interval in progress and what it summarises so far."""

    end: float
    used: int = 0
    lines: int = 0
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    by_event: dict[str, int] = attrs.field(factory=dict)
    paths: dict[bytes, int] = attrs.field(factory=dict)
    path_bytes: int = 0
    untracked: int = 0

    def summarise(self, line: Line) -> None:
        if not self.lines:
            self.first_ns, self.last_ns = line.first_ns, line.last_ns
        self.first_ns = min(self.first_ns, line.first_ns)
        self.last_ns = max(self.last_ns, line.last_ns)
        self.lines += 1
        self.count += line.count
        self.by_event[line.event] = self.by_event.get(line.event, 0) + line.count
        if line.path in self.paths:
            self.paths[line.path] += line.count
        elif (
            len(self.paths) < MAX_SUMMARY_PATHS
            and self.path_bytes + len(line.path) <= MAX_SUMMARY_PATH_BYTES
        ):
            self.paths[line.path] = line.count
            self.path_bytes += len(line.path)
        else:
            self.untracked += line.count

    def summary(self, budget: int) -> Summary:
        top = heapq.nsmallest(TOP_PATHS, self.paths.items(), key=lambda kv: (-kv[1], kv[0]))
        return Summary(
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            budget=budget,
            lines=self.lines,
            count=self.count,
            by_event=tuple(sorted(self.by_event.items())),
            top_paths=tuple(top),
            distinct_paths=len(self.paths),
            untracked=self.untracked,
        )


class Volume:
    """Coalescing and line budget of one watch (see the module docstring)."""

    def __init__(self, windows: Sequence[float], budget: int) -> None:
        """`windows[i]`: coalescing window of subject i in seconds (0 = none); `budget`:
        lines per BUDGET_INTERVAL (0 = none)."""
        self._windows = tuple(windows)
        self._budget = budget
        # Per subject, in opening order (so in deadline order: one window per subject).
        self._buckets: list[dict[tuple[str, bytes, bool], _Bucket]] = [{} for _ in windows]
        self._bucket_count = 0
        self._bucket_bytes = 0
        self._interval: _Interval | None = None
        self.counts = Counts()

    @property
    def pending(self) -> bool:
        """Something is held back: `tick` must be called until this is False."""
        return bool(self._bucket_count) or (self._interval is not None and self._interval.lines > 0)

    def take_counts(self) -> Counts:
        counts, self.counts = self.counts, Counts()
        return counts

    def add(
        self,
        time_ns: int,
        subject: int,
        events: Sequence[str],
        path: bytes,
        *,
        is_dir: bool,
        now: float,
        extra: str = "",
    ) -> list[Item]:
        """One inotify event (one or more event names) of subject `subject`; returns the
        lines (and a summary of a finished interval) to write now. Raises IndexError for
        a subject the watch does not have."""
        window = self._windows[subject]
        out: list[Item] = []
        self._close_interval(now, out)
        self.counts.events += len(events)
        if not window:
            for event in events:
                line = Line(subject, event, path, is_dir, time_ns, time_ns, extra=extra)
                self._admit(line, now, out)
            return out
        buckets = self._buckets[subject]
        for event in events:
            key = (event, path, is_dir)
            bucket = buckets.get(key)
            if bucket is not None:
                bucket.count += 1
                bucket.last_ns = max(bucket.last_ns, time_ns)
                bucket.first_ns = min(bucket.first_ns, time_ns)
                continue
            cost = len(path) + BUCKET_OVERHEAD
            while self._bucket_count and (
                self._bucket_count >= MAX_BUCKETS or self._bucket_bytes + cost > MAX_BUCKET_BYTES
            ):
                self._evict_oldest(now, out)
            buckets[key] = _Bucket(time_ns, time_ns, 1, now + window, cost)
            self._bucket_count += 1
            self._bucket_bytes += cost
        return out

    def tick(self, now: float) -> list[Item]:
        """Lines of the buckets whose window has passed, and the summary of an interval
        that has ended."""
        out: list[Item] = []
        for subject, buckets in enumerate(self._buckets):
            while buckets:
                key, bucket = next(iter(buckets.items()))
                if bucket.deadline > now:
                    break
                self._close_bucket(subject, key, now, out)
        self._close_interval(now, out)
        return out

    def flush(self, now: float) -> list[Item]:
        """Everything held back, at once (the watch goes away or fimd stops)."""
        out: list[Item] = []
        for subject, buckets in enumerate(self._buckets):
            while buckets:
                self._close_bucket(subject, next(iter(buckets)), now, out)
        if self._interval is not None:
            self._emit_summary(out)
            self._interval = None
        return out

    def _evict_oldest(self, now: float, out: list[Item]) -> None:
        oldest = min(
            (s for s, b in enumerate(self._buckets) if b),
            key=lambda s: next(iter(self._buckets[s].values())).deadline - self._windows[s],
        )
        self._close_bucket(oldest, next(iter(self._buckets[oldest])), now, out)

    def _close_bucket(
        self, subject: int, key: tuple[str, bytes, bool], now: float, out: list[Item]
    ) -> None:
        bucket = self._buckets[subject].pop(key)
        self._bucket_count -= 1
        self._bucket_bytes -= bucket.cost
        self.counts.saved_coalescing += bucket.count - 1
        event, path, is_dir = key
        first, last = bucket.first_ns, bucket.last_ns
        self._admit(Line(subject, event, path, is_dir, first, last, bucket.count, True), now, out)

    def _admit(self, line: Line, now: float, out: list[Item]) -> None:
        """Emits `line` within the budget, else sums it into the interval's summary."""
        if not self._budget:
            self.counts.lines += 1
            out.append(line)
            return
        interval = self._interval
        if interval is None or now >= interval.end:
            self._close_interval(now, out)
            interval = self._interval = _Interval(end=now + BUDGET_INTERVAL)
        if interval.used < self._budget:
            interval.used += 1
            self.counts.lines += 1
            out.append(line)
        else:
            interval.summarise(line)

    def _close_interval(self, now: float, out: list[Item]) -> None:
        if self._interval is not None and now >= self._interval.end:
            self._emit_summary(out)
            self._interval = None

    def _emit_summary(self, out: list[Item]) -> None:
        interval = self._interval
        if interval is None or not interval.lines:
            return
        self.counts.lines += 1
        self.counts.summaries += 1
        self.counts.saved_budget += interval.lines - 1
        out.append(interval.summary(self._budget))
