"""Scenarios 6 and 7: overlapping FimWatchers both report; status counts match reality;
the API server rejects an invalid FimWatcher with a clear message."""

from __future__ import annotations

import pytest

from tests.e2e import expect
from tests.e2e.kube import Kube, KubectlError
from tests.e2e.system import FimSystem
from tests.e2e.workloads import pod, running, watched, watcher


def test_two_watchers_on_one_pod_both_report(kube: Kube, system: FimSystem, namespace: str) -> None:
    kube.apply(
        pod("web", namespace, {"app": "web", "tier": "front"}, "mkdir -p /d; exec sleep 3600")
    )
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    subject = {"paths": ["/d"], "events": ["create"]}
    kube.apply(
        watcher("one", namespace, {"app": "web"}, [subject | {"tags": {"by": "one"}}]),
        watcher("two", namespace, {"tier": "front"}, [subject | {"tags": {"by": "two"}}]),
    )
    watched(kube, namespace, "one", pods=1)
    watched(kube, namespace, "two", pods=1)
    kube.exec(namespace, "web", "touch /d/x")
    for name in ("one", "two"):
        lines = expect.exactly_once(
            system, node, namespace, [("CREATE", "/d/x")], watcher=f"{namespace}/{name}"
        )
        assert [line["tags"] for line in lines] == [{"by": name}]


def test_status_counts_match_the_running_pods(
    kube: Kube, system: FimSystem, namespace: str
) -> None:
    for name, app in (("a", "web"), ("b", "web"), ("c", "db")):
        kube.apply(pod(name, namespace, {"app": app}))
    for name in "abc":
        running(kube, namespace, name)
    kube.apply(
        watcher("w", namespace, {"app": "web"}, [{"paths": ["/var/log"], "events": ["create"]}])
    )
    watched(kube, namespace, "w", pods=2)
    kube.run("delete", "pod", "b", f"--namespace={namespace}", "--timeout=60s")
    watched(kube, namespace, "w", pods=1)
    conditions = kube.get("fimwatcher", "w", namespace)["status"].get("conditions", [])
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.mark.parametrize(
    ("subject", "complaint"),
    [
        ({"paths": ["relative/path"], "events": ["create"]}, "paths"),
        ({"paths": ["/ok"], "events": ["explode"]}, "events"),
        ({"paths": ["/ok"], "events": ["create"], "maxDepth": -1}, "maxDepth"),
    ],
)
def test_invalid_watcher_is_rejected(
    kube: Kube, namespace: str, subject: dict[str, object], complaint: str
) -> None:
    with pytest.raises(KubectlError) as rejected:
        kube.apply(watcher("bad", namespace, {"app": "web"}, [subject]))
    message = str(rejected.value)
    assert "Invalid value" in message or "Unsupported value" in message, message
    assert complaint in message
    assert not kube.exists("fimwatcher", "bad", namespace)
