"""Test PKI issued with libs/pki: a CA, a server and a client certificate, and a second,
untrusted CA with its own client certificate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs

from libs.pki import certs


@attrs.frozen
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by an untrusted CA
    rogue_key: Path


def make_pki(directory: Path) -> Pki:
    now, lifetime = datetime.now(UTC), timedelta(days=1)
    ca, rogue_ca = (certs.new_ca(name, now, lifetime) for name in ("ca", "rogue-ca"))
    (directory / "ca.pem").write_bytes(ca.cert_pem)

    def leaf(
        name: str, signer: certs.KeyPair, names: list[str], usage: certs.Usage
    ) -> tuple[Path, Path]:
        issued = certs.issue(signer, name, names, usage, now=now, lifetime=lifetime)
        return issued.write(directory / f"{name}.pem", directory / f"{name}.key")

    server = leaf("fimd", ca, ["localhost", "127.0.0.1"], certs.Usage.SERVER)
    client = leaf("controller", ca, [], certs.Usage.CLIENT)
    rogue = leaf("rogue", rogue_ca, [], certs.Usage.CLIENT)
    return Pki(directory / "ca.pem", *server, *client, *rogue)


class SecretMount:
    """A directory laid out like a Kubernetes Secret volume: `tls.crt`, `tls.key` and
    `ca.crt` are symlinks through `..data`, and `update` swaps `..data` to a fresh directory
    with one rename, as the kubelet's atomic writer does."""

    FILES = ("tls.crt", "tls.key", "ca.crt")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._generation = 0
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.directory / name

    def update(self, cert: bytes, key: bytes, ca: bytes) -> None:
        self._generation += 1
        data = self.directory / f"..{self._generation:04d}"
        data.mkdir()
        for name, content in zip(self.FILES, (cert, key, ca), strict=True):
            (data / name).write_bytes(content)
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(data.name)
        tmp.replace(self.directory / "..data")
        for name in self.FILES:
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def update_from(self, pki: Pki) -> None:
        self.update(pki.server_cert.read_bytes(), pki.server_key.read_bytes(), pki.ca.read_bytes())
