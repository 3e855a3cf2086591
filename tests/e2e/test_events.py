"""Scenarios 1 and 2: event lines for file operations, and recursive watches that follow
directories created after the watch started."""

from __future__ import annotations

from tests.e2e import expect
from tests.e2e.kube import Kube
from tests.e2e.system import FimSystem
from tests.e2e.workloads import pod, running, watched, watcher


def test_file_operations_become_event_lines(kube: Kube, system: FimSystem, namespace: str) -> None:
    kube.apply(pod("web", namespace, {"app": "web"}, "mkdir -p /data && exec sleep 3600"))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    subject = {
        "paths": ["/data"],
        "events": ["create", "modify", "closewrite", "movedfrom", "movedto", "delete"],
        "tags": {"team": "payments"},
    }
    kube.apply(watcher("data", namespace, {"app": "web"}, [subject]))
    watched(kube, namespace, "data", pods=1)

    kube.exec(namespace, "web", "echo hi > /data/a; mv /data/a /data/b; rm /data/b")

    lines = expect.events(
        system,
        node,
        namespace,
        [
            ("CREATE", "/data/a"),
            ("MODIFY", "/data/a"),
            ("CLOSEWRITE", "/data/a"),
            ("MOVEDFROM", "/data/a"),
            ("MOVEDTO", "/data/b"),
            ("DELETE", "/data/b"),
        ],
    )
    for line in lines:
        assert line["pod"] == "web"
        assert line["container"] == "app"
        assert line["watcher"] == f"{namespace}/data"
        assert line["node"] == node
        assert line["tags"] == {"team": "payments"}
        assert line["isDir"] is False


def test_recursive_watch_follows_new_directories(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    kube.apply(pod("app", namespace, {"app": "tree"}, "mkdir -p /srv && exec sleep 3600"))
    node = running(kube, namespace, "app")["spec"]["nodeName"]
    subject = {"paths": ["/srv"], "events": ["create"], "recursive": True}
    kube.apply(watcher("tree", namespace, {"app": "tree"}, [subject]))
    watched(kube, namespace, "tree", pods=1)

    kube.exec(namespace, "app", "mkdir -p /srv/new/deeper")
    expect.events(system, node, namespace, [("CREATE", "/srv/new"), ("CREATE", "/srv/new/deeper")])
    kube.exec(namespace, "app", "touch /srv/new/deeper/file")

    lines = expect.events(system, node, namespace, [("CREATE", "/srv/new/deeper/file")])
    dirs = {line["path"]: line["isDir"] for line in lines}
    assert dirs["/srv/new"] is True
    assert dirs["/srv/new/deeper/file"] is False
