"""Issuance details the test harnesses rely on: O= groups, IP and DNS SANs, both usages,
bare signing keys and PEM files written with a private key mode."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from libs.pki import certs

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_organizations_become_one_o_each_and_names_split_into_ip_and_dns_sans() -> None:
    ca = certs.new_ca("ca", NOW, DAY)
    pair = certs.issue(
        ca,
        "admin",
        ["localhost", "127.0.0.1", "::1"],
        [certs.Usage.CLIENT, certs.Usage.SERVER],
        now=NOW,
        lifetime=DAY,
        organizations=("system:masters", "team"),
    )
    cert = pair.cert
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters", "team"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert certs.dns_names(cert) == ["localhost"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    assert certs.signed_by(cert, ca.cert)
    assert certs.matches_key(pair)


def test_a_client_certificate_without_names_has_no_san() -> None:
    ca = certs.new_ca("ca", NOW, DAY)
    cert = certs.issue(ca, "client", [], certs.Usage.CLIENT, now=NOW, lifetime=DAY).cert
    assert not [e for e in cert.extensions if isinstance(e.value, x509.SubjectAlternativeName)]
    assert certs.dns_names(cert) == []


def test_files_are_written_with_an_owner_only_key(tmp_path: Path) -> None:
    pair = certs.signing_key()
    cert, key = pair.write(tmp_path / "sa.pub", tmp_path / "sa.key")
    assert cert.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert key.read_bytes() == pair.key_pem
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
