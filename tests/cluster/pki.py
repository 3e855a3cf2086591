"""A throwaway certificate authority for one test cluster, issued with libs/pki.

EC P-256 keys: generating one takes milliseconds, so a fresh PKI per cluster costs well under
a second. Every certificate is signed by one CA, which the API server, the kubelet and every
client trust; the service-account signing key is a separate key pair. Files are written once
and reused while the directory lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from libs.pki import certs

_LIFETIME = timedelta(days=3650)


@dataclass(frozen=True)
class KeyPair:
    """Paths of a PEM certificate and its unencrypted PEM key."""

    cert: Path
    key: Path


class Pki:
    """The CA in `directory` (created on first use) and certificates signed by it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = KeyPair(directory / "ca.crt", directory / "ca.key")
        if not self.ca.cert.exists():
            ca = certs.new_ca("fim-k8s-test-ca", datetime.now(UTC), _LIFETIME)
            ca.write(self.ca.cert, self.ca.key)

    def issue(
        self,
        name: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
    ) -> KeyPair:
        """Issues (once) `<name>.crt`/`.key`; server_names (DNS names or IPs) make it a server
        certificate too."""
        pair = KeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        if pair.cert.exists():
            return pair
        usages = ([certs.Usage.CLIENT] if client else []) + (
            [certs.Usage.SERVER] if server_names else []
        )
        ca = certs.KeyPair(self.ca.cert.read_bytes(), self.ca.key.read_bytes())
        issued = certs.issue(
            ca,
            common_name,
            server_names,
            usages,
            now=datetime.now(UTC),
            lifetime=_LIFETIME,
            organizations=organizations,
        )
        issued.write(pair.cert, pair.key)
        return pair

    def service_account_keys(self) -> KeyPair:
        """The token signing key (`sa.key`) and its public half (`sa.pub`, in `cert`)."""
        pair = KeyPair(self.directory / "sa.pub", self.directory / "sa.key")
        if not pair.key.exists():
            certs.signing_key().write(pair.cert, pair.key)
        return pair
