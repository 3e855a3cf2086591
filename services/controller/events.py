"""Kubernetes Events on FimWatchers: watches added, removed, failed.

Events are best effort: a failure to record one is logged and counted, never retried, and a
token bucket bounds how many the controller writes, so a mass change (a thousand pods
rescheduled) cannot flood the API server with Events. A message is clipped to
MAX_EVENT_BYTES with a marker giving its original length.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from libs.k8s.model import API_VERSION, KIND, ObjectMeta
from services.controller.bounds import MAX_EVENT_BYTES, clip_bytes, describe
from services.controller.kube import ApiError, Kube
from services.controller.metrics import Metrics

NORMAL = "Normal"
WARNING = "Warning"
COMPONENT = "fim-controller"

log = logging.getLogger(__name__)


class EventRecorder:
    """Writes core/v1 Events about FimWatchers, at most `burst` at once, `rate` per second."""

    def __init__(
        self,
        kube: Kube,
        metrics: Metrics,
        *,
        instance: str,
        burst: int = 100,
        rate: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self._kube = kube
        self._timeout = timeout
        self._metrics = metrics
        self._instance = instance
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def _take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def emit(self, meta: ObjectMeta, type_: str, reason: str, message: str) -> None:
        if not self._take():
            self._metrics.actions.labels("event", "dropped").inc()
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
            "type": type_,
            "reason": reason,
            "message": clip_bytes(message, MAX_EVENT_BYTES),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._kube.request(
                "POST",
                f"/api/v1/namespaces/{meta.namespace}/events",
                body=body,
                timeout=self._timeout,
            )
        except ApiError as err:
            self._metrics.actions.labels("event", "error").inc()
            log.warning("event not recorded", extra={"reason": reason, "error": describe(err)})
            return
        self._metrics.actions.labels("event", "ok").inc()
