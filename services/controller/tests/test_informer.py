"""The informer against a real kube-apiserver: list + watch, and recovery from a dropped
stream and from `410 Gone` without missing a change made meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from services.controller.informer import Informer
from services.controller.kube import ApiError, JsonObject, Kube
from services.controller.objects import Pod, pod_from_dict
from services.controller.tests import apiserver

if TYPE_CHECKING:  # a pytest plugin: importing it first would stop its assert rewriting
    from services.controller.tests.fixtures import Env
    from tests.cluster.controlplane import ControlPlane

pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]

NS = "informer-test"


class FlakyKube(Kube):
    """The real API server, but the next watches fail as scripted (then behave)."""

    def __init__(self, real: Kube) -> None:
        super().__init__(real._api)
        self.script: list[str] = []
        self.broken = threading.Event()

    def watch(self, path: str, query: Mapping[str, str], *, timeout: float) -> Iterator[JsonObject]:
        if self.script:
            failure = self.script.pop(0)
            self.broken.wait(10)  # let the test change the world while the stream is down
            if failure == "drop":
                raise ApiError(0, "watch stream broken: connection reset")
            if failure == "garbled":  # what json.loads raises for a corrupt line
                raise ValueError("Expecting value: line 1 column 1 (char 0)")
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            return
        yield from super().watch(path, query, timeout=timeout)


def pod_names(informer: Informer[Pod]) -> set[str]:
    return {pod.name for pod in informer.items()}


def test_informer_recovers_from_drops_and_gone(env: Env) -> None:
    apiserver.namespace(env.admin, NS)
    kube = FlakyKube(env.admin)
    changes: list[tuple[Any, Any]] = []
    informer: Informer[Pod] = Informer(
        kube,
        f"/api/v1/namespaces/{NS}/pods",
        parse=pod_from_dict,
        on_change=lambda old, new: changes.append((old, new)),
        indexers={"node": lambda p: p.node_name},
        page_size=2,  # several pages: pagination is exercised
        watch_seconds=5,
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

        # A dropped stream: resumes from the last resourceVersion, missing nothing.
        kube.script = ["drop"]
        apiserver.create_pod(
            env.admin, NS, "during-drop", node="n2", labels={}, containers={"c": 9}
        )
        kube.broken.set()
        apiserver.eventually(lambda: "during-drop" in pod_names(informer), what="resumed")
        assert [p.name for p in informer.by_index("node", "n2")] == ["during-drop"]

        # 410 Gone: relists; a deletion that happened meanwhile is reported as a change.
        kube.broken.clear()
        kube.script = ["gone"]
        changes.clear()
        apiserver.delete(env.admin, f"/api/v1/namespaces/{NS}/pods/p0?gracePeriodSeconds=0")
        kube.broken.set()
        apiserver.eventually(lambda: "p0" not in pod_names(informer), what="relisted")
        assert any(old is not None and old.name == "p0" and new is None for old, new in changes)
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
    kube = FlakyKube(env.admin)
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

        # A garbled stream: the informer relists and misses nothing.
        kube.script = ["garbled"]
        apiserver.create_pod(
            env.admin, ns, "during-garble", node="n1", labels={}, containers={"c": 2}
        )
        kube.broken.set()
        apiserver.eventually(lambda: "during-garble" in pod_names(informer), what="relisted")
        assert thread.is_alive()
    finally:
        stop.set()
