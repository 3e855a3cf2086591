"""Validation of a CreateWatch request before fimd acts on it.

fimd is privileged, so every field a caller sends is checked here, and a request that fails
is rejected whole with a message naming the field (`spec.subjects[1].paths[0]: ...`). Every
bound below is documented in the header of fim.proto (keep the two in step): the FimWatcher
model's limits plus sizes of identifiers, tags and ignore patterns, so no request can make
fimd or a fimnotify process allocate without bound.
"""

from __future__ import annotations

from fim.v1 import fim_pb2
from libs.k8s import model
from libs.fimnotify_api.events import ALL_NAMES
from services.fimd import logformat

# The FimWatcher model's bounds (the CRD), as counts and characters.
MAX_SUBJECTS = model.MAX_SUBJECTS
MAX_PATHS = model.MAX_PATHS_PER_SUBJECT
MAX_IGNORE = model.MAX_IGNORE_PATTERNS
MAX_TAGS = model.MAX_TAGS
MAX_LOG_FORMAT_CHARS = model.MAX_LOG_FORMAT_LENGTH
MAX_DEPTH = model.MAX_DEPTH
MAX_PATH_BYTES = 4096  # PATH_MAX
# Generous bounds on free-form strings (fimd's own; also in the proto header).
MAX_ID_BYTES = 253  # UIDs, Kubernetes names (DNS-1123 subdomain length)
MAX_CONTAINER_ID_BYTES = 256
MAX_TAG_KEY_BYTES = 317  # a qualified label key: 253-byte prefix + "/" + 63-byte name
MAX_TAG_VALUE_BYTES = 1024
MAX_IGNORE_BYTES = 255  # NAME_MAX: a pattern matches one path component


class ValidationError(ValueError):
    """The request is invalid; the message starts with the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def _check_size(field: str, value: str, limit: int, *, required: bool = True) -> None:
    if required and not value:
        raise ValidationError(field, "is required")
    size = len(value.encode())
    if size > limit:
        raise ValidationError(field, f"is {size} bytes, at most {limit} allowed")
    if "\x00" in value:
        raise ValidationError(field, "contains a NUL byte")


def _check_count(field: str, count: int, limit: int) -> None:
    if count > limit:
        raise ValidationError(field, f"has {count} entries, at most {limit} allowed")


def validate_key(key: fim_pb2.WatchKey, field: str = "key") -> None:
    """Every part of the key is required: it is the watch's only identity."""
    _check_size(f"{field}.watcher_uid", key.watcher_uid, MAX_ID_BYTES)
    _check_size(f"{field}.pod_uid", key.pod_uid, MAX_ID_BYTES)
    _check_size(f"{field}.container_name", key.container_name, MAX_ID_BYTES)


def _validate_identity(identity: fim_pb2.Identity) -> None:
    for name in ("watcher_namespace", "watcher_name", "pod_namespace", "pod_name"):
        _check_size(f"spec.identity.{name}", getattr(identity, name), MAX_ID_BYTES)


def _validate_path(field: str, path: str) -> None:
    _check_size(field, path, MAX_PATH_BYTES)
    if not path.startswith("/"):
        raise ValidationError(field, f"{path!r} is not an absolute path")
    if ".." in path.split("/"):
        # fimnotify never leaves the container root anyway; refusing '..' keeps paths
        # in log lines and configs unambiguous.
        raise ValidationError(field, f"{path!r} contains a '..' component")


def _validate_subject(field: str, subject: fim_pb2.Subject) -> None:
    if not subject.paths:
        raise ValidationError(f"{field}.paths", "at least one path is required")
    _check_count(f"{field}.paths", len(subject.paths), MAX_PATHS)
    for i, path in enumerate(subject.paths):
        _validate_path(f"{field}.paths[{i}]", path)
    if not subject.events:
        raise ValidationError(f"{field}.events", "at least one event name is required")
    _check_count(f"{field}.events", len(subject.events), len(ALL_NAMES))
    for i, name in enumerate(subject.events):
        if name not in ALL_NAMES:
            raise ValidationError(
                f"{field}.events[{i}]",
                f"unknown event name {name!r}; expected one of: {', '.join(ALL_NAMES)}",
            )
    _check_count(f"{field}.ignore", len(subject.ignore), MAX_IGNORE)
    for i, pattern in enumerate(subject.ignore):
        _check_size(f"{field}.ignore[{i}]", pattern, MAX_IGNORE_BYTES)
        if "/" in pattern:
            raise ValidationError(f"{field}.ignore[{i}]", "a pattern matches one path component")
    if subject.max_depth > MAX_DEPTH:
        raise ValidationError(f"{field}.max_depth", f"must be at most {MAX_DEPTH}")
    _check_count(f"{field}.tags", len(subject.tags), MAX_TAGS)
    for key, value in subject.tags.items():
        _check_size(f"{field}.tags key", key, MAX_TAG_KEY_BYTES)
        _check_size(f"{field}.tags[{key!r}]", value, MAX_TAG_VALUE_BYTES, required=False)


def validate_spec(spec: fim_pb2.WatchSpec) -> logformat.Template | None:
    """Checks the whole spec; returns its compiled log format (None = JSON lines)."""
    validate_key(spec.key, "spec.key")
    _validate_identity(spec.identity)
    _check_size("spec.container_id", spec.container_id, MAX_CONTAINER_ID_BYTES)
    if not spec.subjects:
        raise ValidationError("spec.subjects", "at least one subject is required")
    _check_count("spec.subjects", len(spec.subjects), MAX_SUBJECTS)
    for i, subject in enumerate(spec.subjects):
        _validate_subject(f"spec.subjects[{i}]", subject)
    if len(spec.log_format) > MAX_LOG_FORMAT_CHARS:
        raise ValidationError(
            "spec.log_format",
            f"is {len(spec.log_format)} characters, at most {MAX_LOG_FORMAT_CHARS} allowed",
        )
    if not spec.log_format:
        return None
    try:
        return logformat.compile_template(spec.log_format)
    except logformat.TemplateError as err:
        raise ValidationError("spec.log_format", str(err)) from None
