"""deploy/logging/otel: the component renders on top of every overlay and validates against
the pinned release, and its collector configuration, run by the real collector that
`tools/cluster/build.sh otelcol` built, turns fimd's CRI log lines into the documented
records (tests/e2e/test_otel.py checks the same in a cluster)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.cluster.config import Binaries, read_versions
from tests.e2e.otlp import Record, records, rfc3339_unix_nano

OTEL = Path("deploy/logging/otel")
OVERLAYS = ["standard", "production"]
NAMESPACE = "fim-system"
Obj = dict[str, Any]

# A fimd pod's log directory: /var/log/pods/<namespace>_<pod>_<uid>/<container>/<restarts>.log
FIMD_POD = "fimd-x7k2p"
FIMD_UID = "0f5a3e1c-1b2d-4c3e-9f00-aa11bb22cc33"
FIMD_DIR = f"{NAMESPACE}_{FIMD_POD}_{FIMD_UID}/fimd"
NODE = "node-1"

OP = (
    '{"kind":"op","time":"2026-12-01T10:00:00.099000Z","level":"warning","node":"node-1",'
    '"msg":"watch_failed","namespace":"shop","pod":"web-0","error":"ENOENT"}'
)
EVENT = (
    '{"kind":"event","time":"2026-12-01T10:00:00.999999Z","node":"node-1","namespace":"shop",'
    '"pod":"web-0","container":"app","watcher":"shop/data","event":"CREATE",'
    '"path":"/data/a b\\"c","isDir":false,"tags":{"team":"payments"}}'
)
TEXT = "FIM CREATE /data/b in shop/web-0"  # a FimWatcher logFormat in plain text
# A coalesced line the runtime split in two (P: partial, F: final).
COALESCED_1 = '{"kind":"event","time":"2026-12-01T10:00:02.5Z","node":"node-1","namespace":"shop",'
COALESCED_2 = (
    '"pod":"web-0","container":"app","watcher":"shop/data","event":"MODIFY","path":"/data/c",'
    '"isDir":false,"tags":{},"count":3412,"first":"2026-12-01T10:00:02.5Z",'
    '"last":"2026-12-01T10:00:03.250001Z"}'
)
BROKEN = '{"kind":"event", cut short'
LATER = (
    '{"kind":"event","time":"2026-12-01T10:00:09.000001Z","node":"node-1","namespace":"shop",'
    '"pod":"web-0","container":"app","watcher":"shop/data","event":"DELETE","path":"/data/a",'
    '"isDir":false,"tags":{}}'
)


def _release() -> str:
    major, minor, _ = read_versions()["KUBERNETES_VERSION"].lstrip("v").split(".")
    return f"{major}.{minor}.0"


@functools.cache
def render(overlay: str) -> list[Obj]:
    """`kubectl kustomize` of a kustomization adding the component to `overlay`, the way
    docs/logging.md says to use it."""
    binaries = Binaries.from_env()
    binaries.require("kubectl")
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree("deploy", Path(scratch, "deploy"))
        top = Path(scratch, "with-otel")
        top.mkdir()
        (top / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"../deploy/overlays/{overlay}"],
                    "components": ["../deploy/logging/otel"],
                    "images": [
                        {"name": "fim-otelcol", "newName": "example.org/otelcol", "newTag": "1"}
                    ],
                }
            )
        )
        out = subprocess.run(
            [str(binaries.kube("kubectl")), "kustomize", str(top)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[Obj], kind: str, prefix: str) -> Obj:
    (found,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)
    ]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_component_adds_the_collector_to_every_overlay(overlay: str) -> None:
    objects = render(overlay)
    for obj in objects:
        kubernetes_validate.validate(obj, _release(), strict=True)
    added = [o for o in objects if o["metadata"]["name"].startswith("fim-otelcol")]
    assert sorted(o["kind"] for o in added) == [
        "ConfigMap",
        "DaemonSet",
        "NetworkPolicy",
        "ServiceAccount",
    ]
    assert {o["metadata"]["namespace"] for o in added} == {NAMESPACE}
    # No RBAC (no role, no binding) and no network: every packet to or from it is denied.
    policy = find(objects, "NetworkPolicy", "fim-otelcol")
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "fim-otelcol"}},
        "policyTypes": ["Ingress", "Egress"],
    }

    config = find(objects, "ConfigMap", "fim-otelcol-")
    assert config["data"]["collector.yaml"] == (OTEL / "collector.yaml").read_text()
    daemonset = find(objects, "DaemonSet", "fim-otelcol")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example.org/otelcol:1"
    assert pod["automountServiceAccountToken"] is False
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    assert volumes["pod-logs"]["hostPath"] == {"path": "/var/log/pods", "type": "Directory"}
    assert volumes["output"]["hostPath"] == {
        "path": "/var/log/fim-otel",
        "type": "DirectoryOrCreate",
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["pod-logs"] == {
        "name": "pod-logs",
        "mountPath": "/var/log/pods",
        "readOnly": True,
    }
    assert mounts["output"]["mountPath"] == "/var/log/fim-otel"
    assert container["args"] == ["--config=file:/etc/fim-otelcol/collector.yaml"]


def cri(stamp: str, line: str, tag: str = "F") -> str:
    return f"{stamp} stdout {tag} {line}\n"


def _collector_config(tmp: Path) -> Path:
    """The shipped configuration with its two node paths moved into `tmp`."""
    config = yaml.safe_load((OTEL / "collector.yaml").read_text())
    receiver = config["receivers"]["file_log/fimd"]
    assert receiver["include"] == ["/var/log/pods/fim-system_fimd-*/fimd/*.log"]
    receiver["include"] = [f"{tmp}/pods/fim-system_fimd-*/fimd/*.log"]
    exporter = config["exporters"]["file/fimd"]
    assert exporter["path"] == "/var/log/fim-otel/fimd.otlp.jsonl"
    exporter["path"] = f"{tmp}/out/fimd.otlp.jsonl"
    path = tmp / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_records(output: Path, count: int, collector: subprocess.Popen[bytes]) -> list[Record]:
    deadline = time.monotonic() + 60
    found: list[Record] = []
    while time.monotonic() < deadline:
        assert collector.poll() is None, "the collector exited"
        if output.exists():
            found = records(output.read_text())
            if len(found) >= count:
                return found
        time.sleep(0.2)
    raise AssertionError(f"{len(found)} records after 60 s, expected {count}: {found}")


def test_collector_turns_fimd_lines_into_records(tmp_path: Path) -> None:
    binaries = Binaries.from_env()
    binaries.require("otelcol")
    pods = tmp_path / "pods"
    log = pods / FIMD_DIR / "0.log"
    log.parent.mkdir(parents=True)
    (tmp_path / "out").mkdir()
    log.write_text(
        cri("2026-12-01T10:00:00.100000000Z", OP)
        + cri("2026-12-01T10:00:01.000000000Z", EVENT)
        + cri("2026-12-01T10:00:02.000000000Z", TEXT)
        + cri("2026-12-01T10:00:03.000000000Z", COALESCED_1, "P")
        + cri("2026-12-01T10:00:03.000000001Z", COALESCED_2)
        + cri("2026-12-01T10:00:04.000000000Z", BROKEN)
    )
    # Logs the collector must not read: another container of a fimd pod, another pod of
    # fim-system, fimd-like names in another namespace.
    for other in [
        f"{NAMESPACE}_{FIMD_POD}_{FIMD_UID}/init/0.log",
        f"{NAMESPACE}_fim-controller-5d9c7-abcde_{FIMD_UID}/controller/0.log",
        f"shop_fimd-x7k2p_{FIMD_UID}/fimd/0.log",
    ]:
        (pods / other).parent.mkdir(parents=True, exist_ok=True)
        (pods / other).write_text(cri("2026-12-01T10:00:00.000000000Z", EVENT))

    stderr = tmp_path / "collector.log"
    with stderr.open("wb") as err:
        collector = subprocess.Popen(
            [str(binaries.otelcol), f"--config=file:{_collector_config(tmp_path)}"],
            stdout=err,
            stderr=err,
            env={"K8S_NODE_NAME": NODE, "PATH": os.defpath},
        )
    try:
        output = tmp_path / "out" / "fimd.otlp.jsonl"
        _wait_records(output, 5, collector)
        # fimd keeps writing: an appended line is tailed.
        with log.open("a") as appended:
            appended.write(cri("2026-12-01T10:00:09.100000000Z", LATER))
        got = _wait_records(output, 6, collector)
        time.sleep(1.5)  # a record beyond the expected ones (a file read twice) shows up
        got = records(output.read_text())
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=30)
    assert collector.returncode == 0, stderr.read_text()

    path = f"{pods}/{FIMD_DIR}/0.log"
    resource = {
        "k8s.namespace.name": NAMESPACE,
        "k8s.pod.name": FIMD_POD,
        "k8s.pod.uid": FIMD_UID,
        "k8s.container.name": "fimd",
        "k8s.container.restart_count": "0",
        "k8s.node.name": NODE,
    }
    runtime = {"log.iostream": "stdout", "logtag": "F", "log.file.path": path}

    def parsed(line: str, **extra: Any) -> dict[str, Any]:
        return {**json.loads(line), **runtime, **extra}

    expected = [
        # body, attributes, record time (fimd's `time`, else the runtime's), severity
        (OP, parsed(OP), "2026-12-01T10:00:00.099000Z", ("warning", 13)),
        (EVENT, parsed(EVENT), "2026-12-01T10:00:00.999999Z", ("", 0)),
        (TEXT, runtime, "2026-12-01T10:00:02Z", ("", 0)),
        # The joined line keeps the tag of its first part.
        (
            COALESCED_1 + COALESCED_2,
            parsed(COALESCED_1 + COALESCED_2, logtag="P"),
            "2026-12-01T10:00:02.5Z",
            ("", 0),
        ),
        (BROKEN, runtime, "2026-12-01T10:00:04Z", ("", 0)),
        (LATER, parsed(LATER), "2026-12-01T10:00:09.000001Z", ("", 0)),
    ]
    assert len(got) == len(expected), got
    for record, (body, attributes, stamp, severity) in zip(got, expected, strict=True):
        assert record.resource == resource
        assert record.body == body
        assert record.attributes == attributes
        assert record.time_unix_nano == rfc3339_unix_nano(stamp)
        assert (record.severity_text, record.severity_number) == severity
    # The attributes are typed as in the line: a boolean, an integer, a map.
    assert got[1].attributes["isDir"] is False
    assert type(got[3].attributes["count"]) is int
    assert got[1].attributes["tags"] == {"team": "payments"}
    # The line that is not JSON is kept, and its parse failure is logged, not hidden.
    failures = [line for line in stderr.read_text().splitlines() if "fim_json" in line]
    assert len(failures) == 1, failures
    assert "Failed to process entry" in failures[0]
