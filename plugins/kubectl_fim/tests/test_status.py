"""The status tables."""

from __future__ import annotations

from typing import Any

from plugins.kubectl_fim.status import (
    NODE_HEADERS,
    Metrics,
    capacity_cells,
    node_rows,
    parse_metrics,
    size,
    table,
    watcher_rows,
)

METRICS = """# HELP fimd_watches Watches by phase
# TYPE fimd_watches gauge
fimd_watches{phase="active"} 5.0
fimd_watches{phase="pending"} 1.0
fimd_watches{phase="failed"} 0.0
fimd_watches_other{phase="active"} 9.0
fimd_inotify_watches 120.0
fimd_inotify_max_user_watches 192536.0
fimd_inotify_watch_budget 96268.0
fimd_memory_working_set_bytes 6.7108864e+07
fimd_memory_budget_bytes 2.68435456e+08
fimd_engines 2.0
fimd_engines_running 2.0
fimd_events_total{event="MODIFY",watcher="shop/logs"} 12.0
fimd_unknown NaN
garbage line
"""


def test_parse_metrics() -> None:
    m = parse_metrics(METRICS)
    assert m == Metrics(
        watches=6, active=5, inotify=120, inotify_budget=96268, max_user_watches=192536,
        memory=64 << 20, memory_budget=256 << 20, engines=2, engines_running=2,
    )  # fmt: skip
    assert capacity_cells(m) == ("6 (5 active)", "120/96268 (0%)", "64Mi/256Mi (25%)", "2/2")
    assert parse_metrics("") == Metrics()
    assert capacity_cells(Metrics()) == ("?", "?", "?", "?")
    assert capacity_cells(None) == ("?", "?", "?", "?")
    no_budget = Metrics(inotify=10, max_user_watches=100, memory=2048)
    assert capacity_cells(no_budget)[1:3] == ("10/100 (10%)", "2Ki/-")


def test_size() -> None:
    assert [size(v) for v in (5, 2048, 3 << 20, 5 << 30)] == ["5", "2Ki", "3Mi", "5Gi"]


def _fimd(name: str, node: str, ready: bool, restarts: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "fimd", "restartCount": restarts}],
        },
    }


def test_node_rows() -> None:
    pods = [_fimd("fimd-b", "n2", False, 3), _fimd("fimd-a", "n1", True, 0),
            {"metadata": {"name": "fimd-\x1b[2J"}, "status": {"phase": "Pending"}}]  # fmt: skip
    rows = node_rows(pods, {"fimd-a": parse_metrics(METRICS), "fimd-b": None})
    assert rows[0] == ("<none>", "fimd-\\x1b[2J", "Pending", "no", "0", "?", "?", "?", "?")
    assert rows[1][:5] == ("n1", "fimd-a", "Running", "yes", "0")
    assert rows[1][5] == "6 (5 active)"
    assert rows[2][:5] == ("n2", "fimd-b", "Running", "no", "3")
    text = table(NODE_HEADERS, rows)
    assert text.splitlines()[0].split() == list(NODE_HEADERS)
    assert len({line.index("fimd") for line in text.splitlines()[1:]}) == 1  # aligned


def test_watcher_rows() -> None:
    items: list[dict[str, Any]] = [
        {"metadata": {"namespace": "shop", "name": "b"},
         "status": {"observablePods": 4, "watchedPods": 4,
                    "conditions": [{"type": "Degraded", "status": "False"},
                                   {"type": "Ready", "status": "True", "reason": "Watched"}]}},
        {"metadata": {"namespace": "shop", "name": "a"}},
    ]  # fmt: skip
    assert watcher_rows(items) == [
        ("shop", "a", "?", "?", "?", ""),
        ("shop", "b", "4", "4", "True", "Watched"),
    ]
