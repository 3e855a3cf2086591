"""The volume core (services/fimd/volume.py): coalescing and line budgets lose no event.

Known workloads are fed with an explicit clock; the counts of the lines and summaries that
come out must add up exactly to the events that went in, per path and per event kind, and
every distinct path must appear in a line or in a summary's path counts.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.fimd import volume
from services.fimd.volume import Item, Line, Summary, Volume

NS = 1_000_000_000


def _drain(vol: Volume, items: list[Item], events: list[tuple[float, int, str, bytes]]) -> None:
    for now, subject, event, path in events:
        items += vol.tick(now)
        items += vol.add(int(now * NS), subject, (event,), path, is_dir=False, now=now)


def _workload(
    seed: int, seconds: float, rate: int, paths: int
) -> list[tuple[float, int, str, bytes]]:
    rng = random.Random(seed)  # noqa: S311 (a reproducible workload)
    step = 1.0 / rate
    out = []
    for i in range(int(seconds * rate)):
        path = f"/data/f{rng.randrange(paths)}".encode()
        event = rng.choice(("MODIFY", "OPEN", "CLOSE_WRITE"))
        out.append((i * step, 0, event, path))
    return out


def _check_exact(items: list[Item], events: list[tuple[float, int, str, bytes]]) -> None:
    expected = Counter((event, path) for _, _, event, path in events)
    lines = Counter[tuple[str, bytes]]()
    by_event = Counter[str]()
    summary_paths = Counter[bytes]()
    untracked = 0
    for item in items:
        if isinstance(item, Line):
            assert item.first_ns <= item.last_ns
            lines[item.event, item.path] += item.count
        else:
            assert item.count == sum(c for _, c in item.by_event)
            by_event.update(dict(item.by_event))
            summary_paths.update(dict(item.top_paths))
            untracked += item.untracked
    # Totals per event kind: lines + summaries == events.
    line_events = Counter[str]()
    for (event, _), count in lines.items():
        line_events[event] += count
    assert line_events + by_event == Counter(event for _, _, event, _ in events)
    assert sum(lines.values()) + sum(by_event.values()) == len(events)
    # Per key, lines never claim more than happened.
    for key, count in lines.items():
        assert count <= expected[key]
    # Every distinct path appears, in a line or in a summary's path counts.
    seen = {path for _, path in lines} | set(summary_paths)
    assert seen == {path for _, path in expected}
    assert untracked == 0


def test_coalescing_merges_identical_events_in_the_window_and_counts_add_up() -> None:
    vol = Volume([1.0], budget=0)
    events = _workload(1, seconds=5.0, rate=10_000, paths=10)
    items: list[Item] = []
    _drain(vol, items, events)
    items += vol.flush(10.0)
    assert all(isinstance(i, Line) and i.coalesced for i in items)
    _check_exact(items, events)
    # One line per (event, path) and window: 3 kinds x 10 paths x ~5 windows.
    assert len(items) <= 3 * 10 * 6
    per_key = Counter((i.event, i.path) for i in items if isinstance(i, Line))
    assert sum(per_key.values()) == len(items)
    counts = vol.take_counts()
    assert counts.events == len(events)
    assert counts.lines == len(items)
    assert counts.saved_coalescing == len(events) - len(items)
    assert counts.saved_budget == 0


def test_a_coalesced_line_carries_first_last_and_count() -> None:
    vol = Volume([2.0], budget=0)
    assert vol.add(10 * NS, 0, ("MODIFY",), b"/a", is_dir=False, now=100.0) == []
    assert vol.add(11 * NS, 0, ("MODIFY",), b"/a", is_dir=False, now=101.0) == []
    assert (
        vol.add(11 * NS, 0, ("MODIFY",), b"/a", is_dir=True, now=101.0) == []
    )  # a directory: its own key
    assert vol.tick(101.9) == []
    assert vol.tick(102.0) == [Line(0, "MODIFY", b"/a", False, 10 * NS, 11 * NS, 2, True)]
    assert vol.tick(103.0) == [Line(0, "MODIFY", b"/a", True, 11 * NS, 11 * NS, 1, True)]
    assert not vol.pending


def test_only_the_subjects_that_opt_in_are_coalesced() -> None:
    vol = Volume([0.0, 1.0], budget=0)
    first = vol.add(1, 0, ("MODIFY", "CLOSE_WRITE"), b"/a", is_dir=False, now=0.0)
    assert first == [
        Line(0, "MODIFY", b"/a", False, 1, 1),
        Line(0, "CLOSE_WRITE", b"/a", False, 1, 1),
    ]
    assert vol.add(2, 1, ("MODIFY",), b"/a", is_dir=False, now=0.0) == []
    assert vol.pending
    assert vol.flush(0.1) == [Line(1, "MODIFY", b"/a", False, 2, 2, 1, True)]
    with pytest.raises(IndexError):
        vol.add(3, 2, ("MODIFY",), b"/a", is_dir=False, now=0.0)


def test_over_the_budget_an_interval_becomes_lines_then_one_summary() -> None:
    vol = Volume([0.0], budget=5)
    items: list[Item] = []
    for i in range(20):
        items += vol.add(i, 0, ("MODIFY",), f"/p{i % 3}".encode(), is_dir=False, now=0.01 * i)
    assert len(items) == 5
    assert all(isinstance(i, Line) for i in items)
    assert vol.pending
    assert vol.tick(0.99) == []
    (summary,) = vol.tick(1.0)
    assert isinstance(summary, Summary)
    assert (summary.lines, summary.count, summary.budget) == (15, 15, 5)
    assert summary.by_event == (("MODIFY", 15),)
    assert summary.distinct_paths == 3
    assert summary.paths_complete
    # Paths 5..19 (p2 p0 p1 p2 ...): five each; ties by path.
    assert summary.top_paths == ((b"/p0", 5), (b"/p1", 5), (b"/p2", 5))
    assert (summary.first_ns, summary.last_ns) == (5, 19)
    counts = vol.take_counts()
    assert (counts.events, counts.lines, counts.saved_budget) == (20, 6, 14)
    # The rate falls: the next interval is normal lines again.
    later = vol.add(99, 0, ("MODIFY",), b"/p0", is_dir=False, now=5.0)
    assert later == [Line(0, "MODIFY", b"/p0", False, 99, 99)]
    assert not vol.pending


def test_top_paths_are_the_busiest_and_bounded() -> None:
    vol = Volume([0.0], budget=1)
    items: list[Item] = []
    for n in range(volume.TOP_PATHS + 5):
        for _ in range(n + 1):
            items += vol.add(1, 0, ("OPEN",), f"/f{n}".encode(), is_dir=False, now=0.5)
    items += vol.tick(1.5)
    summary = items[-1]
    assert isinstance(summary, Summary)
    assert len(summary.top_paths) == volume.TOP_PATHS
    counts = [c for _, c in summary.top_paths]
    assert counts == sorted(counts, reverse=True)
    assert summary.top_paths[0] == (f"/f{volume.TOP_PATHS + 4}".encode(), volume.TOP_PATHS + 5)
    assert summary.distinct_paths == volume.TOP_PATHS + 4  # /f0 was the one line in budget


def test_summary_path_tracking_is_bounded_and_says_so() -> None:
    vol = Volume([0.0], budget=1)
    total = volume.MAX_SUMMARY_PATHS + 50
    items: list[Item] = []
    for n in range(total + 1):
        items += vol.add(1, 0, ("CREATE",), f"/f{n}".encode(), is_dir=False, now=0.0)
    (summary,) = vol.flush(0.0)
    assert isinstance(summary, Summary)
    assert summary.count == total
    assert summary.distinct_paths == volume.MAX_SUMMARY_PATHS
    assert summary.untracked == 50
    assert not summary.paths_complete


def test_buckets_are_bounded_oldest_closed_early_nothing_lost() -> None:
    vol = Volume([60.0], budget=0)
    items: list[Item] = []
    for n in range(volume.MAX_BUCKETS + 10):
        items += vol.add(n, 0, ("CREATE",), f"/f{n}".encode(), is_dir=False, now=n * 1e-6)
    assert len(items) == 10
    assert [i.path for i in items if isinstance(i, Line)] == [f"/f{n}".encode() for n in range(10)]
    items += vol.flush(1.0)
    assert len(items) == volume.MAX_BUCKETS + 10


def test_bucket_bytes_are_bounded() -> None:
    vol = Volume([60.0], budget=0)
    long = b"/" + b"x" * 4000
    per = len(long) + 8 + volume.BUCKET_OVERHEAD
    fit = volume.MAX_BUCKET_BYTES // per
    items: list[Item] = []
    for n in range(fit + 3):
        items += vol.add(n, 0, ("CREATE",), long + b"%08d" % n, is_dir=False, now=0.0)
    assert len(items) == 3


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("window", "budget"), [(1.0, 0), (0.0, 50), (1.0, 10), (0.25, 3)])
def test_coalescing_and_budget_together_add_up_exactly(
    seed: int, window: float, budget: int
) -> None:
    vol = Volume([window, 0.0], budget=budget)
    rng = random.Random(seed)  # noqa: S311 (a reproducible workload)
    events: list[tuple[float, int, str, bytes]] = []
    now = 0.0
    for _ in range(30_000):
        now += rng.expovariate(5_000)
        subject = rng.randrange(2)
        path = f"/d{subject}/f{rng.randrange(12)}".encode()
        events.append((now, subject, rng.choice(("MODIFY", "ATTRIB", "CLOSE_WRITE")), path))
    items: list[Item] = []
    _drain(vol, items, events)
    items += vol.flush(now + 100)
    assert not vol.pending
    _check_exact(items, events)
    counts = vol.take_counts()
    assert counts.events == len(events)
    assert counts.lines == len(items)
    assert counts.events - counts.saved_coalescing - counts.saved_budget == counts.lines
    if budget:
        # At most budget lines plus one summary per interval.
        seconds = now + 1
        assert len(items) <= (budget + 1) * (seconds + 1)


def test_fifty_thousand_per_second_on_ten_files_is_under_a_hundred_lines_per_second() -> None:
    vol = Volume([1.0], budget=100)
    events = [(i / 50_000, 0, "MODIFY", f"/data/f{i % 10}".encode()) for i in range(150_000)]
    items: list[Item] = []
    _drain(vol, items, events)
    items += vol.flush(3.0)
    _check_exact(items, events)
    assert len(items) <= 3 * 10 + 10
    assert not any(isinstance(i, Summary) for i in items)
