"""Test certificates made with the openssl command line: a CA and leaves signed by it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(directory: Path, ca: str, name: str, extension: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    ext = directory / f"{name}.ext"
    ext.write_text(extension)
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


def make_ca(directory: Path, name: str) -> str:
    base = str(directory / name)
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{base}.key", "-out", f"{base}.crt", "-days", "1", "-subj", f"/CN={name}",
    )  # fmt: skip
    return base
