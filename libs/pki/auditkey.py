"""Ensures the audit key ring Secret exists and rotates it (the tamper-evident stream).

The Secret `fim-audit-key` (type Opaque) holds one file, `keys.json`: the key ring of
libs/auditstream/keys.py. fimd mounts it and seals every line with its node's key derived from
the current generation; `kubectl fim verify` reads it to check collected lines.

`ensure_audit_key` creates the ring (one generation) when the Secret is missing, and adds a
new current generation once the current one is `every` old (default 30 days), keeping the
newest `keep` generations (default 24: two years of lines stay verifiable). A Secret whose
ring does not parse is never overwritten: that would destroy the keys old lines need; the
Job fails with the reason instead. Idempotent and safe to run concurrently, like `ensure`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from libs.auditstream import keys
from libs.pki.store import SecretStore, StoreConflictError

LOG = logging.getLogger(__name__)
SECRET = "fim-audit-key"  # noqa: S105 - the Secret's name
FILE = "keys.json"
ROTATE_EVERY = timedelta(days=30)
ATTEMPTS = 5


class AuditKeyError(RuntimeError):
    """The Secret exists but its key ring cannot be used (left as it is)."""


def _once(store: SecretStore, now: datetime, every: timedelta, keep: int) -> str:
    secret = store.get(SECRET)
    if secret is None:
        store.create(SECRET, {FILE: keys.new_ring(now).dumps()})
        return "created"
    try:
        ring = keys.loads(secret.data.get(FILE, b""))
    except keys.KeyRingError as err:
        raise AuditKeyError(f"Secret {SECRET}: {err}; not overwritten") from None
    rotated = keys.rotate(ring, now, every=every, keep=keep)
    if rotated is ring:
        return "current"
    store.update(SECRET, {**secret.data, FILE: rotated.dumps()}, secret.version)
    return f"rotated to generation {rotated.current}"


def ensure_audit_key(
    store: SecretStore,
    now: datetime,
    every: timedelta = ROTATE_EVERY,
    keep: int = keys.MAX_GENERATIONS,
) -> str:
    """Creates or rotates the ring; returns what it did ("created", "current", "rotated ...")."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            done = _once(store, now, every, keep)
        except StoreConflictError:
            if attempt == ATTEMPTS:
                raise
            LOG.info("concurrent update of Secret %s; re-reading (attempt %d)", SECRET, attempt)
            continue
        LOG.info("audit key ring in Secret %s: %s", SECRET, done)
        return done
    raise AssertionError("unreachable")
