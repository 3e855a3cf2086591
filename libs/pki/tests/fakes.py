"""An in-memory SecretStore with the API server's optimistic concurrency."""

from __future__ import annotations

from collections.abc import Mapping

from libs.pki.store import Secret, StoreConflictError


class MemoryStore:
    def __init__(self) -> None:
        self.secrets: dict[str, Secret] = {}
        self.writes: list[str] = []
        self._version = 0

    def get(self, name: str) -> Secret | None:
        return self.secrets.get(name)

    def _put(self, name: str, data: Mapping[str, bytes]) -> None:
        self._version += 1
        self.secrets[name] = Secret(dict(data), str(self._version))
        self.writes.append(name)

    def create(self, name: str, data: Mapping[str, bytes]) -> None:
        if name in self.secrets:
            raise StoreConflictError(name)
        self._put(name, data)

    def update(self, name: str, data: Mapping[str, bytes], version: str) -> None:
        if name not in self.secrets or self.secrets[name].version != version:
            raise StoreConflictError(name)
        self._put(name, data)
