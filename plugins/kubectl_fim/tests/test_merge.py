"""Merging the lines of many fimd pods."""

from __future__ import annotations

from plugins.kubectl_fim.merge import Merger, normalise_time

T1 = "2026-12-01T10:00:01.000000000Z"
T2 = "2026-12-01T10:00:02.000000000Z"
T3 = "2026-12-01T10:00:03.000000000Z"


def test_normalise_time() -> None:
    assert normalise_time("2026-12-01T10:00:01Z") == T1
    assert normalise_time("2026-12-01T10:00:01.5Z") == "2026-12-01T10:00:01.500000000Z"
    assert normalise_time("2026-12-01T10:00:01.123456Z") == "2026-12-01T10:00:01.123456000Z"
    assert normalise_time(T1) == T1
    for bad in ["", "yesterday", "2026-12-01 10:00:01Z", "2026-12-01T10:00:01.x5Z",
                "2026-12-01T10:00:01.1234567890Z", "2026-12-01T10:00:01+01:00"]:  # fmt: skip
        assert normalise_time(bad) == "", bad


def test_waits_for_the_window_then_releases_in_time_order() -> None:
    merger: Merger[str] = Merger(window=0.5)
    merger.add("b", T2, "b2", now=0.0)
    merger.add("a", T1, "a1", now=0.1)
    assert merger.release(now=0.4) == []
    assert merger.release(now=0.6) == ["a1", "b2"]
    assert len(merger) == 0


def test_each_streams_order_is_kept_even_when_its_times_go_back() -> None:
    merger: Merger[str] = Merger(window=0)
    merger.add("a", T3, "a-first", now=0)
    merger.add("a", T1, "a-second", now=0)
    merger.add("b", T2, "b", now=0)
    assert merger.release(now=0, flush=True) == ["b", "a-first", "a-second"]


def test_lines_without_time_stay_after_their_streams_previous_line() -> None:
    merger: Merger[str] = Merger(window=10)
    merger.add("a", T1, "a1", now=0)
    merger.add("a", "", "a-plain", now=0)
    merger.add("b", T2, "b2", now=0)
    merger.add("a", T3, "a3", now=0)
    assert merger.release(now=0) == []
    assert merger.release(now=0, flush=True) == ["a1", "a-plain", "b2", "a3"]


def test_bounds_release_early() -> None:
    merger: Merger[str] = Merger(window=60, max_lines=2, max_bytes=1000)
    merger.add("a", T2, "a2", now=0, size=10)
    merger.add("b", T1, "b1", now=0, size=10)
    merger.add("a", T3, "a3", now=0, size=10)
    assert merger.release(now=0) == ["b1"]
    merger.add("c", T3, "c3", now=0, size=600)
    merger.add("d", T3, "d3", now=0, size=300)
    assert merger.release(now=0) == ["a2", "a3"]  # 900 bytes in 2 lines: within bounds
    assert merger.release(now=0, flush=True) == ["c3", "d3"]
