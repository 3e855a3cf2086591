"""`python -m libs.pki` against a real kube-apiserver, as the fim-pki ServiceAccount with
exactly the RBAC of deploy/base/pki.yaml: the permissions suffice and go no further."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from cryptography import x509
from kubernetes import client, config, utils

from libs.auditstream import keys
from libs.pki import auditkey
from libs.pki.__main__ import main
from libs.pki.bootstrap import Names
from tests.cluster.controlplane import ControlPlane

pytest_plugins = ["tests.cluster.fixtures"]

NS = "fim-system"
SA = f"system:serviceaccount:{NS}:fim-pki"


def _api(kubeconfig: Path) -> Any:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Any:
    api = _api(control_plane.kubeconfig)
    api.create_namespace({"metadata": {"name": NS}})
    for doc in yaml.safe_load_all(Path("deploy/base/pki.yaml").read_text()):
        if doc["kind"] in {"ServiceAccount", "Role", "RoleBinding"}:
            utils.create_from_dict(api.api_client, doc)  # type: ignore[no-untyped-call]
    api.create_namespaced_secret(NS, {"metadata": {"name": "unrelated"}, "data": {}})
    return api


def _versions(admin: Any) -> dict[str, str]:
    secrets = admin.list_namespaced_secret(NS).items
    return {s.metadata.name: s.metadata.resource_version for s in secrets}


def test_job_creates_then_keeps_the_secrets(control_plane: ControlPlane, admin: Any) -> None:
    kubeconfig = control_plane.kubeconfig_for(SA)
    assert main(["--namespace", NS, "--kubeconfig", str(kubeconfig)]) == 0
    names = Names()
    fimd = admin.read_namespaced_secret(names.fimd, NS)
    assert fimd.type == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(fimd.data["tls.crt"]))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fimd.fim-system.svc"]
    audit = admin.read_namespaced_secret(auditkey.SECRET, NS)
    assert audit.type == "Opaque"
    assert keys.loads(base64.b64decode(audit.data[auditkey.FILE])).current == 1
    before = _versions(admin)
    assert {names.ca, names.fimd, names.controller, auditkey.SECRET} <= before.keys()
    assert main(["--namespace", NS, "--kubeconfig", str(kubeconfig)]) == 0
    assert _versions(admin) == before  # nothing rewritten


def test_service_account_cannot_read_other_secrets(control_plane: ControlPlane, admin: Any) -> None:
    as_sa = _api(control_plane.kubeconfig_for(SA))
    with pytest.raises(client.ApiException) as denied:
        as_sa.read_namespaced_secret("unrelated", NS)
    assert denied.value.status == 403
