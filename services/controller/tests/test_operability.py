"""Flags, the /metrics /healthz /readyz endpoints and the JSON log lines."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest

from services.controller.cli import parse_args, serve_probes
from services.controller.controller import Controller, Settings
from services.controller.events import EventRecorder
from services.controller.fimd_client import FimdPool
from services.controller.kube import Kube
from services.controller.logs import JsonFormatter
from services.controller.metrics import Metrics


def test_mtls_is_required_unless_insecure(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([])
    assert "fimd needs mTLS" in capsys.readouterr().err
    args = parse_args(["--insecure"])
    assert (args.resync_period, args.call_timeout, args.leader_elect) == (60.0, 5.0, True)
    assert (args.workers, args.max_sync_seconds, args.node_grace_period) == (4, 300.0, 120.0)


@pytest.mark.parametrize(
    "flags",
    [
        ["--lease-duration=8", "--renew-deadline=8"],
        ["--renew-deadline=6", "--retry-period=6"],
        ["--call-timeout=7"],  # + retry 1.5 > lease 8: the fence would never open
    ],
)
def test_election_timings_that_cannot_fence_are_refused(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--insecure", *flags])
    assert "leader election needs" in capsys.readouterr().err
    parse_args(["--insecure", "--no-leader-elect", *flags])  # no election, no fence


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_and_probes_answered_by_the_controller() -> None:
    metrics = Metrics()
    kube = Kube(None)  # no informer runs: nothing calls the API server
    controller = Controller(
        kube,
        FimdPool(None, deadline=1.0),
        Settings(namespace="fim-system"),
        metrics,
        EventRecorder(kube, metrics, instance="test"),
    )
    server = serve_probes(controller, metrics, ("127.0.0.1", 0))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    stop = threading.Event()
    try:
        metrics.actions.labels("create", "ok").inc(3)
        metrics.fimd_reachable.labels("n1").set(0)
        code, text = get(base + "/metrics")
        assert code == 200
        assert 'fim_controller_actions_total{action="create",result="ok"} 3.0' in text
        assert 'fim_controller_fimd_reachable{node="n1"} 0.0' in text
        # A standby whose caches are not synced: alive, not ready.
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz") == (503, "not ok\ncaches not synced yet\n")
        for informer in (controller.fimds, controller.watchers, controller.pods):
            informer.synced.set()
        assert get(base + "/readyz") == (200, "ok\n")
        # Its sweeper dies (stop ends it as a crash would): no longer healthy.
        controller.start_workers(stop)
        assert get(base + "/healthz") == (200, "ok\n")
        stop.set()
        deadline = time.monotonic() + 10
        while get(base + "/healthz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(base + "/healthz") == (503, "not ok\nthread sweeper exited\n")
    finally:
        stop.set()
        controller.shut_down(timeout=5)
        server.shutdown()


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord(
        "services.controller", logging.WARNING, "x.py", 1, "sync %s", ("failed",), None
    )
    record.key = "node:n1"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["msg"], line["key"]) == ("warning", "sync failed", "node:n1")
    assert line["time"].endswith("+00:00")
