"""Prometheus metrics and the /metrics, /healthz and /readyz endpoints.

Each controller gets its own registry, so several controllers can run in one process
(tests) without their series mixing. A probe answers 200 `ok`, or 503 `not ok` followed by
one line per problem it found (bounded: the problems are the controller's own words).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from services.controller.bounds import clip


class Metrics:
    """The controller's series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.reconciles = Counter(
            "fim_controller_reconciles",
            "Syncs of a work-queue key, by kind (node, watcher) and result (ok, error).",
            ["kind", "result"],
            registry=reg,
        )
        self.reconcile_seconds = Histogram(
            "fim_controller_reconcile_seconds", "Duration of one sync.", ["kind"], registry=reg
        )
        self.actions = Counter(
            "fim_controller_actions",
            "Actions carried out: fimd calls, status and finalizer patches, events.",
            ["action", "result"],
            registry=reg,
        )
        self.errors = Counter(
            "fim_controller_errors",
            "Failed syncs by kind (node, watcher), expected (API server, fimd) or not.",
            ["kind"],
            registry=reg,
        )
        self.sync_errors = Counter(
            "fim_controller_sync_errors",
            "Unexpected exceptions (a bug, or input the controller cannot handle) by where"
            " (node, watcher, sweep, worker) and exception type; each key is retried.",
            ["kind", "error"],
            registry=reg,
        )
        self.workers_alive = Gauge(
            "fim_controller_workers_alive",
            "Worker threads alive (0 on a standby); /healthz fails below --workers.",
            registry=reg,
        )
        self.queue_depth = Gauge(
            "fim_controller_queue_depth", "Work-queue keys waiting to be synced.", registry=reg
        )
        self.fimd_reachable = Gauge(
            "fim_controller_fimd_reachable",
            "1 if the node's fimd answered the last call, 0 if not.",
            ["node"],
            registry=reg,
        )
        self.leader = Gauge(
            "fim_controller_leader", "1 while this replica holds the leader lease.", registry=reg
        )


#: A probe: the problems it finds, none when all is well.
Check = Callable[[], list[str]]
#: At most this many problem lines in a probe's answer.
MAX_PROBLEM_LINES = 20


def probe_body(problems: list[str]) -> bytes:
    if not problems:
        return b"ok\n"
    lines = ["not ok", *(clip(p, 512) for p in problems[:MAX_PROBLEM_LINES])]
    if len(problems) > MAX_PROBLEM_LINES:
        lines.append(f"and {len(problems) - MAX_PROBLEM_LINES} more")
    return ("\n".join(lines) + "\n").encode()


def serve(
    metrics: Metrics, address: tuple[str, int], *, healthy: Check, ready: Check
) -> ThreadingHTTPServer:
    """Serves the endpoints on `address` in a daemon thread; returns the bound server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path in {"/healthz", "/readyz"}:
                problems = healthy() if self.path == "/healthz" else ready()
                self._send(503 if problems else 200, probe_body(problems), "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would drown the JSON log: not logged."""

    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
