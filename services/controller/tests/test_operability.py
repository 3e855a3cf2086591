"""Flags, the /metrics /healthz /readyz endpoints and the JSON log lines."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from services.controller.cli import parse_args
from services.controller.logs import JsonFormatter
from services.controller.metrics import Metrics, serve


def test_mtls_is_required_unless_insecure(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([])
    assert "fimd needs mTLS" in capsys.readouterr().err
    args = parse_args(["--insecure"])
    assert (args.resync_period, args.call_timeout, args.leader_elect) == (60.0, 5.0, True)
    assert (args.workers, args.max_sync_seconds) == (4, 300.0)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_and_probes() -> None:
    metrics = Metrics()
    ready = [False]
    server = serve(
        metrics,
        ("127.0.0.1", 0),
        healthy=lambda: [],
        ready=lambda: [] if ready[0] else ["caches not synced yet"],
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        metrics.actions.labels("create", "ok").inc(3)
        metrics.fimd_reachable.labels("n1").set(0)
        code, text = get(base + "/metrics")
        assert code == 200
        assert 'fim_controller_actions_total{action="create",result="ok"} 3.0' in text
        assert 'fim_controller_fimd_reachable{node="n1"} 0.0' in text
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz") == (503, "not ok\ncaches not synced yet\n")
        ready[0] = True
        assert get(base + "/readyz") == (200, "ok\n")
    finally:
        server.shutdown()


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord(
        "services.controller", logging.WARNING, "x.py", 1, "sync %s", ("failed",), None
    )
    record.key = "node:n1"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["msg"], line["key"]) == ("warning", "sync failed", "node:n1")
    assert line["time"].endswith("+00:00")
