"""Test PKI made with the openssl CLI: a CA, a server and a client certificate, and a
second, untrusted CA with its own client certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs


@attrs.frozen
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by an untrusted CA
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{s}" for s in (".pem", ".key", ".csr"))
    extfile = directory / f"{name}.ext"
    extfile.write_text(ext + "\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", extfile,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    ca = _ca(directory, "ca")
    server = _leaf(
        directory, "fimd", ca,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )  # fmt: skip
    client = _leaf(directory, "controller", ca, "extendedKeyUsage=clientAuth")
    rogue = _leaf(directory, "rogue", _ca(directory, "rogue-ca"), "extendedKeyUsage=clientAuth")
    return Pki(ca[0], *server, *client, *rogue)


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
