"""The API-server-only cluster: real etcd + kube-apiserver with RBAC and SA tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster.cluster import Cluster
from tests.cluster.controlplane import ControlPlane

pytest_plugins = ["tests.cluster.fixtures"]


def _api(kubeconfig: Path) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


def test_admin_kubeconfig_reaches_the_api_server(control_plane: ControlPlane) -> None:
    with _api(control_plane.kubeconfig) as api:
        namespaces = client.CoreV1Api(api).list_namespace().items
        version = client.VersionApi(api).get_code()
    names = [ns.metadata.name for ns in namespaces if ns.metadata]
    assert "default" in names
    assert version.git_version == control_plane.binaries.kubernetes_version


def test_rbac_denies_an_identity_without_bindings(control_plane: ControlPlane) -> None:
    kubeconfig = control_plane.kubeconfig_for("nobody-in-particular", ("some-group",))
    with _api(kubeconfig) as api, pytest.raises(ApiException) as denied:
        client.CoreV1Api(api).list_namespace()
    assert denied.value.status == 403


def test_client_certificates_carry_every_group(control_plane: ControlPlane) -> None:
    kubeconfig = control_plane.kubeconfig_for("auditor", ("team-a", "team-b"))
    with _api(kubeconfig) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    user = review.status.user_info if review.status else None
    assert user is not None
    assert user.username == "auditor"
    assert {"team-a", "team-b"} <= set(user.groups or [])


def test_service_account_tokens_are_issued(control_plane: ControlPlane) -> None:
    with _api(control_plane.kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="tokens")))
        sa = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="probe"))
        core.create_namespaced_service_account("tokens", sa)
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        token = core.create_namespaced_service_account_token("probe", "tokens", request)
    assert token.status is not None
    assert (token.status.token or "").count(".") == 2  # a signed JWT


def test_up_and_down_stop_every_process_and_remove_the_guard(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c", apiserver_only=True)
    cluster.up()
    records = list(cluster.supervisor.records)
    guard = cluster.supervisor.guard
    assert {r.name for r in records} == {"etcd", "kube-apiserver"}
    assert all(r.alive() for r in records)
    assert guard.cgroup.exists()
    cluster.down()
    assert not any(r.alive() for r in records)
    assert not guard.cgroup.exists()
    assert not cluster.supervisor.state_file.exists()
