"""Test certificates for fimd and the controller, issued with libs/pki into a directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs

from libs.pki import certs

_LIFETIME = timedelta(days=1)


@attrs.frozen
class Files:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@attrs.frozen
class Ca:
    pair: certs.KeyPair
    cert: Path

    def issue(self, directory: Path, name: str, *, server_names: tuple[str, ...] = ()) -> Files:
        """A client certificate, or with `server_names` a server certificate for them."""
        usage = certs.Usage.SERVER if server_names else certs.Usage.CLIENT
        issued = certs.issue(
            self.pair, name, server_names, usage, now=datetime.now(UTC), lifetime=_LIFETIME
        )
        return Files(*issued.write(directory / f"{name}.crt", directory / f"{name}.key"))


def make_ca(directory: Path, name: str) -> Ca:
    pair = certs.new_ca(name, datetime.now(UTC), _LIFETIME)
    cert = directory / f"{name}.crt"
    cert.write_bytes(pair.cert_pem)
    return Ca(pair, cert)
