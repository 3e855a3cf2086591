"""A small typed adapter over the `kubernetes` package's REST client.

The `kubernetes` package has no type hints and deserializes every object into generated
model classes, which costs more than the controller's whole reconcile for a thousand pods.
The controller only needs plain JSON over a handful of paths, so this module uses the
package for what it does well (kubeconfig and in-cluster configuration, authentication,
TLS, connection pooling) and exposes typed JSON requests and watch streams.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client, config

JsonObject = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT = 30.0


#: HTTP status of a missing object.
NOT_FOUND = 404


class ApiError(Exception):
    """A non-2xx answer of the API server (or a transport failure, status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def _error_from(status: int, body: bytes) -> ApiError:
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:500].decode("utf-8", errors="replace")
    return ApiError(status, message)


class Kube:
    """Typed JSON requests and watches against one API server."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, user_agent: str = "") -> Kube:
        """In-cluster configuration inside a pod, else the kubeconfig file (or $KUBECONFIG).

        `user_agent` names this client in the API server's audit log (e.g. which replica).
        """
        configuration = client.Configuration()
        if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            # The package's config loaders are untyped; both only fill `configuration`.
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
        api = client.ApiClient(configuration)
        if user_agent:
            api.user_agent = user_agent
        return cls(api)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: object,
        content_type: str,
        timeout: float | tuple[float, float],
    ) -> Any:
        """Sends one request; returns the urllib3 response with its body not yet read."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, post = self._api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            return self._api.call_api(method, url, headers, body, post, _request_timeout=timeout)
        except client.ApiException as err:  # raised for TLS failures
            raise ApiError(0, str(err)) from err
        except (OSError, urllib3.exceptions.HTTPError) as err:  # refused, reset, timed out
            raise ApiError(0, f"{type(err).__name__}: {err}") from err

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> JsonObject:
        """One JSON request; the decoded answer, or ApiError."""
        response = self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=timeout
        )
        data: bytes = response.read()
        if not 200 <= response.status < 300:
            raise _error_from(response.status, data)
        decoded: JsonObject = json.loads(data)
        return decoded

    def watch(self, path: str, query: Mapping[str, str], *, timeout: float) -> Iterator[JsonObject]:
        """The events of one watch request, each `{"type": ..., "object": ...}`.

        The stream ends when the server closes it (its timeoutSeconds) or no byte arrives
        for `timeout` seconds; closing the generator closes the connection.
        """
        response = self._send(
            "GET",
            path,
            query={**query, "watch": "true"},
            body=None,
            content_type="application/json",
            timeout=(DEFAULT_TIMEOUT, timeout),
        )
        raw = response.response
        try:
            if not 200 <= response.status < 300:
                raise _error_from(response.status, raw.read())
            yield from _json_lines(raw)
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise ApiError(0, f"watch stream broken: {type(err).__name__}: {err}") from err
        finally:
            raw.close()  # an unfinished stream cannot go back to the pool


def _json_lines(raw: Any) -> Iterator[JsonObject]:
    buffer = b""
    for chunk in raw.stream(amt=None, decode_content=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                event: JsonObject = json.loads(line)
                yield event
