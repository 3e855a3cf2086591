"""SecretStore over the Kubernetes API (the `kubernetes` package's CoreV1Api)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from kubernetes import client

from libs.pki.store import Secret, StoreConflictError

LABELS = {"app.kubernetes.io/part-of": "fim-k8s", "app.kubernetes.io/component": "mtls"}


def _encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


class KubeSecretStore:
    """Secrets of one type (kubernetes.io/tls by default) in one namespace; 409s become
    StoreConflictError."""

    def __init__(
        self,
        core_v1: Any,
        namespace: str,
        secret_type: str = "kubernetes.io/tls",  # noqa: S107 - a Secret type
        component: str = "mtls",
    ) -> None:
        self._api = core_v1
        self._namespace = namespace
        self._type = secret_type
        self._labels = {**LABELS, "app.kubernetes.io/component": component}

    def _body(self, name: str, data: Mapping[str, bytes], version: str | None) -> dict[str, Any]:
        metadata = {"name": name, "labels": self._labels, "resourceVersion": version}
        return {"metadata": metadata, "type": self._type, "data": _encode(data)}

    def get(self, name: str) -> Secret | None:
        try:
            secret = self._api.read_namespaced_secret(name, self._namespace)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return Secret(data, secret.metadata.resource_version)

    def create(self, name: str, data: Mapping[str, bytes]) -> None:
        self._call(
            self._api.create_namespaced_secret, self._namespace, self._body(name, data, None)
        )

    def update(self, name: str, data: Mapping[str, bytes], version: str) -> None:
        body = self._body(name, data, version)
        self._call(self._api.replace_namespaced_secret, name, self._namespace, body)

    @staticmethod
    def _call(method: Any, *args: Any) -> None:
        try:
            method(*args)
        except client.ApiException as err:
            if err.status == 409:  # AlreadyExists, or the resourceVersion is stale
                raise StoreConflictError(str(err.reason)) from err
            raise
