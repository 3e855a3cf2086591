"""Every overlay renders with the pinned release's kubectl kustomize, validates against that
release's OpenAPI schemas, and keeps the security and wiring properties issue 7 asks for."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from libs.pki import auditkey
from libs.pki.bootstrap import Names, server_name
from tests.cluster.config import Binaries, read_versions

OVERLAYS = ["standard", "production"]
NAMESPACE = "fim-system"
Obj = dict[str, Any]


def _release() -> str:
    """kubernetes-validate's schema version for the pinned release: v1.37.2 -> 1.37.0."""
    major, minor, _ = read_versions()["KUBERNETES_VERSION"].lstrip("v").split(".")
    return f"{major}.{minor}.0"


@functools.cache
def render(overlay: str) -> list[Obj]:
    """The rendered objects of deploy/overlays/<overlay> (`base`: deploy/base itself)."""
    binaries = Binaries.from_env()
    binaries.require("kubectl")
    with tempfile.TemporaryDirectory() as scratch:
        # A real copy: kustomize refuses files that symlink out of its root (Bazel runfiles).
        tree = shutil.copytree("deploy", Path(scratch, "deploy"))
        out = subprocess.run(
            [
                str(binaries.kube("kubectl")),
                "kustomize",
                str(tree / ("base" if overlay == "base" else f"overlays/{overlay}")),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(obj: Obj) -> Obj:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    pod: Obj = spec["template"]["spec"]
    return pod


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in {"Deployment", "DaemonSet", "Job", "CronJob"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_pinned_release(overlay: str) -> None:
    objects = render(overlay)
    assert len(objects) >= 15
    for obj in objects:
        kubernetes_validate.validate(obj, _release(), strict=True)


def test_validation_rejects_an_unknown_field() -> None:
    deployment = find(render("standard"), "Deployment", "fim-controller")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, _release(), strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_bounded_probed_and_locked_down(overlay: str) -> None:
    for obj in workloads(render(overlay)):
        pod = pod_spec(obj)
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert "--insecure" not in container.get("args", [])
            if obj["kind"] in {"Deployment", "DaemonSet"}:
                assert {"readinessProbe", "livenessProbe"} <= container.keys()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_fimd_is_root_and_it_has_exactly_two_capabilities(overlay: str) -> None:
    for obj in workloads(render(overlay)):
        pod = pod_spec(obj)
        if obj["metadata"]["name"] == "fimd":
            (container,) = pod["containers"]
            assert container["securityContext"]["capabilities"]["add"] == [
                "SYS_PTRACE",
                "DAC_READ_SEARCH",
            ]
            assert pod["hostPID"] is True
            assert pod["automountServiceAccountToken"] is False
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 65532
            assert "hostPID" not in pod


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_fimd_runs_on_every_node_with_priority(overlay: str) -> None:
    objects = render(overlay)
    pod = pod_spec(find(objects, "DaemonSet", "fimd"))
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "fim-node-critical"
    find(objects, "PriorityClass", "fim-node-critical")
    ports = {p["name"] for p in pod["containers"][0]["ports"]}
    assert "grpc" in ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mtls_secrets_and_names_match_libs_pki(overlay: str) -> None:
    objects = render(overlay)
    names = Names()
    role = find(objects, "Role", "fim-pki")
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert named[0]["resourceNames"] == [names.ca, names.fimd, names.controller, auditkey.SECRET]
    fimd = pod_spec(find(objects, "DaemonSet", "fimd"))
    assert fimd["volumes"][0]["secret"]["secretName"] == names.fimd
    # The audit key ring: the whole Secret volume (a subPath mount would never be updated).
    (audit,) = [
        v for v in fimd["volumes"] if v.get("secret", {}).get("secretName") == auditkey.SECRET
    ]
    (mount,) = [m for m in fimd["containers"][0]["volumeMounts"] if m["name"] == audit["name"]]
    assert "subPath" not in mount
    key_arg = f"--audit-key={mount['mountPath']}/{auditkey.FILE}"
    assert key_arg in fimd["containers"][0]["args"]
    controller = pod_spec(find(objects, "Deployment", "fim-controller"))
    assert controller["volumes"][0]["secret"]["secretName"] == names.controller
    args = controller["containers"][0]["args"]
    assert f"--fimd-server-name={server_name(NAMESPACE)}" in args
    assert all(o["metadata"].get("namespace", NAMESPACE) == NAMESPACE for o in objects)


def _images(objects: list[Obj]) -> set[tuple[str, str]]:
    return {
        (c["image"], c.get("imagePullPolicy", ""))
        for obj in workloads(objects)
        for c in pod_spec(obj)["containers"]
    }


def test_standard_overlay_runs_the_bazel_images_with_the_default_pull_policy() -> None:
    assert _images(render("standard")) == {
        ("localhost/fim-k8s/controller:local", ""),
        ("localhost/fim-k8s/fimd:local", ""),
    }


def _without_images(obj: Obj) -> Obj:
    """obj with every container's image reference replaced by a marker."""
    copy: Obj = yaml.safe_load(yaml.safe_dump(obj))
    if copy["kind"] in {"Deployment", "DaemonSet", "Job", "CronJob"}:
        for container in pod_spec(copy)["containers"]:
            container["image"] = "IMAGE"
    return copy


def test_standard_overlay_is_the_base_but_for_image_references() -> None:
    """Any conformant cluster runs deploy/base as it is: no host network, no API server
    address, no replica or policy patches; the local cluster provides what base needs."""
    base, standard = render("base"), render("standard")
    assert [_without_images(o) for o in standard] == [_without_images(o) for o in base]
    assert standard != base  # the images do differ
    for obj in workloads(standard):
        spec = pod_spec(obj)
        assert not spec.get("hostNetwork")
        for container in spec["containers"]:
            assert "KUBERNETES_SERVICE_HOST" not in {e["name"] for e in container.get("env", [])}
    assert find(standard, "Deployment", "fim-controller")["spec"]["replicas"] == 2


def test_production_overlay_uses_registry_images_pinned_by_digest() -> None:
    images = _images(render("production"))
    assert {image.split("@")[0] for image, _ in images} == {
        "registry.example.com/fim-k8s/controller",
        "registry.example.com/fim-k8s/fimd",
    }
    for image, policy in images:
        assert re.fullmatch(r"[^@:]+@sha256:[0-9a-f]{64}", image), image  # no tag: a digest
        assert policy == "IfNotPresent"
    assert find(render("production"), "Deployment", "fim-controller")["spec"]["replicas"] == 2


def _ports(rule: Obj) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_controller_scrapers_and_probes(overlay: str) -> None:
    """fimd's gRPC port takes the controller only, metrics only labelled scraper
    namespaces; every port the containers declare is covered by exactly one rule."""
    objects = render(overlay)
    fimd = find(objects, "NetworkPolicy", "fimd")["spec"]
    assert fimd["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "fimd"}
    rules = {frozenset(_ports(r)): r.get("from") for r in fimd["ingress"]}
    controller_only = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "fim-controller"}}}
    ]
    scrapers = [{"namespaceSelector": {"matchLabels": {"fim-k8s.io/metrics-scraper": "true"}}}]
    assert rules == {
        frozenset({7443}): controller_only,
        frozenset({9464}): scrapers,
        frozenset({7444}): None,  # health only: the kubelet's gRPC probes
    }
    declared = {
        p["containerPort"]
        for c in pod_spec(find(objects, "DaemonSet", "fimd"))["containers"]
        for p in c.get("ports", [])
    }
    assert declared == {7443, 7444, 9464}
    controller = find(objects, "NetworkPolicy", "fim-controller")["spec"]
    assert [(_ports(r), r["from"]) for r in controller["ingress"]] == [({8080}, scrapers)]
