"""Event volume in the daemon (fake engines over real queues and the real wire format):
coalesced lines and summaries account for every event record and every drop the engine
reports, the per-watch metrics agree, and nothing held back is lost when a watch goes away
or fimd stops. The volume core itself is tested in test_volume.py."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from fim.v1 import fim_pb2
from libs.fimnotify_api import wire
from services.fimd.cli import parse_args
from services.fimd.daemon import accept, key_of
from services.fimd.lines import EventRenderer, Identity, raw_path
from services.fimd.metrics import Metrics
from services.fimd.tests.harness import (
    Capture,
    FakeLauncher,
    FakeResolver,
    create_watch,
    running_daemon,
    wait_for,
)
from services.fimd.tests.specs import CONTAINER, spec
from services.fimd.validation import ValidationError
from services.fimd.volume import Line, Summary

IN_MODIFY = 0x2
IN_CREATE = 0x100
WATCHER = "shop/myapp-logs"


@pytest.fixture
def resolver() -> FakeResolver:
    resolver = FakeResolver()
    resolver.pids[CONTAINER] = 4242
    return resolver


def _watch(
    *, coalesce_ms: int = 0, line_budget: int = 0, log_format: str = ""
) -> fim_pb2.WatchSpec:
    watch = spec(log_format=log_format)
    watch.subjects[0].coalesce_ms = coalesce_ms
    watch.line_budget = line_budget
    return watch


def _value(metrics: Metrics, counter: str, *labels: str) -> float:
    value: float = getattr(metrics, counter).labels(*labels)._value.get()
    return value


def _accounted(lines: list[dict[str, Any]]) -> tuple[Counter[tuple[str, str]], Counter[str], int]:
    """Events per (event, path) in event lines, per event in summaries, and dropped."""
    per_key: Counter[tuple[str, str]] = Counter()
    summarised: Counter[str] = Counter()
    dropped = 0
    for line in lines:
        if line.get("kind") == "event":
            per_key[line["event"], line["path"]] += line.get("count", 1)
        elif line.get("kind") == "summary":
            assert sum(line["events"].values()) == line["count"]
            summarised.update(line["events"])
        elif line.get("msg") == "events_dropped":
            dropped += line["count"]
    return per_key, summarised, dropped


def _records(count: int, paths: int) -> list[wire.Record]:
    return [
        wire.EventRecord(
            1_000 + i, IN_MODIFY if i % 3 else IN_CREATE, 1, 0, b"/data/f%d" % (i % paths)
        )
        for i in range(count)
    ]


def _send(launcher: FakeLauncher, records: list[wire.Record]) -> None:
    engine = launcher.holding(1)
    for start in range(0, len(records), 100):
        engine.send(*records[start : start + 100])


def test_coalesced_lines_and_drops_add_up_to_every_event(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, metrics):
        create_watch(daemon, _watch(coalesce_ms=300))
        records = _records(3000, paths=10)
        _send(launcher, [*records[:1500], wire.DroppedRecord(5, 1, 42), *records[1500:]])
        wait_for(
            lambda: sum(_accounted(capture.json())[0].values()) == 3000, what="every event in lines"
        )
        per_key, summarised, dropped = _accounted(capture.json())
        events = capture.events()
    expected = Counter(("MODIFY" if i % 3 else "CREATE", f"/data/f{i % 10}") for i in range(3000))
    assert per_key == expected
    assert not summarised
    assert dropped == 42
    # 2 kinds x 10 paths, each in one or a few windows: far fewer lines than events.
    assert len(events) <= 20 * 4
    for line in events:
        assert line["time"] == line["first"] <= line["last"]
        assert line["count"] >= 1
    assert _value(metrics, "events_seen", WATCHER) == 3000 + 42
    assert _value(metrics, "lines", WATCHER, "event") == len(events)
    assert _value(metrics, "lines_saved", WATCHER, "coalescing") == 3000 - len(events)
    assert _value(metrics, "dropped", WATCHER, "fimnotify") == 42


def test_over_its_budget_a_watch_writes_a_summary_that_accounts_for_the_rest(
    resolver: FakeResolver,
) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, metrics):
        create_watch(daemon, _watch(line_budget=50))
        _send(launcher, _records(1000, paths=7))
        (summary,) = wait_for(
            lambda: [x for x in capture.json() if x.get("kind") == "summary"], what="a summary"
        )
        events = capture.events()
    assert len(events) == 50
    assert all("count" not in line for line in events)  # single events, unchanged lines
    assert summary["lines"] == summary["count"] == 950
    assert summary["budget"] == 50
    assert summary["distinctPaths"] == 7
    assert summary["pathsComplete"] is True
    assert {p["path"] for p in summary["paths"]} == {f"/data/f{i}" for i in range(7)}
    assert sum(p["count"] for p in summary["paths"]) == 950
    assert summary["watcher"] == WATCHER
    assert summary["pod"] == "web-0"
    assert summary["first"] <= summary["last"]
    per_key, summarised, _ = _accounted([*events, summary])
    assert sum(per_key.values()) + sum(summarised.values()) == 1000
    # Records 50..999 were summarised: every third one a CREATE.
    creates = sum(1 for i in range(50, 1000) if i % 3 == 0)
    assert summarised == Counter({"MODIFY": 950 - creates, "CREATE": creates})
    assert _value(metrics, "lines", WATCHER, "summary") == 1
    assert _value(metrics, "lines_saved", WATCHER, "budget") == 949
    assert _value(metrics, "events_seen", WATCHER) == 1000


def test_the_daemon_default_budget_applies_unless_the_spec_sets_one(
    resolver: FakeResolver,
) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        daemon.line_budget = 5
        create_watch(daemon, _watch())
        _send(launcher, _records(20, paths=2))
        wait_for(lambda: any(x.get("kind") == "summary" for x in capture.json()), what="summary")
        assert len(capture.events()) == 5
        create_watch(daemon, _watch(line_budget=1000))  # its own budget: a new incarnation
        wait_for(lambda: launcher.holding(2), what="the updated watch")
        before = len(capture.events())
        launcher.holding(2).send(*[wire.EventRecord(9, IN_MODIFY, 2, 0, b"/x") for _ in range(20)])
        wait_for(lambda: len(capture.events()) == before + 20, what="20 lines within its budget")


def test_held_back_lines_are_written_when_the_watch_is_destroyed(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        watch = _watch(coalesce_ms=60_000, line_budget=2)
        create_watch(daemon, watch)
        _send(launcher, _records(100, paths=5))
        wait_for(lambda: daemon.snapshot().watches_by_phase["active"] == 1, what="active")
        # Nothing is due for a minute; the watch goes away now.
        assert not capture.events()
        daemon.destroy(key_of(watch.key))
        wait_for(lambda: any(x.get("kind") == "summary" for x in capture.json()), what="flush")
        per_key, summarised, _ = _accounted(capture.json())
    assert sum(per_key.values()) + sum(summarised.values()) == 100
    assert len(capture.events()) == 2


def test_held_back_lines_are_written_when_fimd_stops(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    capture: Capture
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        create_watch(daemon, _watch(coalesce_ms=60_000))
        _send(launcher, _records(500, paths=4))
        wait_for(lambda: daemon.snapshot().watches_by_phase["active"] == 1, what="active")
    per_key, _, _ = _accounted(capture.json())
    assert sum(per_key.values()) == 500
    assert len(per_key) == 8


def test_a_template_gets_count_first_and_last(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    template = "{event} {path} n={count} {first}..{last} at {time}"
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        create_watch(daemon, _watch(coalesce_ms=100, log_format=template))
        launcher.holding(1).send(
            wire.EventRecord(1_000_000_000, IN_MODIFY, 1, 0, b"/data/a"),
            wire.EventRecord(2_000_000_000, IN_MODIFY, 1, 0, b"/data/a"),
            wire.EventRecord(2_500_000_000, IN_MODIFY, 1, 0, b"/data/a"),
        )
        (line,) = wait_for(lambda: [x for x in capture.lines if x.startswith("MODIFY")])
    first, last = "1970-01-01T00:00:01.000000Z", "1970-01-01T00:00:02.500000Z"
    assert line == f"MODIFY /data/a n=3 {first}..{last} at {first}"


def test_a_template_of_an_uncoalesced_watch_counts_one(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        create_watch(daemon, _watch(log_format="{path} {count} {first} {last}"))
        launcher.holding(1).send(wire.EventRecord(3_000_000_000, IN_MODIFY, 1, 0, b"/data/b"))
        (line,) = wait_for(lambda: [x for x in capture.lines if x.startswith("/data/b")])
    stamp = "1970-01-01T00:00:03.000000Z"
    assert line == f"/data/b 1 {stamp} {stamp}"


@pytest.mark.parametrize(
    ("coalesce_ms", "line_budget", "message"),
    [
        (60_001, 0, "spec.subjects[0].coalesce_ms: must be at most 60000 ms"),
        (0, 1_000_001, "spec.line_budget: must be between 0 and 1000000"),
    ],
)
def test_out_of_range_volume_fields_are_rejected(
    coalesce_ms: int, line_budget: int, message: str
) -> None:
    request = fim_pb2.CreateWatchRequest(
        spec=_watch(coalesce_ms=coalesce_ms, line_budget=line_budget)
    )
    with pytest.raises(ValidationError) as caught:
        accept(request, "node-1")
    assert str(caught.value).startswith(message)
    accept(fim_pb2.CreateWatchRequest(spec=_watch(coalesce_ms=60_000, line_budget=10**6)), "n")


def test_the_line_budget_flag_defaults_to_none_and_is_bounded_like_the_crd() -> None:
    base = ["--node-name", "n1", "--insecure"]
    assert parse_args(base).line_budget == 0
    assert parse_args([*base, "--line-budget", "100"]).line_budget == 100
    for bad in ("-1", "1000001", "lots"):
        with pytest.raises(SystemExit):
            parse_args([*base, "--line-budget", bad])


def test_coalesced_and_summary_lines_are_one_json_line_whatever_the_name() -> None:
    identity = Identity("n1", "shop", "web-0", "app", WATCHER)
    renderer = EventRenderer(identity, [{"team": "a"}], None)
    hostile = b'/data/x","event":"ACCESS\n\xff\xe2\x80\xa8'
    line = Line(0, "MODIFY", hostile, False, 1_000, 2_000_000, 7, True)
    text = renderer.render_line(line)
    summary = Summary(1_000, 2_000, 5, 40, 99, (("MODIFY", 99),), ((hostile, 99),), 1, 0)
    text += renderer.render_summary(summary, 3_000)
    assert text.count("\n") == 2
    assert len(text.splitlines()) == 2
    event, summed = (json.loads(raw) for raw in text.splitlines())
    assert (event["event"], event["count"], event["tags"]) == ("MODIFY", 7, {"team": "a"})
    assert event["first"] == event["time"] == "1970-01-01T00:00:00.000001Z"
    assert event["last"] == "1970-01-01T00:00:00.002000Z"
    assert raw_path(event["path"], event["pathBytes"]) == hostile
    ((only),) = summed["paths"]
    assert raw_path(only["path"], only["pathBytes"]) == hostile
    assert (summed["kind"], summed["count"], summed["lines"], summed["events"]) == (
        "summary", 99, 40, {"MODIFY": 99},
    )  # fmt: skip
    # An uncoalesced Line is exactly the line `render` writes for its event.
    single = Line(0, "MODIFY", b"/data/a", False, 5, 5)
    assert renderer.render_line(single) == renderer.render(5, IN_MODIFY, 0, b"/data/a")[0]
