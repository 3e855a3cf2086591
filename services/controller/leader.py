"""Leader election on a coordination.k8s.io/v1 Lease, so only one replica reconciles.

client-go's algorithm: a replica takes the Lease when it is free or its holder has not
renewed it for `lease_seconds` as measured by this replica's own clock from when it last
saw the record change (no clock skew between replicas matters), and the leader renews it
every `retry_seconds`. Writes carry the resourceVersion, so two candidates cannot both
win. A leader that cannot renew within `renew_deadline` seconds of its last successful
renewal stops; a leader shutting down releases the Lease so the other replica takes over
at once. With the defaults a dead leader is replaced within lease + 2 x retry = 11 s.

Fencing: another replica takes the Lease no sooner than `lease_seconds` after it saw our
last renewal land, which was after we sent it. So an action that *ends* before
`renewed_at + lease_seconds` (renewed_at: when our last successful renewal was sent, by
our monotonic clock) cannot overlap the next leader's. `held_for(seconds)` says whether an
action bounded by `seconds` (its deadline) still fits; the controller asks it before every
fimd call and every write. Each Lease request's timeout is a third of the renew deadline,
so a stalled API server cannot keep `hold` from noticing the loss in time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from services.controller.bounds import describe, error_type
from services.controller.kube import NOT_FOUND, ApiError, JsonObject, Kube

CONFLICT = 409

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 8.0
    renew_deadline: float = 6.0
    retry_seconds: float = 1.5

    @property
    def request_timeout(self) -> float:
        """Each Lease request's timeout: a renewal (GET + PUT) fits the renew deadline."""
        return self.renew_deadline / 3


class NotLeader(Exception):  # noqa: N818 - a state, not a malfunction
    """The lease is not (or no longer surely) held: the action was not taken."""


class Unfenced:
    """Without leader election every action may go ahead."""

    def held_for(self, seconds: float) -> bool:
        return True


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease."""

    def __init__(
        self, kube: Kube, config: LeaseConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kube = kube
        self._config = config
        self._clock = clock
        self._path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{config.namespace}/leases/{config.name}"
        )
        self._observed: Any = None
        self._observed_at = 0.0
        self._lock = threading.Lock()
        #: When the last successful acquire/renewal was sent (None: not leading).
        self._renewed_at: float | None = None

    def held_for(self, seconds: float) -> bool:
        """Whether an action that ends within `seconds` from now ends while we surely lead."""
        with self._lock:
            renewed_at = self._renewed_at
        if renewed_at is None:
            return False
        return self._clock() + seconds < renewed_at + self._config.lease_seconds

    def _spec(self, previous: JsonObject | None) -> JsonObject:
        now = _micro_time()
        spec: JsonObject = {
            "holderIdentity": self._config.identity,
            "leaseDurationSeconds": max(1, round(self._config.lease_seconds)),
            "renewTime": now,
            "acquireTime": now,
            "leaseTransitions": 0,
        }
        if previous is not None:
            renewing = previous.get("holderIdentity") == self._config.identity
            transitions = int(previous.get("leaseTransitions") or 0)
            spec["leaseTransitions"] = transitions if renewing else transitions + 1
            if renewing and previous.get("acquireTime"):
                spec["acquireTime"] = previous["acquireTime"]
        return spec

    def _held_by_other(self, spec: JsonObject) -> bool:
        """Whether someone else holds an unexpired lease, by our clock."""
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        if not holder or holder == self._config.identity:
            return False
        duration = float(spec.get("leaseDurationSeconds") or self._config.lease_seconds)
        return self._clock() < self._observed_at + duration

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True if this replica holds the lease afterwards."""
        timeout = self._config.request_timeout
        try:
            lease = self._kube.request("GET", self._path, timeout=timeout)
        except ApiError as err:
            if err.status != NOT_FOUND:
                raise
            body = {
                "metadata": {"name": self._config.name, "namespace": self._config.namespace},
                "spec": self._spec(None),
            }
            self._kube.request("POST", self._path.rsplit("/", 1)[0], body=body, timeout=timeout)
            return True
        spec = lease.get("spec") or {}
        if self._held_by_other(spec):
            return False
        lease["spec"] = self._spec(spec)
        self._kube.request("PUT", self._path, body=lease, timeout=timeout)
        return True

    def _attempt(self) -> bool:
        """One attempt; a success moves the fence to when this attempt started."""
        started = self._clock()
        try:
            held = self.try_acquire_or_renew()
        except ApiError as err:
            if err.status != CONFLICT:
                log.warning("lease request failed", extra={"error": describe(err)})
            held = False
        except Exception as err:  # e.g. a garbled answer: a failed attempt, never a crash
            log.error(
                "lease request failed unexpectedly",
                extra={"error_type": error_type(err), "error": describe(err)},
            )
            held = False
        if held:
            with self._lock:
                self._renewed_at = started
        return held

    def acquire(self, stop: threading.Event) -> bool:
        """Blocks until this replica leads (True) or `stop` is set (False)."""
        while not stop.is_set():
            if self._attempt():
                log.info("became leader", extra={"identity": self._config.identity})
                return True
            stop.wait(self._config.retry_seconds)
        return False

    def hold(self, stop: threading.Event) -> bool:
        """Renews until `stop` is set (False) or the lease is lost (True, returns at once).

        Lost: no renewal succeeded for `renew_deadline` seconds since the last successful
        one was sent. The fence has closed by then already (held_for), so nothing still in
        flight here can act; the caller stops its work, and `release`s only if not lost.
        """
        while not stop.wait(self._config.retry_seconds):
            if self._attempt():
                continue
            with self._lock:
                renewed_at = self._renewed_at
            if renewed_at is None or self._clock() - renewed_at > self._config.renew_deadline:
                with self._lock:
                    self._renewed_at = None
                log.error("lost the leader lease", extra={"identity": self._config.identity})
                return True
        return False

    def release(self) -> None:
        """Gives the lease up so another replica takes over without waiting for expiry."""
        with self._lock:
            self._renewed_at = None  # the fence closes first
        timeout = self._config.request_timeout
        try:
            lease = self._kube.request("GET", self._path, timeout=timeout)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self._config.identity:
                return
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time())
            self._kube.request("PUT", self._path, body=lease, timeout=timeout)
        except ApiError as err:
            log.warning("lease not released", extra={"error": describe(err)})
