"""Ensures the mTLS Secrets exist, are consistent and are renewed before they expire.

Three kubernetes.io/tls Secrets in fim-k8s's namespace (names in `Names`):
- the CA: `tls.crt`/`tls.key` sign the leaves; only the bootstrap job can read it.
- fimd's server certificate, for the fixed name `fimd.<namespace>.svc` that the controller
  pins (fimd is dialled by IP); mounted by the fimd DaemonSet.
- the controller's client certificate; mounted by the controller Deployment.
Every Secret's `ca.crt` is the trust bundle: the current CA plus any previous CA that has
not expired yet, so certificates of the previous CA stay valid while rotation propagates.

`ensure` is idempotent and safe to run concurrently (optimistic concurrency on each
Secret): run it on install and periodically (deploy/base's Job and CronJob).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from libs.pki.certs import KeyPair, Usage, dns_names, due, issue, matches_key, new_ca, signed_by
from libs.pki.store import Secret, SecretStore, StoreConflictError

LOG = logging.getLogger(__name__)
ATTEMPTS = 5  # concurrent writers: re-read and retry this often before giving up


@dataclass(frozen=True)
class Names:
    ca: str = "fim-pki-ca"
    fimd: str = "fimd-tls"
    controller: str = "fim-controller-tls"


@dataclass(frozen=True)
class Policy:
    ca_lifetime: timedelta = timedelta(days=3650)
    leaf_lifetime: timedelta = timedelta(days=90)
    renew_fraction: float = 1 / 3  # renew once a third of the lifetime remains


@dataclass(frozen=True)
class Leaf:
    secret: str
    common_name: str
    dns_names: list[str]
    usage: Usage


def leaves(namespace: str, names: Names) -> list[Leaf]:
    return [
        Leaf(names.fimd, "fimd", [server_name(namespace)], Usage.SERVER),
        Leaf(names.controller, "fim-controller", [f"fim-controller.{namespace}.svc"], Usage.CLIENT),
    ]


def server_name(namespace: str) -> str:
    """The DNS name in fimd's certificate: the controller's ssl_target_name_override."""
    return f"fimd.{namespace}.svc"


def _bundle(current: bytes, previous: bytes, now: datetime) -> bytes:
    """The current CA first, then the unexpired CAs of `previous` (none twice)."""
    pems = [current]
    for cert in x509.load_pem_x509_certificates(previous) if previous else []:
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if pem not in pems and cert.not_valid_after_utc > now:
            pems.append(pem)
    return b"".join(pems)


def _tls_data(pair: KeyPair, bundle: bytes) -> dict[str, bytes]:
    return {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": bundle}


def _pair(secret: Secret | None) -> KeyPair | None:
    """The Secret's certificate and key if both parse and belong together."""
    if secret is None or not {"tls.crt", "tls.key"} <= secret.data.keys():
        return None
    pair = KeyPair(secret.data["tls.crt"], secret.data["tls.key"])
    try:
        return pair if matches_key(pair) else None
    except ValueError:  # not PEM, or not a key/certificate
        return None


@dataclass(frozen=True)
class _Run:
    store: SecretStore
    now: datetime
    policy: Policy

    def write(self, name: str, old: Secret | None, data: Mapping[str, bytes]) -> None:
        if old is None:
            self.store.create(name, data)
        else:
            self.store.update(name, data, old.version)

    def fresh(self, pair: KeyPair | None) -> bool:
        return pair is not None and not due(pair.cert, self.now, self.policy.renew_fraction)

    def ca(self, name: str) -> tuple[KeyPair, bytes]:
        """The signing CA and the trust bundle, creating or rotating the CA when due."""
        secret = self.store.get(name)
        pair = _pair(secret)
        old_bundle = secret.data.get("ca.crt", b"") if secret else b""
        if pair is not None and self.fresh(pair):
            return pair, _bundle(pair.cert_pem, old_bundle, self.now)
        ca = new_ca("fim-k8s mTLS CA", self.now, self.policy.ca_lifetime)
        previous = _bundle(pair.cert_pem, old_bundle, self.now) if pair else b""
        bundle = _bundle(ca.cert_pem, previous, self.now)
        self.write(name, secret, _tls_data(ca, bundle))
        LOG.info("%s the CA in Secret %s", "rotated" if pair else "created", name)
        return ca, bundle

    def leaf(self, leaf: Leaf, ca: KeyPair, bundle: bytes) -> None:
        """Issues the leaf unless it is current, signed by `ca` and for the right names."""
        secret = self.store.get(leaf.secret)
        pair = _pair(secret)
        if (
            pair is not None
            and secret is not None
            and self.fresh(pair)
            and signed_by(pair.cert, ca.cert)
            and dns_names(pair.cert) == leaf.dns_names
        ):
            if secret.data.get("ca.crt") != bundle:  # only the trust bundle changed
                self.store.update(leaf.secret, _tls_data(pair, bundle), secret.version)
            return
        lifetime = self.policy.leaf_lifetime
        issued = issue(
            ca, leaf.common_name, leaf.dns_names, leaf.usage, now=self.now, lifetime=lifetime
        )
        self.write(leaf.secret, secret, _tls_data(issued, bundle))
        LOG.info("%s the certificate in Secret %s", "renewed" if pair else "issued", leaf.secret)


def ensure(
    store: SecretStore,
    namespace: str,
    now: datetime,
    policy: Policy = Policy(),
    names: Names = Names(),
) -> None:
    """Creates or renews the CA and both leaf Secrets so that all are valid at `now`."""
    run = _Run(store, now, policy)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            ca, bundle = run.ca(names.ca)
            for leaf in leaves(namespace, names):
                run.leaf(leaf, ca, bundle)
            return
        except StoreConflictError:
            if attempt == ATTEMPTS:
                raise
            LOG.info("concurrent update of the mTLS Secrets; re-reading (attempt %d)", attempt)
