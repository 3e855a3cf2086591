"""Prometheus metrics of fimd, in a registry of their own (one per daemon, so tests that run
several daemons in one process do not share counters).

Counters are incremented where things happen; gauges about the current state (watches by
phase, inotify watches in use vs the node limit) are computed at scrape time from a
snapshot callback, so they can never drift from GetWatchState.

Per-watch counters are labelled by `watcher` (`namespace/name` of the FimWatcher) only,
never by pod or container: the number of series is bounded by the FimWatchers on the
node, not by pods, container restarts or paths. The event volume of a watcher:

- fimd_watch_events_seen_total: events fimnotify saw = event names received (also by kind
  in fimd_events_total) + events it dropped (fimd_events_dropped_total{stage="fimnotify"});
- fimd_event_lines_total{kind="event"|"summary"}: lines handed to the stdout writer;
- fimd_lines_saved_total{by="coalescing"}: events merged into another event's line;
  {by="budget"}: event lines summed into summary lines, minus those summary lines.
So seen = event lines + saved(coalescing) + summarised lines + dropped(fimnotify), and lines
lost on the way to stdout are in fimd_events_dropped_total{stage="output"}.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@attrs.frozen
class Snapshot:
    """State-derived values for the gauges."""

    watches_by_phase: dict[str, int]
    inotify_watches_in_use: int
    max_user_watches: int
    inotify_instances_in_use: int
    max_user_instances: int
    engines: int = 0
    engines_live: int = 0
    inotify_watch_budget: int = 0  # 0 = none
    memory_budget: int = 0  # bytes; 0 = none
    memory_working_set: int = 0  # bytes; 0 = unknown
    hash_backlog: int = 0  # files waiting to be read or being read
    hash_backlog_limit: int = 0


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        watches = GaugeMetricFamily("fimd_watches", "Watches by phase", labels=["phase"])
        for phase, count in sorted(snap.watches_by_phase.items()):
            watches.add_metric([phase], count)
        yield watches
        yield GaugeMetricFamily(
            "fimd_inotify_watches",
            "inotify watches held by fimd's engines (sum of their READY counts)",
            value=snap.inotify_watches_in_use,
        )
        yield GaugeMetricFamily(
            "fimd_inotify_max_user_watches",
            "fs.inotify.max_user_watches of the node",
            value=snap.max_user_watches,
        )
        yield GaugeMetricFamily(
            "fimd_inotify_instances",
            "inotify instances held by fimd's engines (one per running engine)",
            value=snap.inotify_instances_in_use,
        )
        yield GaugeMetricFamily(
            "fimd_inotify_max_user_instances",
            "fs.inotify.max_user_instances of the node",
            value=snap.max_user_instances,
        )
        yield GaugeMetricFamily("fimd_engines", "fimnotify engines configured", value=snap.engines)
        yield GaugeMetricFamily(
            "fimd_engines_running", "fimnotify engines running", value=snap.engines_live
        )
        yield GaugeMetricFamily(
            "fimd_inotify_watch_budget",
            "inotify watches fimd admits watches up to (0: no budget)",
            value=snap.inotify_watch_budget,
        )
        yield GaugeMetricFamily(
            "fimd_memory_budget_bytes",
            "memory budget of fimd and its engines (0: none)",
            value=snap.memory_budget,
        )
        yield GaugeMetricFamily(
            "fimd_memory_working_set_bytes",
            "working set of fimd's memory cgroup (0: unknown)",
            value=snap.memory_working_set,
        )
        yield GaugeMetricFamily(
            "fimd_hash_backlog",
            "files of events with attributes waiting to be read and hashed, or being read",
            value=snap.hash_backlog,
        )
        yield GaugeMetricFamily(
            "fimd_hash_backlog_limit",
            "the hash backlog beyond which an event's file is not read (hashSkipped)",
            value=snap.hash_backlog_limit,
        )


class Metrics:
    """fimd's counters plus the state collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "fimd_events",
            "Events received from fimnotify (one per event name of a record), by kind",
            ["watcher", "event"],
            registry=self.registry,
        )
        self.events_seen = Counter(
            "fimd_watch_events_seen",
            "Events fimnotify saw: received plus dropped in fimnotify",
            ["watcher"],
            registry=self.registry,
        )
        self.lines = Counter(
            "fimd_event_lines",
            "Event lines (kind=event) and summary lines (kind=summary) written",
            ["watcher", "kind"],
            registry=self.registry,
        )
        self.lines_saved = Counter(
            "fimd_lines_saved",
            "Lines not written: by=coalescing (events merged into one line) or budget "
            "(lines summed into summary lines, minus the summary lines)",
            ["watcher", "by"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "fimd_events_dropped",
            "Events lost: stage=fimnotify (the engine's queue stayed full), output (stdout too "
            "slow) or unrouted (a record for no known watch)",
            ["watcher", "stage"],
            registry=self.registry,
        )
        self.overflows = Counter(
            "fimd_inotify_overflows",
            "inotify queue overflows",
            ["watcher"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "fimd_fimnotify_restarts",
            "Watches added to an engine again (after a crash, failure or vanished target)",
            ["watcher"],
            registry=self.registry,
        )
        self.engine_exits = Counter(
            "fimd_engine_exits",
            "fimnotify engine processes that exited unasked",
            ["engine"],
            registry=self.registry,
        )
        self.messages_lost = Counter(
            "fimd_queue_messages_lost",
            "Queue messages of an engine that were missing (sequence gap) or undecodable",
            ["engine"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "fimd_watches_rejected",
            "CreateWatch calls refused because a node budget was exhausted",
            ["budget"],
            registry=self.registry,
        )
        self.output_dropped = Counter(
            "fimd_output_lines_dropped",
            "Lines fimd could not write to stdout: kind=event|op, stage=buffer (full) or "
            "write (stdout failed)",
            ["kind", "stage"],
            registry=self.registry,
        )
        self.hash_skipped = Counter(
            "fimd_hash_skipped",
            "Events of subjects with attributes whose file fimd did not read: "
            "reason=backlog (the hash pool's backlog was full)",
            ["watcher", "reason"],
            registry=self.registry,
        )
        self.baseline_read_errors = Counter(
            "fimd_baseline_read_errors",
            "Reads of a path's stored baseline state for `previous` that failed (no database "
            "yet, a corrupt one): the event line has no previous",
            registry=self.registry,
        )
        self.audit_heartbeat = Gauge(
            "fimd_audit_heartbeat_timestamp_seconds",
            "Unix time of the last heartbeat line written to stdout (the tamper-evident stream)",
            registry=self.registry,
        )
        self.audit_sealed = Gauge(
            "fimd_audit_sealed",
            "1 while fimd seals its lines with a key from the audit key ring, else 0",
            registry=self.registry,
        )
        self.audit_key_errors = Counter(
            "fimd_audit_key_errors",
            "Audit key ring loads that failed (missing, unreadable or invalid keys.json)",
            registry=self.registry,
        )
        self.drift = Counter(
            "fimd_drift",
            "Differences from a stored baseline found by comparisons, by change "
            "(ADDED, REMOVED, CHANGED)",
            ["watcher", "change"],
            registry=self.registry,
        )
        self.scans = Counter(
            "fimd_baseline_scans",
            "Comparisons of a subject's tree with its baseline, by reason (activation, "
            "rescan, scheduled, requested)",
            ["watcher", "reason"],
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "fimd_grpc_requests",
            "gRPC requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )

    def output_drop(self, kind: str, stage: str, count: int) -> None:
        """The stdout writer's drop hook."""
        self.output_dropped.labels(kind, stage).inc(count)

    def watch_state(self, snapshot: Callable[[], Snapshot]) -> None:
        """Registers the gauges computed from `snapshot` at scrape time."""
        self.registry.register(_StateCollector(snapshot))

    def serve(self, host: str, port: int, routes: Mapping[str, WsgiApp] | None = None) -> int:
        """Serves /metrics (prometheus_client's own WSGI app, so the exposition is exactly
        its) and the `routes` (path -> WSGI app, e.g. /baselines) from background threads;
        returns the port (0 picks a free one)."""
        metrics = make_wsgi_app(self.registry)
        extra = dict(routes or {})

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            route = extra.get(str(environ.get("PATH_INFO", "")))
            return (route or metrics)(environ, start_response)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # POD_IP may be IPv6
        server_class = type("_Server", (_Server,), {"address_family": family})
        server: WSGIServer = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="fimd-metrics", daemon=True).start()
        return int(server.server_address[1])


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr (fimd's stdout is its record)."""
