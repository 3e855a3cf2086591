"""Typed, validated value classes for the FimWatcher custom resource (fim-k8s.io/v1alpha1).

Every class is frozen and validates itself on construction, so a FimWatcher that exists in
memory satisfies the FimWatcher contract of the design whether it came from the API server (through
`libs.k8s.codec`) or from our own code; the controller never acts on unchecked input.
Violations raise `ModelError` with the JSON field path, e.g.
`subjects[1].paths[0]: must be an absolute path` (the codec prefixes `spec.`).

Bounds (mirrored by the CRD schema; they cap the inotify watches and log volume a single
resource can cost a node). A subject is checked by the one subject validation of
`libs.fimnotify_api.subject` (the same fimd and fimnotify apply); its bounds are in bytes:

- MAX_SUBJECTS = 32 subjects per FimWatcher, at least one.
- MAX_PATHS_PER_SUBJECT = 64 paths per subject, at least one, no duplicates.
- MAX_PATH_LENGTH = 4096 bytes (Linux PATH_MAX); paths are absolute, contain no NUL and
  are normalized: no empty, '.' or '..' component, no trailing '/' ('/' itself is allowed).
- MAX_IGNORE_PATTERNS = 64 patterns per subject; each non-empty, at most
  MAX_IGNORE_PATTERN_LENGTH = 255 bytes (NAME_MAX), no '/' (they match one component)
  and no NUL.
- MAX_DEPTH = 128 for maxDepth (0 = unlimited); a non-zero maxDepth requires recursive.
- MAX_TAGS = 32 tags per subject; keys are label keys, values are label values (63 chars).
- MAX_LOG_FORMAT_LENGTH = 1024 characters, a template of the one `logFormat` grammar
  (`libs.k8s.logformat`): known `{name}` placeholders, `{{`/`}}` for literal braces, no
  control character but tab and no line separator (one line per event).
- `coalesce` (per subject): "" (none) or a duration `<digits>ms|s|m` of 1 ms up to
  MAX_COALESCE_MS = 60000 (one minute); gRPC carries it as `coalesce_ms`.
- `attributes` (per subject) and `hash` ("" or "sha256"): event lines of regular files carry
  the file's attributes and hash; not with `coalesce` (`subject.check_attributes`).
- `lineBudget`: event lines per second per watched container, 0 (fimd's default) up to
  MAX_LINE_BUDGET = 1000000. `check_coalesce_ms` and `check_line_budget` are the one check of
  both numbers (fimd's request validation calls them too).
- `scan.interval`: "" (no scheduled comparison) or a duration `<digits>s|m|h` of
  MIN_SCAN_INTERVAL_S (one minute) up to MAX_SCAN_INTERVAL_S (366 days); gRPC carries it as
  `scan_interval_s` (`scan_interval_s` is its one check).
- Counters and generations are non-negative; pod counters fit an int32 (MAX_POD_COUNT).
- Conditions follow metav1.Condition: type a qualified name of at most 316 characters,
  reason matching `[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?` of at most 1024, message of at most
  32768, a timezone-aware lastTransitionTime, and at most one condition per type.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import attrs

from libs.fimnotify_api import subject as subject_contract
from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.subject import SubjectError, check_subject
from libs.k8s import logformat
from libs.k8s.errors import ModelError, within
from libs.k8s.frozen import frozen_map
from libs.k8s.names import check_dns1123_label, check_dns1123_subdomain
from libs.k8s.selector import LabelSelector, check_labels

GROUP = "fim-k8s.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FimWatcher"
PLURAL = "fimwatchers"

MAX_SUBJECTS = 32
# A subject's bounds are the contract's (libs/fimnotify_api/subject.py), in bytes.
MAX_PATHS_PER_SUBJECT = subject_contract.MAX_PATHS
MAX_PATH_LENGTH = subject_contract.MAX_PATH_BYTES
MAX_IGNORE_PATTERNS = subject_contract.MAX_IGNORE
MAX_IGNORE_PATTERN_LENGTH = subject_contract.MAX_IGNORE_BYTES
MAX_DEPTH = subject_contract.MAX_DEPTH
MAX_TAGS = subject_contract.MAX_TAGS
MAX_LOG_FORMAT_LENGTH = 1024
MAX_COALESCE_MS = 60_000
MAX_LINE_BUDGET = 1_000_000
#: A coalescing window as the CRD writes it (the CRD's `pattern`; the range is checked apart).
COALESCE_PATTERN = "^[0-9]{1,5}(ms|s|m)$"
_COALESCE_RE = re.compile(COALESCE_PATTERN[1:-1])
_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000}
#: The annotation that asks for one comparison with the baselines now (`kubectl fim scan`):
#: any new value does; the controller forwards a digest of it to fimd (scan_request).
SCAN_REQUEST_ANNOTATION = "fim-k8s.io/scan-requested"
MIN_SCAN_INTERVAL_S = 60
MAX_SCAN_INTERVAL_S = 366 * 24 * 3600
#: A scan interval as the CRD writes it (the CRD's `pattern`; the range is checked apart).
SCAN_INTERVAL_PATTERN = "^[0-9]{1,8}(s|m|h)$"
_SCAN_INTERVAL_RE = re.compile(SCAN_INTERVAL_PATTERN[1:-1])
_INTERVAL_UNITS_S = {"s": 1, "m": 60, "h": 3600}
MAX_SCAN_COUNT = 2**63 - 1
#: status.lastScan.request holds at most this much of the scan-request annotation.
MAX_SCAN_REQUEST_LENGTH = 256
MAX_POD_COUNT = 2**31 - 1
MAX_GENERATION = 2**63 - 1
MAX_CONDITION_TYPE_LENGTH = 316
MAX_CONDITION_REASON_LENGTH = 1024
MAX_CONDITION_MESSAGE_LENGTH = 32768

_CONDITION_TYPE_RE = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])"
)
_CONDITION_REASON_RE = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")

_T = TypeVar("_T")


def _check_count(items: Collection[object], *, minimum: int, maximum: int) -> None:
    if len(items) < minimum:
        raise ModelError(f"must have at least {minimum} item(s)")
    if len(items) > maximum:
        raise ModelError(f"must have at most {maximum} items, got {len(items)}")


def _check_each(items: Sequence[_T], check: Callable[[_T], None]) -> None:
    """Checks each item of a list; the error path gets the item's `[index]`."""
    for index, item in enumerate(items):
        with within(index):
            check(item)


def _check_unique(items: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item in seen:
            raise ModelError(f"duplicate value {item!r}", f"[{index}]")
        seen.add(item)


def _check_range(value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ModelError(f"must be between 0 and {maximum}, got {value}")


def _check_length(value: str, maximum: int) -> None:
    if len(value) > maximum:
        raise ModelError(f"must be at most {maximum} characters, got {len(value)}")


def _check_aware(value: datetime) -> None:
    if value.utcoffset() is None:
        raise ModelError("must be a timestamp with a time zone")


def _check_log_format(log_format: str) -> None:
    _check_length(log_format, MAX_LOG_FORMAT_LENGTH)
    try:
        logformat.parse(log_format)
    except logformat.TemplateError as err:
        raise ModelError(str(err)) from None


def check_coalesce_ms(window_ms: int) -> None:
    """A coalescing window in milliseconds: 0 (none) or 1..MAX_COALESCE_MS."""
    if isinstance(window_ms, bool) or not 0 <= window_ms <= MAX_COALESCE_MS:
        raise ModelError(f"must be at most {MAX_COALESCE_MS} ms (one minute), got {window_ms} ms")


def check_line_budget(budget: int) -> None:
    """Lines per second of one watch: 0 (fimd's default) or 1..MAX_LINE_BUDGET."""
    if isinstance(budget, bool) or not 0 <= budget <= MAX_LINE_BUDGET:
        raise ModelError(f"must be between 0 and {MAX_LINE_BUDGET}, got {budget}")


def coalesce_ms(text: str) -> int:
    """The window of a `coalesce` duration in milliseconds ("" = 0: none); raises
    ModelError for anything but `<digits>ms|s|m` of 1 ms up to one minute."""
    if not text:
        return 0
    match = _COALESCE_RE.fullmatch(text)
    if match is None:
        raise ModelError(f"must be a duration like 500ms, 1s or 1m, got {text!r}")
    window = int(text[: match.start(1)]) * _DURATION_UNITS_MS[match.group(1)]
    if window == 0:
        raise ModelError("must be longer than 0 (omit it for no coalescing)")
    check_coalesce_ms(window)
    return window


def check_scan_interval_s(seconds: int) -> None:
    """A scan interval in seconds: 0 (none) or MIN_SCAN_INTERVAL_S..MAX_SCAN_INTERVAL_S."""
    if isinstance(seconds, bool) or not (
        seconds == 0 or MIN_SCAN_INTERVAL_S <= seconds <= MAX_SCAN_INTERVAL_S
    ):
        raise ModelError(
            f"must be at least 1m and at most 366 days ({MAX_SCAN_INTERVAL_S} s), got {seconds} s"
        )


def scan_interval_s(text: str) -> int:
    """The seconds of a `scan.interval` duration ("" = 0: no scheduled scan); raises
    ModelError for anything but `<digits>s|m|h` of one minute up to 366 days."""
    if not text:
        return 0
    match = _SCAN_INTERVAL_RE.fullmatch(text)
    if match is None:
        raise ModelError(f"must be a duration like 30m, 24h or 168h, got {text!r}")
    seconds = int(text[: match.start(1)]) * _INTERVAL_UNITS_S[match.group(1)]
    if seconds == 0:
        raise ModelError("must be at least 1m (omit it for no scheduled scan)")
    check_scan_interval_s(seconds)
    return seconds


@attrs.frozen(kw_only=True)
class ScanSpec:
    """Scheduled comparisons of the baseline subjects' trees with their baselines."""

    #: How often ("" = never; at least 1m), e.g. "168h" for weekly (PCI-DSS 11.5.2).
    interval: str = ""

    @property
    def interval_s(self) -> int:
        return scan_interval_s(self.interval)

    def __attrs_post_init__(self) -> None:
        with within("interval"):
            scan_interval_s(self.interval)


@attrs.frozen(kw_only=True)
class ObjectMeta:
    """The part of metav1.ObjectMeta the controller uses; other metadata is ignored."""

    name: str
    namespace: str
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    deletion_timestamp: datetime | None = None
    finalizers: tuple[str, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)

    def __attrs_post_init__(self) -> None:
        with within("name"):
            check_dns1123_subdomain(self.name)
        with within("namespace"):
            check_dns1123_label(self.namespace)
        with within("generation"):
            _check_range(self.generation, MAX_GENERATION)
        if self.deletion_timestamp is not None:
            with within("deletionTimestamp"):
                _check_aware(self.deletion_timestamp)
        with within("labels"):
            check_labels(self.labels)


@attrs.frozen(kw_only=True)
class Subject:
    """Which paths to watch for which events, and how (one `spec.subjects[]` entry)."""

    paths: tuple[str, ...]
    events: frozenset[EventName]
    ignore: tuple[str, ...] = ()
    only_dir: bool = False
    recursive: bool = False
    max_depth: int = 0
    follow_move: bool = False
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    #: Coalescing window as written ("" = none); see `coalesce_ms`.
    coalesce: str = ""
    #: Event lines of regular files carry their attributes (size, mode, uid, gid, mtime).
    attributes: bool = False
    #: "" or "sha256": event lines of regular files carry their content hash too.
    hash: str = ""

    @property
    def coalesce_ms(self) -> int:
        return coalesce_ms(self.coalesce)

    def __attrs_post_init__(self) -> None:
        with within("coalesce"):
            coalesce_ms(self.coalesce)
        try:
            check_subject(
                paths=self.paths,
                events=self.events,
                ignore=self.ignore,
                recursive=self.recursive,
                max_depth=self.max_depth,
                tags=self.tags,
                attributes=self.attributes,
                hash=self.hash,
                coalescing=bool(self.coalesce),
            )
        except SubjectError as err:
            raise ModelError(err.reason, err.field) from None
        with within("tags"):
            check_labels(self.tags)


@attrs.frozen(kw_only=True)
class FimWatcherSpec:
    """What to watch (subjects) in which pods (selector), and how to print events."""

    selector: LabelSelector
    subjects: tuple[Subject, ...]
    log_format: str = ""
    #: Event lines per second per watched container; 0 = fimd's default (--line-budget).
    line_budget: int = 0
    scan: ScanSpec = ScanSpec()

    def __attrs_post_init__(self) -> None:
        with within("subjects"):
            _check_count(self.subjects, minimum=1, maximum=MAX_SUBJECTS)
        with within("logFormat"):
            _check_log_format(self.log_format)
        with within("lineBudget"):
            check_line_budget(self.line_budget)


class ConditionStatus(enum.StrEnum):
    """metav1.ConditionStatus."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@attrs.frozen(kw_only=True)
class Condition:
    """A metav1.Condition, as the controller writes it into FimWatcher status."""

    type: str
    status: ConditionStatus
    reason: str
    last_transition_time: datetime
    message: str = ""
    observed_generation: int | None = None

    def __attrs_post_init__(self) -> None:
        with within("type"):
            _check_length(self.type, MAX_CONDITION_TYPE_LENGTH)
            if not _CONDITION_TYPE_RE.fullmatch(self.type):
                raise ModelError(f"{self.type!r} is not a valid condition type")
        with within("reason"):
            _check_length(self.reason, MAX_CONDITION_REASON_LENGTH)
            if not _CONDITION_REASON_RE.fullmatch(self.reason):
                raise ModelError(f"{self.reason!r} is not a valid condition reason")
        with within("message"):
            _check_length(self.message, MAX_CONDITION_MESSAGE_LENGTH)
        with within("lastTransitionTime"):
            _check_aware(self.last_transition_time)
        if self.observed_generation is not None:
            with within("observedGeneration"):
                _check_range(self.observed_generation, MAX_GENERATION)


@attrs.frozen(kw_only=True)
class ScanStatus:
    """The last comparisons of the watcher's watches: the time of the latest, and the sums
    of each watched container's last comparison. `request`: the scan-request annotation's
    value (SCAN_REQUEST_ANNOTATION, at most MAX_SCAN_REQUEST_LENGTH characters of it) once
    every container of the observable pods (`containers`) has a last comparison that
    answered it, else ""; `answered`: how many have."""

    # Written in full (codec): a merge patch would keep an omitted stale field.
    time: datetime
    scanned: int
    added: int
    removed: int
    changed: int
    request: str = ""
    answered: int = 0
    containers: int = 0

    def __attrs_post_init__(self) -> None:
        with within("time"):
            _check_aware(self.time)
        for name in ("scanned", "added", "removed", "changed"):
            with within(name):
                _check_range(getattr(self, name), MAX_SCAN_COUNT)
        with within("request"):
            _check_length(self.request, MAX_SCAN_REQUEST_LENGTH)
        for name in ("answered", "containers"):
            with within(name):
                _check_range(getattr(self, name), MAX_POD_COUNT)


@attrs.frozen(kw_only=True)
class FimWatcherStatus:
    """What the controller observed; `FimWatcherStatus()` is the status of a new resource."""

    observed_generation: int = 0
    observable_pods: int = 0
    watched_pods: int = 0
    conditions: tuple[Condition, ...] = ()
    last_scan: ScanStatus | None = None

    def __attrs_post_init__(self) -> None:
        with within("observedGeneration"):
            _check_range(self.observed_generation, MAX_GENERATION)
        with within("observablePods"):
            _check_range(self.observable_pods, MAX_POD_COUNT)
        with within("watchedPods"):
            _check_range(self.watched_pods, MAX_POD_COUNT)
        with within("conditions"):
            _check_unique([condition.type for condition in self.conditions])


@attrs.frozen(kw_only=True)
class FimWatcher:
    """One FimWatcher resource."""

    metadata: ObjectMeta
    spec: FimWatcherSpec
    status: FimWatcherStatus = FimWatcherStatus()

    @property
    def key(self) -> str:
        """`namespace/name`: the cache key, and the `watcher` field of event lines."""
        return f"{self.metadata.namespace}/{self.metadata.name}"
