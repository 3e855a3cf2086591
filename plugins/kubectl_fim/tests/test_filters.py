"""Which lines `kubectl fim events` shows."""

from __future__ import annotations

from typing import Any

import pytest

from plugins.kubectl_fim.filters import FilterError, build


def _event(**fields: Any) -> dict[str, Any]:
    record = {"kind": "event", "namespace": "shop", "pod": "web-0", "watcher": "shop/logs",
              "event": "MODIFY", "path": "/a"}  # fmt: skip
    record.update(fields)
    return record


def test_no_filters_show_events_summaries_and_loud_lines() -> None:
    shown = build()
    assert shown.matches(_event())
    assert shown.matches({"kind": "summary"})
    assert shown.matches({"kind": "op", "level": "warning", "msg": "inotify_overflow"})
    assert shown.matches({"kind": "op", "level": "error", "msg": "events_dropped"})
    assert not shown.matches({"kind": "op", "level": "info", "msg": "watch_added"})
    assert shown.matches({"kind": "drift", "change": "ADDED"})  # evidence, no level
    assert not shown.matches({"kind": "heartbeat", "level": "info"})
    assert shown.matches(None)  # a plain line, no filter to apply


def test_ops_modes() -> None:
    assert build(ops="all").matches({"kind": "op", "level": "info"})
    none = build(ops="none")
    assert not none.matches({"kind": "op", "level": "error"})
    assert not none.matches({"kind": "heartbeat", "level": "warning"})
    assert none.matches({"kind": "drift"})
    assert none.matches(_event())
    with pytest.raises(FilterError):
        build(ops="some")


def test_namespace_watcher_pod() -> None:
    assert build(namespaces=["shop"]).matches(_event())
    assert build(namespaces=["a,shop"]).matches(_event())
    assert not build(namespaces=["other"]).matches(_event())
    assert not build(namespaces=["shop"]).matches(None)  # cannot be matched
    node_wide = {"kind": "op", "level": "error", "msg": "unrouted_events"}
    assert not build(namespaces=["shop"]).matches(node_wide)
    assert build(watchers=["logs"]).matches(_event())
    assert build(watchers=["shop/logs"]).matches(_event())
    assert not build(watchers=["other/logs"]).matches(_event())
    assert not build(watchers=["log"]).matches(_event())
    assert not build(watchers=["logs"]).matches(_event(watcher=7))
    assert build(pods=["web-*"]).matches(_event())
    assert not build(pods=["db-*"]).matches(_event())
    assert not build(pods=["web-*"]).matches(_event(pod=None))


def test_events_use_the_crd_vocabulary() -> None:
    assert build(events=["modify"]).matches(_event())
    assert build(events=["CREATE", "Modify"]).matches(_event())
    moves = build(events=["move"])
    assert moves.matches(_event(event="MOVEDTO"))
    assert moves.matches(_event(event="MOVEDFROM"))
    assert not moves.matches(_event())
    assert build(events=["all"]).matches(_event(event="ACCESS"))
    summary = {"kind": "summary", "events": {"OPEN": 3, "MODIFY": 1}}
    assert build(events=["modify"]).matches(summary)
    assert not build(events=["delete"]).matches(summary)
    assert not build(events=["modify"]).matches({"kind": "op", "level": "error"})
    drift = {"kind": "drift", "change": "CHANGED"}
    assert build(events=["changed"]).matches(drift)
    assert build(events=["modify,Changed"]).matches(drift)
    assert not build(events=["added", "removed"]).matches(drift)
    assert not build(events=["modify"]).matches(drift)
    assert not build(events=["added"]).matches(_event())
    assert not build(events=["changed"]).matches({"kind": "scan"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": ["modfy"]}, "--event: unknown event name 'modfy'"),
        ({"events": ["changed,modfy"]}, "or a drift change: added, removed, changed"),
        ({"watchers": ["shop/"]}, "--watcher 'shop/'"),
        ({"watchers": ["/logs"]}, "--watcher '/logs'"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("'", ".")):
        build(**kwargs)
