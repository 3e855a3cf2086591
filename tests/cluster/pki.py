"""A throwaway certificate authority for one test cluster, made with the openssl CLI.

EC P-256 keys: generating one takes milliseconds, so a fresh PKI per cluster costs well under
a second. Every certificate is signed by one CA, which the API server, the kubelet and every
client trust; the service-account signing key is a separate key pair.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = "3650"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class KeyPair:
    """Paths of a PEM certificate and its unencrypted PEM key."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Pki:
    """The CA in `directory` (created on first use) and certificates signed by it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = KeyPair(directory / "ca.crt", directory / "ca.key")
        if not self.ca.cert.exists():
            _openssl(
                "req", "-x509", *_CURVE, "-keyout", str(self.ca.key), "-out", str(self.ca.cert),
                "-days", _DAYS, "-subj", "/CN=fim-k8s-test-ca",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            )  # fmt: skip

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
        # One O= per group: Kubernetes reads every Organization of a client certificate.
        subject = "".join(f"/O={group}" for group in organizations) + f"/CN={common_name}"
        usages = (["clientAuth"] if client else []) + (["serverAuth"] if server_names else [])
        extensions = [
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext", "extendedKeyUsage=" + ",".join(usages),
        ]  # fmt: skip
        if server_names:
            sans = ",".join(_san(name) for name in server_names)
            extensions += ["-addext", f"subjectAltName={sans}"]
        _openssl(
            "req", "-x509", *_CURVE, "-keyout", str(pair.key), "-out", str(pair.cert),
            "-days", _DAYS, "-subj", subject,
            "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key), *extensions,
        )  # fmt: skip
        return pair

    def service_account_keys(self) -> KeyPair:
        """The token signing key (`sa.key`) and its public half (`sa.pub`, in `cert`)."""
        pair = KeyPair(self.directory / "sa.pub", self.directory / "sa.key")
        if not pair.key.exists():
            _openssl(
                "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", str(pair.key),
            )  # fmt: skip
            _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
        return pair


def _san(name: str) -> str:
    is_ip = name.replace(".", "").isdigit() or ":" in name
    return f"IP:{name}" if is_ip else f"DNS:{name}"
