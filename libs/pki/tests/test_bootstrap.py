"""ensure(): creation, idempotence, renewal, CA rotation, repair and concurrent writers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from libs.pki.bootstrap import Names, ensure, server_name
from libs.pki.certs import signed_by
from libs.pki.store import StoreConflictError
from libs.pki.tests.fakes import MemoryStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NS = "fim-system"
NAMES = Names()


def _cert(store: MemoryStore, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(store.secrets[name].data["tls.crt"])


def _bundle(store: MemoryStore, name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(store.secrets[name].data["ca.crt"])


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    ensure(store, NS, NOW)
    return store


def test_first_run_creates_ca_and_single_purpose_leaves(store: MemoryStore) -> None:
    assert sorted(store.secrets) == sorted([NAMES.ca, NAMES.fimd, NAMES.controller])
    ca, fimd, controller = (_cert(store, n) for n in (NAMES.ca, NAMES.fimd, NAMES.controller))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signed_by(fimd, ca)
    assert signed_by(controller, ca)
    assert _sans(fimd) == [server_name(NS)] == ["fimd.fim-system.svc"]
    assert _eku(fimd) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _eku(controller) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for name in store.secrets:
        assert _bundle(store, name) == [ca]


def test_second_run_writes_nothing(store: MemoryStore) -> None:
    before = dict(store.secrets)
    ensure(store, NS, NOW + timedelta(days=59))
    assert store.secrets == before


def test_leaves_renewed_when_a_third_of_their_lifetime_remains(store: MemoryStore) -> None:
    old_ca, old_fimd = _cert(store, NAMES.ca), _cert(store, NAMES.fimd)
    ensure(store, NS, NOW + timedelta(days=61))
    assert _cert(store, NAMES.ca) == old_ca
    new_fimd = _cert(store, NAMES.fimd)
    assert new_fimd != old_fimd
    assert new_fimd.not_valid_after_utc == NOW + timedelta(days=61 + 90)


def test_ca_rotation_keeps_the_old_ca_trusted_and_reissues_leaves(store: MemoryStore) -> None:
    old_ca = _cert(store, NAMES.ca)
    later = NOW + timedelta(days=2500)  # past two thirds of ten years
    ensure(store, NS, later)
    new_ca = _cert(store, NAMES.ca)
    assert new_ca != old_ca
    for name in store.secrets:
        assert _bundle(store, name) == [new_ca, old_ca]
    assert signed_by(_cert(store, NAMES.fimd), new_ca)
    assert signed_by(_cert(store, NAMES.controller), new_ca)
    # Once the old CA has expired it leaves the bundle.
    ensure(store, NS, NOW + timedelta(days=3651))
    assert _bundle(store, NAMES.fimd) == [new_ca]


@pytest.mark.parametrize(
    "damage",
    [
        {"tls.crt": b"garbage"},
        {"tls.key": b""},
        {},  # keys missing entirely
    ],
)
def test_damaged_leaf_is_reissued(store: MemoryStore, damage: Mapping[str, bytes]) -> None:
    secret = store.secrets[NAMES.controller]
    data = {**secret.data, **damage} if damage else {"ca.crt": secret.data["ca.crt"]}
    store.update(NAMES.controller, data, secret.version)
    ensure(store, NS, NOW)
    assert signed_by(_cert(store, NAMES.controller), _cert(store, NAMES.ca))


def test_leaf_of_another_namespace_is_reissued(store: MemoryStore) -> None:
    ensure(store, "other", NOW)
    assert _sans(_cert(store, NAMES.fimd)) == ["fimd.other.svc"]


class RacingStore(MemoryStore):
    """Another writer creates the CA between our read and our create, once."""

    def __init__(self, rival: MemoryStore) -> None:
        super().__init__()
        self.rival = rival

    def create(self, name: str, data: Mapping[str, bytes]) -> None:
        if name == NAMES.ca and self.rival.secrets:
            self.secrets[name] = self.rival.secrets.pop(name)
            raise StoreConflictError(name)
        super().create(name, data)


def test_concurrent_writer_wins_and_we_adopt_its_ca() -> None:
    rival = MemoryStore()
    ensure(rival, NS, NOW)
    rival_ca = _cert(rival, NAMES.ca)
    store = RacingStore(rival)
    ensure(store, NS, NOW)
    assert _cert(store, NAMES.ca) == rival_ca
    assert signed_by(_cert(store, NAMES.fimd), rival_ca)
