"""Scenario 11: pod log ingestion through an OpenTelemetry Collector (deploy/logging/otel).

The component is added on top of the overlay the suite deploys; a file written in a watched
pod gives a fim event line, and the collector on that node exports it as an OTLP record whose
attributes are the line's fields and whose resource is the fimd pod (from the log file path).
The records are read from the node's /var/log/fim-otel through a pod that mounts it, so the
scenario runs on any cluster where the images are loadable.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from images.push import push
from libs.auditstream import seal
from tests.cluster.cluster import Cluster
from tests.cluster.config import Binaries
from tests.e2e import expect
from tests.e2e.kube import Kube, wait_for
from tests.e2e.otlp import Record, records, rfc3339_unix_nano
from tests.e2e.system import (
    REPO,
    SYSTEM_NAMESPACE,
    FimSystem,
    ignore_missing,
    materialized,
    overlay_dir,
)
from tests.e2e.workloads import WORKLOAD_IMAGE, pod, running, watched, watcher

OTELCOL_IMAGE = ("localhost/fim-k8s/otelcol", "local")
OUTPUT_DIR = "/var/log/fim-otel"
OUTPUT_FILE = "fimd.otlp.jsonl"
TEXT_FORMAT = "FIM {event} {path} in {namespace}/{pod}"


def _unsealed(body: object) -> object:
    """A record's body without fimd's seal (a plain-text line's ` fim-seal ...` trailer)."""
    parsed = seal.parse(body.encode()) if isinstance(body, str) else None
    return body if parsed is None else parsed.body.decode()


def _render(kube: Kube, directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` renders."""
    rendered = kube.run("kustomize", str(directory), timeout=120)
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


@pytest.fixture(scope="module")
def collector(
    kube: Kube, system: FimSystem, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    """deploy/logging/otel added on top of the suite's overlay, the way docs/logging.md says
    (a kustomization with the overlay as resource and the component). Only the objects the
    component adds are applied (the deployed fim-k8s stays as the suite made it), and they
    are deleted on teardown."""
    # Where the kubelets keep pod logs: the local cluster's own directory, else
    # FIM_E2E_POD_LOGS_DIR (the kubelet's podLogsDir), by default /var/log/pods.
    pod_logs = os.environ.get("FIM_E2E_POD_LOGS_DIR", "/var/log/pods")
    registry = os.environ.get("FIM_E2E_REGISTRY", "")
    if not os.environ.get("KUBECONFIG"):
        cluster: Cluster = request.getfixturevalue("local_cluster")
        pod_logs = str(cluster.node.pod_logs_dir)
        registry = cluster.registry
    image = _otelcol_image(registry)
    with tempfile.TemporaryDirectory() as scratch:
        overlay = materialized(overlay_dir(), Path(scratch))
        component = overlay.parents[1] / "logging" / "otel"
        if not component.exists():  # an overlay outside this repository's deploy tree
            component = Path(scratch, "otel")
            shutil.copytree(REPO / "deploy" / "logging" / "otel", component)
        top = Path(scratch, "with-otel")
        top.mkdir()
        (top / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(overlay, top)],
                    "components": [os.path.relpath(component, top)],
                    "images": [image],
                }
            )
        )
        deployed = {_key(obj) for obj in _render(kube, overlay)}
        new = [obj for obj in _render(kube, top) if _key(obj) not in deployed]
        kinds = sorted(obj["kind"] for obj in new)
        assert kinds == ["ConfigMap", "DaemonSet", "NetworkPolicy", "ServiceAccount"]
        _use_pod_logs_dir(new, pod_logs)
        kube.run("apply", "-f", "-", stdin=yaml.safe_dump_all(new), timeout=180)
        added = [_key(obj) for obj in new]
    try:
        try:
            wait_for("collector DaemonSet ready", lambda: _ready(kube), timeout=120)
        except TimeoutError as error:
            selector = "--selector=app.kubernetes.io/name=fim-otelcol"
            pods = kube.run("describe", "pods", f"--namespace={SYSTEM_NAMESPACE}", selector)
            raise TimeoutError(f"{error}\n{pods}") from error
        yield image
    finally:
        for kind, namespace, name in sorted(added, key=lambda o: o[0] != "DaemonSet"):
            _delete(kube, kind, namespace, name)
        _remove_output(kube)


def _otelcol_image(registry: str) -> dict[str, str]:
    """The kustomize `images:` entry for the collector: pushed by digest to the registry (the
    local cluster's own, or FIM_E2E_REGISTRY) like the service images, from the layout in
    the archive `python3 -m images.build otelcol` wrote; without a registry, the tag the
    nodes were loaded with."""
    if not registry:
        return {"name": "fim-otelcol", "newName": OTELCOL_IMAGE[0], "newTag": OTELCOL_IMAGE[1]}
    built = Binaries.from_env().images
    with tempfile.TemporaryDirectory() as scratch:
        layout = Path(scratch, "otelcol.oci")
        with tarfile.open(built / "otelcol.tar") as archive:
            for member in archive.getmembers():  # regular files, relative names only
                content = archive.extractfile(member) if member.isfile() else None
                if content is None or member.name.startswith("/") or ".." in member.name:
                    continue
                (layout / member.name).parent.mkdir(parents=True, exist_ok=True)
                (layout / member.name).write_bytes(content.read())
        shutil.copy(built / "otelcol.digest", Path(scratch, "otelcol.digest"))
        pushed = push(registry, Path(scratch), "otelcol")
    return {"name": "fim-otelcol", "newName": pushed.repository, "digest": pushed.digest}


def _use_pod_logs_dir(objects: list[dict[str, Any]], directory: str) -> None:
    """Points the DaemonSet's pod-logs volume at the kubelets' podLogsDir, if they keep pod
    logs elsewhere than /var/log/pods: inside the collector they stay at /var/log/pods."""
    (daemonset,) = [obj for obj in objects if obj["kind"] == "DaemonSet"]
    volumes = daemonset["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "pod-logs"]
    assert volume["hostPath"]["path"] == "/var/log/pods"
    volume["hostPath"]["path"] = directory


def _delete(kube: Kube, kind: str, namespace: str, name: str) -> None:
    ignore_missing(lambda: kube.run("delete", kind, name, f"--namespace={namespace}", "--wait"))


def _remove_output(kube: Kube) -> None:
    """Removes the collector's files from every node, through a pod (the directory itself
    is the node's: the local cluster's teardown removes it if it created it)."""
    namespace = f"e2e-otel-cleanup-{secrets.token_hex(3)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        for node in kube.get("nodes")["items"]:
            kube.apply(_reader(namespace, node["metadata"]["name"]))
            running(kube, namespace, "otel-reader")
            kube.exec(namespace, "otel-reader", "rm -f /out/fimd.otlp*.jsonl")
            kube.run("delete", "pod", "otel-reader", f"--namespace={namespace}", "--wait=true")
    finally:
        ignore_missing(lambda: kube.run("delete", "namespace", namespace, "--wait=false"))


def _ready(kube: Kube) -> bool:
    status = kube.get("daemonset", "fim-otelcol", SYSTEM_NAMESPACE)["status"]
    want = status.get("desiredNumberScheduled", 0)
    return bool(want) and status.get("numberReady") == want == status.get("updatedNumberScheduled")


def _reader(namespace: str, node: str) -> dict[str, Any]:
    """A busybox pod on `node` with the node's collector output directory mounted."""
    spec = pod("otel-reader", namespace, {"app": "otel-reader"})
    spec["spec"]["nodeName"] = node
    spec["spec"]["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/out"}]
    spec["spec"]["volumes"] = [
        {"name": "out", "hostPath": {"path": OUTPUT_DIR, "type": "DirectoryOrCreate"}}
    ]
    assert spec["spec"]["containers"][0]["image"] == WORKLOAD_IMAGE
    return spec


def _exported(kube: Kube, namespace: str) -> list[Record]:
    out = kube.exec(namespace, "otel-reader", f"cat /out/{OUTPUT_FILE} 2>/dev/null || true")
    return records(out)


def test_event_lines_become_otel_records(
    kube: Kube, system: FimSystem, namespace: str, collector: dict[str, str], figures: list[str]
) -> None:
    kube.apply(pod("web", namespace, {"app": "otel"}, "mkdir -p /data && exec sleep 3600"))
    node = running(kube, namespace, "web")["spec"]["nodeName"]
    subject = {"paths": ["/data"], "events": ["create", "closewrite"], "tags": {"team": "pay"}}
    kube.apply(
        watcher("otel", namespace, {"app": "otel"}, [subject]),
        # The same event as a plain-text line: not JSON, exported with the line as its body.
        watcher(
            "otel-text",
            namespace,
            {"app": "otel"},
            [{"paths": ["/data"], "events": ["create"]}],
            log_format=TEXT_FORMAT,
        ),
    )
    watched(kube, namespace, "otel", pods=1)
    watched(kube, namespace, "otel-text", pods=1)
    kube.apply(_reader(namespace, node))
    running(kube, namespace, "otel-reader")

    kube.exec(namespace, "web", "echo hi > /data/otel.txt")
    lines = expect.events(
        system,
        node,
        namespace,
        [("CREATE", "/data/otel.txt"), ("CLOSEWRITE", "/data/otel.txt")],
        watcher=f"{namespace}/otel",
    )
    text = f"FIM CREATE /data/otel.txt in {namespace}/web"

    def exported() -> list[Record] | None:
        found = [
            r
            for r in _exported(kube, namespace)
            if (r.attributes.get("kind"), r.attributes.get("namespace")) == ("event", namespace)
            or _unsealed(r.body) == text
        ]
        return found if len(found) >= 3 else None

    started = time.monotonic()
    wait_for("the collector's records of the three lines", exported, timeout=60, interval=0.5)
    latency = time.monotonic() - started
    time.sleep(expect.SETTLE)  # a duplicate record (a log read twice) would show up by now
    got = exported() or []

    fimd = kube.get("pod", system.fimd_pod(node), SYSTEM_NAMESPACE)
    (status,) = [s for s in fimd["status"]["containerStatuses"] if s["name"] == "fimd"]
    name, uid = fimd["metadata"]["name"], fimd["metadata"]["uid"]
    restarts = status["restartCount"]
    resource = {
        "k8s.namespace.name": SYSTEM_NAMESPACE,
        "k8s.pod.name": name,
        "k8s.pod.uid": uid,
        "k8s.container.name": "fimd",
        "k8s.container.restart_count": str(restarts),
        "k8s.node.name": node,
    }
    runtime = {
        "log.iostream": "stdout",
        "logtag": "F",
        "log.file.path": f"/var/log/pods/{SYSTEM_NAMESPACE}_{name}_{uid}/fimd/{restarts}.log",
    }

    assert len(got) == 3, got
    for line in lines:
        (record,) = [r for r in got if r.attributes.get("event") == line["event"]]
        assert record.resource == resource
        assert record.attributes == {**line, **runtime}
        assert json.loads(str(record.body)) == line
        assert record.time_unix_nano == rfc3339_unix_nano(line["time"])
        # The fields the issue names, spelled out.
        attributes = record.attributes
        assert attributes["namespace"] == namespace
        assert attributes["pod"] == "web"
        assert attributes["container"] == "app"
        assert attributes["watcher"] == f"{namespace}/otel"
        assert attributes["path"] == "/data/otel.txt"
        assert attributes["tags"] == {"team": "pay"}
    (plain,) = [r for r in got if _unsealed(r.body) == text]
    assert str(plain.body).startswith(text + " fim-seal seq=")  # sealed with a text trailer
    assert plain.resource == resource
    assert plain.attributes == runtime
    # fimd's operational lines come through too, with their level as the severity.
    armed = [
        r
        for r in _exported(kube, namespace)
        if r.attributes.get("kind") == "op"
        and r.attributes.get("namespace") == namespace
        and r.attributes.get("msg") == "watch_active"
    ]
    assert armed
    assert all(r.severity_text == "info" == r.attributes["level"] for r in armed)
    assert all(r.severity_number == 9 and r.resource == resource for r in armed)
    if "digest" in collector:  # pulled from the registry by digest, like the service images
        (otelcol,) = kube.get(
            "pods", "", SYSTEM_NAMESPACE, "--selector=app.kubernetes.io/name=fim-otelcol"
        )["items"]
        (running_image,) = otelcol["status"]["containerStatuses"]
        assert running_image["imageID"].endswith("@" + collector["digest"])
    figures.append(f"otel: fimd's lines exported as OTLP records within {latency:.1f} s")
