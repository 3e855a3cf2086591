"""List + watch one resource into a local cache, and report every change.

The informer lists (paginated, so memory stays bounded), then watches from the list's
resourceVersion with bookmarks so it can resume where it left off. A dropped stream or an
unreachable API server is retried with backoff from the last resourceVersion; `410 Gone`
(the server no longer has that version) triggers a relist, which reports the objects that
changed or vanished meanwhile as changes, so nothing is missed across API server restarts.

Objects are stored as parsed by `parse` (the slim views of `objects`); indexes answer
"pods on node N" without scanning.

No single object or event stops an informer: an object that cannot be parsed is logged and
left out, a change handler that raises is logged (the controller's periodic sweep enqueues
everything again), and any other failure of a list or watch is retried like an API error,
with a relist.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from libs import backoff
from libs.k8s.errors import ModelError
from services.controller.bounds import describe, error_type, frames
from services.controller.kube import ApiError, JsonObject, Kube

T = TypeVar("T")
Handler = Callable[[T | None, T | None], None]
Indexer = Callable[[T], str]

GONE = 410
BACKOFF_BASE = 0.4
MAX_BACKOFF = 10.0

log = logging.getLogger(__name__)


class Gone(Exception):  # noqa: N818 - named after the HTTP status
    """The watch's resourceVersion is too old: relist."""


def object_key(obj: JsonObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Informer(Generic[T]):
    """A cache of one resource kept current by list + watch; thread-safe reads."""

    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        parse: Callable[[JsonObject], T],
        on_change: Handler[T],
        query: Mapping[str, str] | None = None,
        indexers: Mapping[str, Indexer[T]] | None = None,
        page_size: int = 500,
        watch_seconds: int = 300,
    ) -> None:
        self.path = path
        self.synced = threading.Event()
        self._kube = kube
        self._parse = parse
        self._on_change = on_change
        self._query = dict(query or {})
        self._indexers = dict(indexers or {})
        self._page_size = page_size
        self._watch_seconds = watch_seconds
        self._lock = threading.Lock()
        self._items: dict[str, T] = {}
        self._index: dict[str, dict[str, set[str]]] = {
            name: defaultdict(set) for name in self._indexers
        }
        self._resource_version = ""

    # Reads.
    def get(self, key: str) -> T | None:
        with self._lock:
            return self._items.get(key)

    def items(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def by_index(self, name: str, value: str) -> list[T]:
        with self._lock:
            return [self._items[key] for key in self._index[name].get(value, ())]

    # Cache updates; handlers run outside the lock.
    def _store(self, key: str, new: T | None) -> T | None:
        with self._lock:
            old = self._items.pop(key, None)
            if new is not None:
                self._items[key] = new
            for name, indexer in self._indexers.items():
                index = self._index[name]
                if old is not None:
                    value = indexer(old)
                    keys = index.get(value)
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del index[value]  # a value nothing has any more costs nothing
                if new is not None:
                    index[indexer(new)].add(key)
        return old

    def index_values(self, name: str) -> list[str]:
        """The values index `name` holds keys for (each with at least one object)."""
        with self._lock:
            return list(self._index[name])

    def _apply(self, key: str, new: T | None) -> None:
        old = self._store(key, new)
        if old != new:
            try:
                self._on_change(old, new)
            except Exception as err:  # a handler bug must not stop the cache
                log.error(
                    "change handler failed",
                    extra={
                        "path": self.path,
                        "key": key,
                        "error_type": error_type(err),
                        "error": describe(err),
                        "traceback": frames(err),
                    },
                )

    def _parsed(self, obj: JsonObject) -> T | None:
        try:
            return self._parse(obj)
        except ModelError as err:
            log.warning(
                "ignoring malformed object", extra={"key": object_key(obj), "error": describe(err)}
            )
        except Exception as err:  # a parser bug: leave the object out, keep the cache going
            log.error(
                "ignoring object that cannot be parsed",
                extra={
                    "key": object_key(obj),
                    "error_type": error_type(err),
                    "error": describe(err),
                    "traceback": frames(err),
                },
            )
        return None

    # List + watch.
    def _pages(self) -> Iterator[JsonObject]:
        query = {**self._query, "limit": str(self._page_size)}
        while True:
            page = self._kube.request("GET", self.path, query=query)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    def relist(self) -> None:
        """Replaces the cache with a fresh list; reports what changed meanwhile."""
        fresh: dict[str, T] = {}
        for page in self._pages():
            for obj in page.get("items") or ():
                parsed = self._parsed(obj)
                if parsed is not None:
                    fresh[object_key(obj)] = parsed
            self._resource_version = str((page.get("metadata") or {}).get("resourceVersion", ""))
        with self._lock:
            vanished = set(self._items) - set(fresh)
        for key in vanished:
            self._apply(key, None)
        for key, item in fresh.items():
            self._apply(key, item)
        self.synced.set()

    def _watch_once(self) -> None:
        query = {
            **self._query,
            "resourceVersion": self._resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._watch_seconds),
        }
        # A silent stream longer than the server's own timeout means a dead connection.
        events = self._kube.watch(self.path, query, timeout=self._watch_seconds + 30)
        for event in events:
            self._handle(event)

    def _handle(self, event: JsonObject) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == GONE:
                raise Gone
            raise ApiError(int(obj.get("code") or 0), str(obj.get("message", "watch error")))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in {"ADDED", "MODIFIED"}:
            self._apply(object_key(obj), self._parsed(obj))
        elif kind == "DELETED":
            self._apply(object_key(obj), None)
        if version:
            self._resource_version = str(version)

    def run(self, stop: threading.Event) -> None:
        """Keeps the cache current until `stop` is set."""
        failures = 0
        needs_list = True
        while not stop.is_set():
            try:
                if needs_list:
                    self.relist()
                    needs_list = False
                self._watch_once()
                failures = 0
            except Gone:
                log.info("watch expired, relisting", extra={"path": self.path})
                needs_list = True
            except ApiError as err:
                needs_list = needs_list or err.status == GONE
                failures += 1
                delay = backoff.delay(failures, base=BACKOFF_BASE, cap=MAX_BACKOFF)
                log.warning(
                    "list/watch failed",
                    extra={"path": self.path, "error": describe(err), "retry_in": delay},
                )
                stop.wait(delay)
            except Exception as err:  # e.g. a garbled stream: start over from a fresh list
                needs_list = True
                failures += 1
                delay = backoff.delay(failures, base=BACKOFF_BASE, cap=MAX_BACKOFF)
                log.error(
                    "list/watch failed unexpectedly",
                    extra={
                        "path": self.path,
                        "error_type": error_type(err),
                        "error": describe(err),
                        "traceback": frames(err),
                        "retry_in": delay,
                    },
                )
                stop.wait(delay)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run, args=(stop,), name=f"informer {self.path}", daemon=True
        )
        thread.start()
        return thread
