"""mTLS server credentials that follow certificate renewal without a restart.

Kubernetes updates a mounted Secret in place: the kubelet writes the new files into a fresh
directory and swaps the `..data` symlink, so `tls.crt`, `tls.key` and `ca.crt` change
together. `ReloadingCredentials` gives gRPC `dynamic_ssl_server_credentials` whose fetch
callback (run by gRPC before each TLS handshake) looks at the files:

- unchanged (same device, inode, mtime and size of all three): nothing is read;
- changed to the material in use (same SHA-256): nothing is done;
- changed to valid material (the key matches the certificate, the client CA bundle parses):
  new connections use it at once (`tls_reloaded` operational line); established ones keep
  theirs;
- changed to anything else (unreadable, garbage, a key of another certificate, a read that
  straddled a swap): fimd keeps serving with the material in use and reports
  `tls_reload_failed` once; it looks again when the files change again. (The signature is
  taken before reading, so a read that straddled a swap is retried on the next handshake.)

Client authentication stays required whatever the files say. The files at start must be
valid (`TlsError` otherwise): fimd never starts without working mTLS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, cast

import attrs
import grpc


class TlsError(ValueError):
    """The certificate, key or client CA files cannot be used."""


class OpReporter(Protocol):
    """Where operational lines go (`LineWriter.op`)."""

    def __call__(self, msg: str, level: str = "info", /, **fields: object) -> None: ...


def _ignore(msg: str, level: str = "info", /, **fields: object) -> None:
    del msg, level, fields


@attrs.frozen
class TlsFiles:
    cert: str
    key: str
    client_ca: str

    def paths(self) -> tuple[str, str, str]:
        return self.cert, self.key, self.client_ca


@attrs.frozen
class Material:
    """The bytes of the three files, checked to be usable together."""

    cert: bytes
    key: bytes
    client_ca: bytes

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.cert, self.key, self.client_ca):
            h.update(len(part).to_bytes(8, "big") + part)
        return h.hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 of the server certificate (the first in the chain), as in `openssl x509
        -fingerprint -sha256`, without colons."""
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(self.cert.decode("ascii"))).hexdigest()

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert)], root_certificates=self.client_ca
        )


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path to `data` that touches no filesystem (fimd's root filesystem is read-only):
    the ssl module loads certificate chains only from paths."""
    fd = os.memfd_create("fimd-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _no_password() -> bytes:
    return b""  # an encrypted key fails instead of OpenSSL prompting on a terminal


def load(files: TlsFiles) -> Material:
    """Reads and checks the three files; raises TlsError naming what is wrong."""
    data: list[bytes] = []
    for path in files.paths():
        try:
            with open(path, "rb") as f:
                data.append(f.read())
        except OSError as err:
            raise TlsError(f"cannot read {path}: {err}") from None
    material = Material(*data)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        with _memory_file(material.cert) as cert, _memory_file(material.key) as key:
            context.load_cert_chain(cert, key, password=_no_password)
        material.fingerprint()
    except (ssl.SSLError, ValueError) as err:
        raise TlsError(f"{files.cert} with {files.key}: {err}") from None
    try:
        context.load_verify_locations(cadata=material.client_ca.decode("ascii"))
    except (ssl.SSLError, ValueError) as err:
        raise TlsError(f"{files.client_ca}: {err}") from None
    if not context.get_ca_certs():
        raise TlsError(f"{files.client_ca}: no CA certificate")
    return material


_Signature = tuple[tuple[int, int, int, int] | str, ...]


def _signature(files: TlsFiles) -> _Signature:
    """What changes when any of the files is replaced (symlinks followed)."""
    parts: list[tuple[int, int, int, int] | str] = []
    for path in files.paths():
        try:
            st = os.stat(path)
        except OSError as err:
            parts.append(f"{type(err).__name__}: {err.strerror}")
        else:
            parts.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(parts)


class ReloadingCredentials:
    """See the module docstring. Thread-safe: gRPC may call `fetch` from any thread."""

    def __init__(self, files: TlsFiles, report: OpReporter = _ignore) -> None:
        self.files = files
        self._report = report
        self._lock = threading.Lock()
        self._signature = _signature(files)
        self.current = load(files)  # TlsError at start: no fallback to fall back on

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC documents None from the fetcher as "keep the current configuration"; the
        # type stubs do not allow for it.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self.fetch)
        return grpc.dynamic_ssl_server_credentials(
            self.current.configuration(), fetch, require_client_authentication=True
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed to valid material, else None."""
        try:
            with self._lock:
                return self._fetch()
        except Exception as err:  # never let a bug break handshakes; keep the old config
            self._report("tls_reload_failed", "error", detail=f"{type(err).__name__}: {err}")
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        signature = _signature(self.files)
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            material = load(self.files)
        except TlsError as err:
            self._report(
                "tls_reload_failed",
                "error",
                detail=f"{err}; still serving certificate {self.current.fingerprint()}",
            )
            return None
        if material.digest == self.current.digest:
            return None
        previous, self.current = self.current, material
        self._report(
            "tls_reloaded", fingerprint=material.fingerprint(), previous=previous.fingerprint()
        )
        return material.configuration()
