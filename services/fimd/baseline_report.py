"""`GET /baselines?watcher=<uid>` on fimd's metrics port: the node's stored baselines of one
FimWatcher, summed up per (pod, container, subject), as bounded JSON (`kubectl fim
baseline`, docs/architecture.md *Ports and metrics*).

Read-only: each request reads with an aggregate query on an SQLite connection of its own
(`baseline_store.summaries`), beside the scanner thread's writer (WAL), bounded in time
(QUERY_SECONDS), in rows (MAX_ROWS) and in bytes (MAX_BODY_BYTES; what does not fit is
counted, `clipped`); at most MAX_CONCURRENT requests read at once, others get 503. A
watch fimd holds gives the pod's name and the subject's paths; a baseline no watch uses
(its pod or watcher is gone, kept for the orphan grace) shows the pod UID only.

    {"node":"n1","watcher":"<uid>","baselines":[{"namespace":"shop","pod":"web-0",
     "podUID":"...","container":"app","subject":"<key>","paths":["/etc/app"],
     "watched":true,"entries":3,"files":2,"dirs":1,"symlinks":0,"other":0,"bytes":120,
     "hashed":2,"hashSkipped":0,"updated":"2026-12-01T10:00:00.123456Z","truncated":false}],
     "shown":1,"total":1,"clipped":false}
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs

from services.fimd.baseline_store import QueryTimeoutError, StoreError, Summary, summaries
from services.fimd.lines import format_time

MAX_ROWS = 2000
MAX_BODY_BYTES = 1 << 20
#: Paths of a subject shown, each at most MAX_PATH_CHARS characters.
MAX_PATHS = 8
MAX_PATH_CHARS = 512
QUERY_SECONDS = 10.0
MAX_CONCURRENT = 2
#: A Kubernetes UID (what the controller sends as WatchKey.watcher_uid): 1..253 bytes.
_UID = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")

#: (pod UID, container, subject key) -> (pod name, the subject's paths), of held watches.
Subjects = Mapping[tuple[str, str, str], tuple[str, tuple[str, ...]]]


@attrs.frozen
class Answer:
    status: str
    body: bytes


def _error(status: str, message: str) -> Answer:
    return Answer(status, json.dumps({"error": message}).encode() + b"\n")


def parse_watcher(query: str) -> str:
    """The watcher UID of a query string; raises ValueError with the reason."""
    values = parse_qs(query, keep_blank_values=True, max_num_fields=8).get("watcher", [])
    if len(values) != 1:
        raise ValueError("give exactly one watcher=<FimWatcher UID>")
    uid = values[0]
    if not _UID.fullmatch(uid):
        raise ValueError("watcher: not a Kubernetes UID (1..253 of a-z, 0-9, '-', '.')")
    return uid


def _row(summary: Summary, subjects: Subjects) -> dict[str, object]:
    key = summary.key
    held = subjects.get((key.pod_uid, key.container, key.subject))
    row: dict[str, object] = {
        "namespace": key.namespace,
        "pod": held[0] if held else "",
        "podUID": key.pod_uid,
        "container": key.container,
        "subject": key.subject,
    }
    if held:
        paths = held[1]
        row["paths"] = [p[:MAX_PATH_CHARS] for p in paths[:MAX_PATHS]]
        if len(paths) > MAX_PATHS:
            row["pathsOmitted"] = len(paths) - MAX_PATHS
    row.update(
        watched=held is not None,
        entries=summary.entries,
        files=summary.files,
        dirs=summary.dirs,
        symlinks=summary.symlinks,
        other=summary.other,
        bytes=summary.bytes,
        hashed=summary.hashed,
        hashSkipped=summary.hash_skipped,
        updated=format_time(summary.updated_ns),
        truncated=summary.truncated,
    )
    return row


def document(
    node: str, watcher: str, found: Iterable[Summary], subjects: Subjects, *, more: bool
) -> bytes:
    """The JSON body: as many rows as fit MAX_BODY_BYTES; `more`: the query hit MAX_ROWS."""
    rows: list[bytes] = []
    size, total = 0, 0
    for summary in found:
        total += 1
        row = json.dumps(_row(summary, subjects), ensure_ascii=False).encode()
        if size + len(row) + 1 <= MAX_BODY_BYTES:
            rows.append(row)
            size += len(row) + 1
    clipped = more or len(rows) < total
    head = json.dumps({"node": node, "watcher": watcher}, ensure_ascii=False).encode()
    tail = json.dumps({"shown": len(rows), "total": total, "clipped": clipped}).encode()
    return head[:-1] + b',"baselines":[' + b",".join(rows) + b"]," + tail[1:] + b"\n"


class BaselineEndpoint:
    """The WSGI side: `answer(query)` for a request of /baselines."""

    def __init__(
        self,
        node: str,
        db_path: str,
        subjects: Callable[[str], Subjects],
        *,
        seconds: float = QUERY_SECONDS,
    ) -> None:
        self._node = node
        self._path = db_path
        self._subjects = subjects
        self._seconds = seconds
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def answer(self, query: str) -> Answer:
        try:
            watcher = parse_watcher(query)
        except ValueError as err:
            return _error("400 Bad Request", str(err))
        if not self._path:
            return _error("404 Not Found", "this fimd keeps no baselines (no --baseline-db)")
        if not self._slots.acquire(blocking=False):
            return _error("503 Service Unavailable", "busy: other baseline reads are running")
        try:
            found = summaries(self._path, watcher, limit=MAX_ROWS + 1, seconds=self._seconds)
        except QueryTimeoutError as err:
            return _error("503 Service Unavailable", str(err))
        except StoreError as err:
            return _error("500 Internal Server Error", str(err))
        finally:
            self._slots.release()
        body = document(
            self._node, watcher, found[:MAX_ROWS], self._subjects(watcher),
            more=len(found) > MAX_ROWS,
        )  # fmt: skip
        return Answer("200 OK", body)

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            answer = _error("405 Method Not Allowed", "only GET")
        else:
            answer = self.answer(str(environ.get("QUERY_STRING", "")))
        start_response(
            answer.status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(answer.body)))],
        )
        return [answer.body]
