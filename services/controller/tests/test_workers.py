"""Workers survive whatever a sync raises, and /healthz tells the truth about them.

In process, with the real Controller, work queue, metrics and HTTP endpoints; the informers
are marked synced without an API server and the sync handlers are replaced, so a test
decides exactly what each key's sync does.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import attrs
import pytest

from fim.v1 import fim_pb2
from services.controller.bounds import MAX_LOGGED
from services.controller.controller import Controller, Settings
from services.controller.desired import Key
from services.controller.events import EventRecorder
from services.controller.fimd_client import FimdPool, Tls
from services.controller.keys import NodeKey, QueueKey, Result, WatcherKey
from services.controller.kube import Kube
from services.controller.logs import JsonFormatter
from services.controller.metrics import Metrics, serve
from services.controller.state import NodeState, Observed
from services.controller.tests import builders


class BoomError(RuntimeError):
    """What a buggy sync raises: neither ApiError nor FimdError."""


class OopsError(ValueError):
    """What a buggy failure handler raises."""


class Die(BaseException):
    """Escapes `except Exception`: ends the worker thread."""


def eventually(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


class Harness:
    """A controller whose node/watcher syncs are `on_node` / `on_watcher`."""

    def __init__(
        self,
        *,
        workers: int = 4,
        max_sync_seconds: float = 300.0,
        resync_seconds: float = 60.0,
        pool: FimdPool | None = None,
    ) -> None:
        self.metrics = Metrics()
        kube = Kube(None)  # never called: no informer runs, no sync handler calls out
        settings = Settings(
            namespace="fim-system",
            workers=workers,
            max_sync_seconds=max_sync_seconds,
            resync_seconds=resync_seconds,
        )
        self.controller = Controller(
            kube,
            pool or FimdPool(None, deadline=1.0),
            settings,
            self.metrics,
            EventRecorder(kube, self.metrics, instance="test"),
        )
        for informer in (self.controller.fimds, self.controller.watchers, self.controller.pods):
            informer.synced.set()
        self.stop = threading.Event()
        self.calls: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.faults: dict[str, Callable[[], None]] = {}

    def handler(self, kind: str) -> Callable[[str], Result]:
        def sync(name: str) -> Result:
            key = f"{kind}:{name}"
            with self.lock:
                self.calls.append((key, time.monotonic()))
                fault = self.faults.get(key)
            if fault is not None:
                fault()
            return Result()

        return sync

    def start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(self.controller, "_sync_node", self.handler("node"))
        monkeypatch.setattr(self.controller, "_sync_watcher", self.handler("watcher"))
        self.controller.start_workers(self.stop)

    def add(self, key: str) -> None:
        """Queues "node:<name>" or "watcher:<name>" as the typed key."""
        kind, _, name = key.partition(":")
        typed: QueueKey = NodeKey(name) if kind == "node" else WatcherKey(name)
        self.controller.queue.add(typed)

    def attempts(self, key: str) -> list[float]:
        with self.lock:
            return [at for k, at in self.calls if k == key]

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.faults.clear()
        self.stop.set()
        self.controller.shut_down(timeout=5)


@pytest.fixture
def harness() -> Iterator[Harness]:
    created = Harness()
    yield created
    created.close()


def raise_boom() -> None:
    raise BoomError("cannot handle " + "/proc/1/root/" + "x" * 100_000)


@pytest.mark.parametrize("kind", ["node", "watcher"])
def test_a_sync_that_raises_costs_only_its_key_and_is_retried_with_backoff(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.INFO, logger="services.controller")
    poisoned = f"{kind}:poisoned"
    harness.faults[poisoned] = raise_boom
    harness.start(monkeypatch)
    harness.add(poisoned)
    others = [f"{kind}:other-{i}" for i in range(20)]
    for key in others:
        harness.add(key)

    # Every other key is synced, and keeps being synced, while the poisoned one fails.
    eventually(lambda: all(harness.attempts(k) for k in others), what="other keys synced")
    eventually(lambda: len(harness.attempts(poisoned)) >= 6, what="poisoned key retried")
    harness.add(others[0])
    eventually(lambda: len(harness.attempts(others[0])) == 2, what="others still synced")
    assert harness.controller.health() == []
    assert harness.sample("fim_controller_workers_alive") == 4

    # Retried with the queue's per-key exponential backoff (0.05 s doubling), not at once.
    attempts = harness.attempts(poisoned)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for index, gap in enumerate(gaps[:5]):
        assert gap >= 0.05 * 2**index, gaps
    failures = len(attempts)
    counted = harness.sample("fim_controller_sync_errors_total", kind=kind, error="BoomError")
    assert failures - 1 <= counted <= failures

    # Logged with the key, the type and where it was raised; bounded, however long the message.
    records = [r for r in caplog.records if r.getMessage() == "sync failed unexpectedly"]
    assert records
    first = records[0]
    assert (vars(first)["key"], vars(first)["error_type"]) == (poisoned, "BoomError")
    error = vars(first)["error"]
    assert error.startswith("BoomError: cannot handle /proc/1/root/xxx")
    assert len(error) <= MAX_LOGGED
    assert error.endswith(
        f"[truncated, {len('BoomError: cannot handle /proc/1/root/') + 100_000} characters]"
    )
    assert "raise_boom" in vars(first)["traceback"]
    delays = [vars(r)["retry_in"] for r in records if vars(r)["key"] == poisoned]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
    assert len(JsonFormatter().format(first)) < 8 * MAX_LOGGED

    # The fault goes: the next retry succeeds and the key's backoff is reset.
    del harness.faults[poisoned]
    eventually(
        lambda: (
            harness.sample("fim_controller_reconciles_total", kind=kind, result="ok")
            >= len(others) + 2
        ),
        what="poisoned key converges",
    )
    typed: QueueKey = NodeKey("poisoned") if kind == "node" else WatcherKey("poisoned")
    assert harness.controller.queue.retry(typed) == 0.05  # forgotten: backoff starts over


def test_a_failing_failure_handler_does_not_kill_the_worker(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.faults["node:poisoned"] = raise_boom

    def broken(node: str, err: Exception) -> None:
        raise OopsError("the handler itself is broken")

    monkeypatch.setattr(harness.controller, "_node_sync_failed", broken)
    harness.start(monkeypatch)
    harness.add("node:poisoned")
    eventually(lambda: len(harness.attempts("node:poisoned")) >= 3, what="retried")
    assert harness.sample("fim_controller_sync_errors_total", kind="worker", error="OopsError") >= 2
    assert harness.controller.health() == []


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def healthz(harness: Harness) -> Iterator[Callable[[], tuple[int, str]]]:
    controller = harness.controller
    server = serve(
        harness.metrics,
        ("127.0.0.1", 0),
        healthy=controller.health,
        ready=lambda: [] if controller.synced() else ["caches not synced yet"],
    )
    yield lambda: get(f"http://127.0.0.1:{server.server_address[1]}/healthz")
    server.shutdown()


def test_healthz_fails_while_fewer_workers_are_alive_than_configured(
    harness: Harness,
    healthz: Callable[[], tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert healthz() == (200, "ok\n")  # a standby runs no workers: healthy without them

    def die() -> None:
        raise Die("escapes every except Exception")

    harness.faults["node:deadly"] = die
    harness.start(monkeypatch)
    assert healthz() == (200, "ok\n")
    harness.add("node:deadly")  # kills exactly one worker

    eventually(lambda: healthz()[0] == 503, what="/healthz unhealthy")
    assert healthz() == (503, "not ok\n3 of 4 workers alive\n")
    assert harness.sample("fim_controller_workers_alive") == 3
    [died] = [r for r in caplog.records if r.getMessage() == "worker died"]
    assert (died.levelname, vars(died)["error_type"]) == ("CRITICAL", "Die")
    assert "die" in vars(died)["traceback"]
    # The remaining workers go on.
    harness.add("node:fine")
    eventually(lambda: harness.attempts("node:fine"), what="remaining workers sync")


def test_healthz_fails_while_a_sync_is_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    harness = Harness(workers=2, max_sync_seconds=0.3)
    server = serve(
        harness.metrics, ("127.0.0.1", 0), healthy=harness.controller.health, ready=lambda: []
    )
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    release = threading.Event()

    def slow() -> None:
        release.wait(10)

    harness.faults["node:slow"] = slow
    try:
        harness.start(monkeypatch)
        harness.add("node:slow")
        eventually(lambda: get(url)[0] == 503, what="stuck sync reported")
        code, body = get(url)
        assert code == 503
        assert body.startswith("not ok\nworker-")
        assert "stuck: sync of node:slow running for" in body
        assert "(limit 0.3 s)" in body
        release.set()
        eventually(lambda: get(url) == (200, "ok\n"), what="healthy once the sync returns")
    finally:
        release.set()
        server.shutdown()
        harness.close()


def test_a_dead_informer_or_sweeper_is_reported(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.start(monkeypatch)
    assert harness.controller.health() == []
    harness.stop.set()  # ends the sweeper, as a crash would
    eventually(lambda: harness.controller.health() == ["thread sweeper exited"], what="sweeper")


def test_probe_answers_list_each_problem_bounded() -> None:
    problems = [f"problem {i} " + "p" * 1000 for i in range(30)]
    server = serve(Metrics(), ("127.0.0.1", 0), healthy=lambda: problems, ready=lambda: [])
    try:
        code, body = get(f"http://127.0.0.1:{server.server_address[1]}/healthz")
    finally:
        server.shutdown()
    lines = body.splitlines()
    assert code == 503
    assert lines[0] == "not ok"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "and 10 more"
    assert all(len(line) <= 512 for line in lines)
    assert lines[1].startswith("problem 0 ppp")
    assert lines[1].endswith(f"[truncated, {len(problems[0])} characters]")


def test_the_sweeper_survives_tls_files_that_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tls = Tls(ca=b"ca", cert=b"cert", key=b"key")
    reads: list[float] = []
    broken = threading.Event()

    def load() -> Tls:
        reads.append(time.monotonic())
        if broken.is_set():
            raise FileNotFoundError("/etc/fim/tls/..data/tls.key (mid-rotation)")
        return tls

    harness = Harness(resync_seconds=0.1, pool=FimdPool(load, deadline=1.0))
    try:
        harness.start(monkeypatch)
        eventually(lambda: len(reads) >= 3, what="sweeps re-read the TLS files")
        broken.set()

        def failed_sweeps() -> float:
            labels = {"kind": "sweep", "error": "FileNotFoundError"}
            return harness.sample("fim_controller_sync_errors_total", **labels)

        eventually(lambda: failed_sweeps() >= 3, what="failed sweeps")
        assert harness.controller.health() == []  # the sweeper thread is still alive
        failed = [r for r in caplog.records if r.getMessage() == "sync failed unexpectedly"]
        assert vars(failed[0])["kind"] == "sweep"
        broken.clear()
        swept = len(reads)
        eventually(lambda: len(reads) >= swept + 3, what="sweeps go on once the files are back")
        assert harness.controller.health() == []
    finally:
        harness.close()


def test_a_new_scan_request_annotation_syncs_the_nodes_that_hold_the_watcher(
    harness: Harness,
) -> None:
    # Not only at the next sweep: `kubectl fim scan` waits for the answer.
    watcher = builders.watcher(uid="w1")
    key = Key("w1", "p1", "app")
    state = NodeState(
        node="n1",
        instance_id="i",
        watches={key: Observed(key=key, config_hash="h", phase=fim_pb2.WATCH_PHASE_ACTIVE)},
    )
    harness.controller.book.update("n1", lambda r: attrs.evolve(r, state=state))
    queue = harness.controller.queue
    harness.controller._watcher_changed(watcher, attrs.evolve(watcher, status=watcher.status))
    assert [queue.get() for _ in range(len(queue))] == [WatcherKey(watcher.key)]
    queue.done(WatcherKey(watcher.key))
    asked = attrs.evolve(watcher, scan_requested="2026-12-01T10:00:00.000001Z-ab")
    harness.controller._watcher_changed(watcher, asked)
    assert {queue.get() for _ in range(len(queue))} == {WatcherKey(watcher.key), NodeKey("n1")}
