"""Where certificates live: a small Secret store protocol (Kubernetes Secrets in production,
an in-memory fake in unit tests), with optimistic concurrency like the API server's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class StoreConflictError(Exception):
    """Created but already there, or updated from a stale version: read again and retry."""


@dataclass(frozen=True)
class Secret:
    data: Mapping[str, bytes]
    version: str  # the resourceVersion the data was read at


class SecretStore(Protocol):
    """kubernetes.io/tls Secrets of one namespace, by name."""

    def get(self, name: str) -> Secret | None: ...

    def create(self, name: str, data: Mapping[str, bytes]) -> None:
        """Raises StoreConflictError if `name` exists."""

    def update(self, name: str, data: Mapping[str, bytes], version: str) -> None:
        """Replaces the data; raises StoreConflictError if the Secret changed since `version`."""
