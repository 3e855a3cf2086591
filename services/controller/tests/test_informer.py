"""The informer against a real kube-apiserver: list + watch, and recovery from a dropped
stream and from `410 Gone` without missing a change made meanwhile."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from services.controller.informer import Informer
from services.controller.kube import ApiError, JsonObject, Kube
from services.controller.objects import Pod, pod_from_dict
from services.controller.tests import apiserver

if TYPE_CHECKING:  # a pytest plugin: importing it first would stop its assert rewriting
    from services.controller.tests.fixtures import Env
    from tests.cluster.controlplane import ControlPlane

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]

NS = "informer-test"


class FaultyKube(Kube):
    """The real API server, with faults injected into the watch that is open right now.

    Each watch's real events are pumped by a thread into a queue the informer reads, so the
    test can pause the open stream (the server's events are held back, as on a stalled
    connection), end it with an error (a dropped connection, a garbled line) or make it
    answer `410 Gone`, exactly where the informer is reading. `hold_next` blocks the next
    watch from starting, so a change can be made while no stream is open. Lists are counted
    to tell a resume (same resourceVersion, no list) from a relist.
    """

    def __init__(self, real: Kube, path: str) -> None:
        super().__init__(real._api)
        self.path = path
        self.lists = 0
        self.watching = threading.Event()
        self.may_watch = threading.Event()
        self.may_watch.set()
        self._lock = threading.Lock()
        self._open: tuple[queue.Queue[JsonObject | Exception | None], threading.Event] | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        if method == "GET" and path == self.path and "continue" not in (kwargs.get("query") or {}):
            with self._lock:
                self.lists += 1  # a list's first page
        return super().request(method, path, **kwargs)

    def watch(self, path: str, query: Mapping[str, str], *, timeout: float) -> Iterator[JsonObject]:
        self.may_watch.wait(30)
        events: queue.Queue[JsonObject | Exception | None] = queue.Queue()
        flowing = threading.Event()
        flowing.set()
        real = super().watch(path, query, timeout=timeout)

        def pump() -> None:
            try:
                for event in real:
                    flowing.wait()
                    events.put(event)
            except Exception as err:
                events.put(err)
            events.put(None)

        threading.Thread(target=pump, daemon=True).start()
        with self._lock:
            self._open = (events, flowing)
        self.watching.set()
        while (item := events.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    def _inject(self, item: JsonObject | Exception) -> None:
        with self._lock:
            assert self._open is not None, "no watch open"
            events, flowing = self._open
            self._open = None
        flowing.set()  # what the server still sends goes nowhere now
        self.watching.clear()
        events.put(item)

    def pause(self) -> None:
        """The open stream delivers nothing more (the server's events are held back)."""
        with self._lock:
            assert self._open is not None, "no watch open"
            self._open[1].clear()

    def drop(self) -> None:
        """The open stream breaks, as when the connection is reset."""
        self._inject(ApiError(0, "watch stream broken: ProtocolError: connection reset"))

    def gone(self) -> None:
        """The open stream answers 410 Gone: the resourceVersion is too old."""
        self._inject({"type": "ERROR", "object": {"kind": "Status", "code": 410}})

    def garble(self) -> None:
        """The open stream carries a line that is not JSON."""
        self._inject(ValueError("Expecting value: line 1 column 1 (char 0)"))

    def counted_lists(self) -> int:
        with self._lock:
            return self.lists


def pod_names(informer: Informer[Pod]) -> set[str]:
    return {pod.name for pod in informer.items()}


def informer_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "services.controller.informer"]


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [message for message in informer_logs(caplog) if "failed" in message]


def test_informer_resumes_a_dropped_stream_and_relists_on_gone(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.controller.informer")
    apiserver.namespace(env.admin, NS)
    path = f"/api/v1/namespaces/{NS}/pods"
    kube = FaultyKube(env.admin, path)
    changes: list[tuple[Any, Any]] = []
    informer: Informer[Pod] = Informer(
        kube,
        path,
        parse=pod_from_dict,
        on_change=lambda old, new: changes.append((old, new)),
        indexers={"node": lambda p: p.node_name},
        page_size=2,  # several pages: pagination is exercised
        watch_seconds=60,
    )
    for index in range(5):
        apiserver.create_pod(
            env.admin, NS, f"p{index}", node="n1", labels={}, containers={"c": index + 1}
        )
    stop = threading.Event()
    informer.start(stop)
    try:
        apiserver.eventually(informer.synced.is_set, what="synced")
        assert pod_names(informer) == {f"p{i}" for i in range(5)}
        apiserver.eventually(kube.watching.is_set, what="watching")
        lists = kube.counted_lists()

        # The open stream drops; the pod is created while no stream is open. The informer
        # resumes from its last resourceVersion (no relist) and misses nothing.
        kube.may_watch.clear()
        kube.drop()
        apiserver.create_pod(
            env.admin, NS, "during-drop", node="n2", labels={}, containers={"c": 9}
        )
        kube.may_watch.set()
        apiserver.eventually(lambda: "during-drop" in pod_names(informer), what="resumed")
        assert [p.name for p in informer.by_index("node", "n2")] == ["during-drop"]
        assert kube.counted_lists() == lists  # resumed, not relisted
        assert failures(caplog) == ["list/watch failed"]  # the drop, as a warning
        apiserver.eventually(kube.watching.is_set, what="watching again")

        # The open stream is held back, a pod is deleted (the stream never tells), then the
        # stream answers 410 Gone: at once a relist, which reports the deletion as a change.
        caplog.clear()
        changes.clear()
        kube.pause()
        apiserver.delete(env.admin, f"/api/v1/namespaces/{NS}/pods/p0?gracePeriodSeconds=0")
        kube.gone()
        apiserver.eventually(lambda: "p0" not in pod_names(informer), what="relisted")
        assert any(old is not None and old.name == "p0" and new is None for old, new in changes)
        assert kube.counted_lists() == lists + 1
        assert failures(caplog) == []  # expected, not a failure: no error, no backoff
        assert informer_logs(caplog) == ["watch expired, relisting"]
        # Index sets that become empty are dropped.
        assert "n1" in informer.index_values("node")
        for index in range(1, 5):
            apiserver.delete(
                env.admin, f"/api/v1/namespaces/{NS}/pods/p{index}?gracePeriodSeconds=0"
            )
        apiserver.eventually(lambda: informer.index_values("node") == ["n2"], what="n1 gone")
    finally:
        stop.set()


def test_informer_survives_an_api_server_restart(env: Env, control_plane: ControlPlane) -> None:
    apiserver.namespace(env.admin, NS)
    informer: Informer[Pod] = Informer(
        env.admin,
        f"/api/v1/namespaces/{NS}/pods",
        parse=pod_from_dict,
        on_change=lambda old, new: None,
        watch_seconds=60,
    )
    stop = threading.Event()
    informer.start(stop)
    try:
        apiserver.eventually(informer.synced.is_set, what="synced")
        control_plane.stop()  # etcd and kube-apiserver: every stream and connection drops
        control_plane.start()
        apiserver.create_pod(
            env.admin, NS, "after-restart", node="n1", labels={}, containers={"c": 1}
        )
        apiserver.eventually(
            lambda: "after-restart" in pod_names(informer), timeout=30, what="resumed after restart"
        )
    finally:
        stop.set()


def test_no_object_handler_or_garbled_stream_stops_the_informer(env: Env) -> None:
    ns = "informer-hostile"
    apiserver.namespace(env.admin, ns)
    kube = FaultyKube(env.admin, f"/api/v1/namespaces/{ns}/pods")
    handled: list[str] = []

    def parse(obj: JsonObject) -> Pod:
        if obj["metadata"]["name"] == "unparsable":
            raise TypeError("a parser bug")  # not the ModelError of a malformed object
        return pod_from_dict(obj)

    def on_change(old: Pod | None, new: Pod | None) -> None:
        current = new or old
        assert current is not None
        if current.name == "handler-fails":
            raise KeyError(current.name)
        handled.append(current.name)

    informer: Informer[Pod] = Informer(
        kube, f"/api/v1/namespaces/{ns}/pods", parse=parse, on_change=on_change, watch_seconds=5
    )
    for name in ("unparsable", "handler-fails", "fine"):
        apiserver.create_pod(env.admin, ns, name, node="n1", labels={}, containers={"c": 1})
    stop = threading.Event()
    thread = informer.start(stop)
    try:
        apiserver.eventually(informer.synced.is_set, what="synced")
        # The object the parser fails on is left out; the one whose handler fails is cached.
        assert pod_names(informer) == {"handler-fails", "fine"}
        assert "fine" in handled

        # The open stream is garbled: the informer relists and misses nothing.
        apiserver.eventually(kube.watching.is_set, what="watching")
        lists = kube.counted_lists()
        kube.may_watch.clear()
        kube.garble()
        apiserver.create_pod(
            env.admin, ns, "during-garble", node="n1", labels={}, containers={"c": 2}
        )
        kube.may_watch.set()
        apiserver.eventually(lambda: "during-garble" in pod_names(informer), what="relisted")
        assert kube.counted_lists() == lists + 1
        assert thread.is_alive()
    finally:
        stop.set()
