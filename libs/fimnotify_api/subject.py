"""The one validation of a subject (what to watch, for which events, how), shared by every part.

The FimWatcher model (libs/k8s), fimd's gRPC request validation and the fimnotify engine all
call `check_subject`, so a subject one part accepts is never refused by another. Bounds are
in bytes where they size memory (UTF-8 encoded), and cap what one subject can cost a node:

- 1..MAX_PATHS paths, no duplicates; each absolute, at most MAX_PATH_BYTES (PATH_MAX), no NUL,
  normalized: no empty, '.' or '..' component and no trailing '/' ('/' itself is allowed).
  Paths and ignore patterns have a byte form: no surrogate except U+DC80..U+DCFF, which
  stand for the bytes of non-UTF-8 names (surrogateescape).
- at least one event name, each a known one (`events.ALL_NAMES`).
- at most MAX_IGNORE patterns; each a non-empty glob on one path component: no '/', no NUL,
  at most MAX_IGNORE_BYTES (NAME_MAX).
- max_depth in 0..MAX_DEPTH (0 = unlimited); non-zero only with recursive.
- at most MAX_TAGS tags; keys 1..MAX_TAG_KEY_BYTES, values at most MAX_TAG_VALUE_BYTES, no NUL.
  (The model also checks Kubernetes label syntax, which is stricter.)
- attributes (bool) and hash ("" or one of HASH_ALGORITHMS, at most MAX_HASH_BYTES): event
  lines of regular files carry the file's attributes (and its hash); `hash` implies
  attributes. Neither goes with coalescing (a coalesced line stands for many events, whose
  files differ), so `coalescing` (the subject has a coalesce window) refuses them.

Errors are `SubjectError(field, reason)` with the field relative to the subject (`paths[2]`),
so each caller prefixes its own location (`spec.subjects[1].`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import attrs

from libs.fimnotify_api.events import ALL_NAMES, EventName

MAX_PATHS = 64
MAX_PATH_BYTES = 4096
MAX_IGNORE = 64
MAX_IGNORE_BYTES = 255
MAX_DEPTH = 128
MAX_TAGS = 32
MAX_TAG_KEY_BYTES = 317  # a qualified label key: 253-byte prefix + "/" + 63-byte name
MAX_TAG_VALUE_BYTES = 1024
#: Content hashes a subject may ask for (the CRD's `hash` enum).
HASH_ALGORITHMS = ("sha256",)
MAX_HASH_BYTES = 16


class SubjectError(ValueError):
    """A subject field is invalid; `field` is relative to the subject ('' = the subject)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def _size(field: str, value: str, limit: int) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise SubjectError(field, f"is {size} bytes, at most {limit} allowed")
    if "\0" in value:
        raise SubjectError(field, "must not contain NUL")


def _bytes(field: str, value: str) -> None:
    """Paths and globs reach the filesystem as bytes: UTF-8, with U+DC80..U+DCFF standing for
    the bytes of a non-UTF-8 name (surrogateescape). Any other surrogate has no byte form."""
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise SubjectError(
            field, f"has a lone surrogate {value[exc.start]!r} at {exc.start}: not a name"
        ) from None


def _count(field: str, items: Collection[object], low: int, high: int) -> None:
    if len(items) < low:
        raise SubjectError(field, f"must have at least {low} item(s)")
    if len(items) > high:
        raise SubjectError(field, f"must have at most {high} items, got {len(items)}")


def check_path(field: str, path: str) -> None:
    """An absolute, normalized container path of at most PATH_MAX bytes."""
    if not path:
        raise SubjectError(field, "must not be empty")
    _size(field, path, MAX_PATH_BYTES)
    _bytes(field, path)
    if not path.startswith("/"):
        raise SubjectError(field, f"must be an absolute path, got {path!r}")
    if path != "/" and any(part in ("", ".", "..") for part in path[1:].split("/")):
        raise SubjectError(
            field,
            f"must be normalized (no empty, '.' or '..' component, no trailing '/'), got {path!r}",
        )


def check_ignore(field: str, pattern: str) -> None:
    """A glob matched against one path component, so it cannot contain '/'."""
    if not pattern:
        raise SubjectError(field, "must not be empty")
    _size(field, pattern, MAX_IGNORE_BYTES)
    _bytes(field, pattern)
    if "/" in pattern:
        raise SubjectError(field, f"must not contain '/' (it matches one component): {pattern!r}")


def check_subject(
    *,
    paths: Collection[str],
    events: Iterable[str],
    ignore: Collection[str] = (),
    recursive: bool = False,
    max_depth: int = 0,
    tags: Mapping[str, str] | None = None,
    attributes: bool = False,
    hash: str = "",
    coalescing: bool = False,
) -> None:
    """Raises SubjectError for the first invalid field (see the module docstring)."""
    _count("paths", paths, 1, MAX_PATHS)
    seen: set[str] = set()
    for i, path in enumerate(paths):
        check_path(f"paths[{i}]", path)
        if path in seen:
            raise SubjectError(f"paths[{i}]", f"duplicate path {path!r}")
        seen.add(path)
    names = list(events)
    _count("events", names, 1, len(ALL_NAMES))
    for i, name in enumerate(names):
        if name not in ALL_NAMES:
            raise SubjectError(
                f"events[{i}]",
                f"unknown event name {name!r}; expected one of: " + ", ".join(ALL_NAMES),
            )
    _count("ignore", ignore, 0, MAX_IGNORE)
    for i, pattern in enumerate(ignore):
        check_ignore(f"ignore[{i}]", pattern)
    if isinstance(max_depth, bool) or not 0 <= max_depth <= MAX_DEPTH:
        raise SubjectError("maxDepth", f"must be between 0 and {MAX_DEPTH}, got {max_depth}")
    if max_depth and not recursive:
        raise SubjectError("maxDepth", "requires recursive: true")
    tags = tags or {}
    _count("tags", tags, 0, MAX_TAGS)
    for key, value in tags.items():
        if not key:
            raise SubjectError("tags", "a tag key must not be empty")
        _size("tags key", key, MAX_TAG_KEY_BYTES)
        _size(f"tags[{key!r}]", value, MAX_TAG_VALUE_BYTES)
    check_attributes(attributes=attributes, hash=hash, coalescing=coalescing)


def check_attributes(*, attributes: bool, hash: str, coalescing: bool) -> None:
    """`hash` is "" or a known algorithm; neither it nor `attributes` with coalescing."""
    if not isinstance(attributes, bool):
        raise SubjectError("attributes", f"must be true or false, got {attributes!r}")
    if hash:
        _size("hash", hash, MAX_HASH_BYTES)
        if hash not in HASH_ALGORITHMS:
            raise SubjectError(
                "hash", f"unknown hash {hash!r}; expected one of: " + ", ".join(HASH_ALGORITHMS)
            )
    if coalescing and (attributes or hash):
        field = "hash" if hash else "attributes"
        raise SubjectError(field, "cannot be combined with coalesce (a line per event)")


def _unknown(index: int, name: str) -> SubjectError:
    known = ", ".join(ALL_NAMES)
    return SubjectError(
        f"events[{index}]", f"unknown event name {name!r}; expected one of: {known}"
    )


def _events(names: Iterable[str]) -> tuple[EventName, ...]:
    """Event names as EventName; an unknown one is the same error `check_subject` gives."""
    out = []
    for i, name in enumerate(names):
        if name not in ALL_NAMES:
            raise _unknown(i, name)
        out.append(EventName(name))
    return tuple(out)


@attrs.frozen
class SubjectConfig:
    """One subject as an engine applies it (paths are inside the container); validated by
    `check_subject` on construction."""

    paths: tuple[str, ...]
    events: tuple[EventName, ...] = attrs.field(converter=_events)
    ignore: tuple[str, ...] = ()
    only_dir: bool = False
    recursive: bool = False
    #: With `recursive`: directory levels below each path that are watched; 0 = unlimited.
    max_depth: int = 0
    follow_move: bool = False
    #: Not sent to the engine: fimd resolves them from the subject index of each event.
    tags: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    #: Not sent to the engine either: fimd reads the attributes and hashes of files.
    attributes: bool = False
    hash: str = ""

    @property
    def with_attributes(self) -> bool:
        """Event lines of regular files carry attributes (`hash` implies them)."""
        return self.attributes or bool(self.hash)

    def __attrs_post_init__(self) -> None:
        check_subject(
            paths=self.paths,
            events=self.events,
            ignore=self.ignore,
            recursive=self.recursive,
            max_depth=self.max_depth,
            tags=self.tags,
            attributes=self.attributes,
            hash=self.hash,
        )
