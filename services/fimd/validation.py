"""Validation of a CreateWatch request before fimd acts on it.

fimd is privileged, so every field a caller sends is checked here, and a request that fails
is rejected whole with a message naming the field (`spec.subjects[1].paths[0]: ...`). Each
subject is checked by the one subject validation of the contract
(`libs.fimnotify_api.subject.check_subject`, also used by the FimWatcher model and the
engines), so a subject fimd accepts is never refused by an engine. The rest (key, identity,
container ID, subject count, log format, and the volume fields: each subject's coalesce_ms
and the line_budget, by the FimWatcher model's own checks) is checked here. Every bound is
documented in the header of fim.proto (keep the two in step), so no request can make fimd
or an engine allocate without bound.
"""

from __future__ import annotations

from collections.abc import Callable

from fim.v1 import fim_pb2
from libs.fimnotify_api.subject import SubjectConfig, SubjectError, check_attributes
from libs.k8s import model
from libs.k8s.errors import ModelError
from services.fimd import logformat

MAX_SUBJECTS = model.MAX_SUBJECTS
MAX_LOG_FORMAT_CHARS = model.MAX_LOG_FORMAT_LENGTH
# Generous bounds on free-form strings (fimd's own; also in the proto header).
MAX_ID_BYTES = 253  # UIDs, Kubernetes names (DNS-1123 subdomain length)
MAX_CONTAINER_ID_BYTES = 256
MAX_SCAN_REQUEST_BYTES = 64
#: The message becomes a gRPC status message: it travels percent-encoded (non-ASCII bytes
#: take 3) in the HTTP/2 trailers, and a client that receives more than its metadata limit
#: (8 KiB by default) reports RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT. Reasons echo
#: values of the request (an unknown event name, a config hash), so messages are cut here.
MAX_MESSAGE_BYTES = 2048


class ValidationError(ValueError):
    """The request is invalid; the message starts with the offending field (whole: the
    longest field name is about 1.3 KB) and is at most MAX_MESSAGE_BYTES of UTF-8."""

    def __init__(self, field: str, reason: str) -> None:
        message = f"{field}: {reason}"
        raw = message.encode("utf-8", "backslashreplace")
        if len(raw) > MAX_MESSAGE_BYTES:
            message = raw[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "..."
        super().__init__(message)
        self.field = field


def _check_size(field: str, value: str, limit: int, *, required: bool = True) -> None:
    if required and not value:
        raise ValidationError(field, "is required")
    size = len(value.encode())
    if size > limit:
        raise ValidationError(field, f"is {size} bytes, at most {limit} allowed")
    if "\x00" in value:
        raise ValidationError(field, "contains a NUL byte")


def validate_key(key: fim_pb2.WatchKey, field: str = "key") -> None:
    """Every part of the key is required: it is the watch's only identity."""
    _check_size(f"{field}.watcher_uid", key.watcher_uid, MAX_ID_BYTES)
    _check_size(f"{field}.pod_uid", key.pod_uid, MAX_ID_BYTES)
    _check_size(f"{field}.container_name", key.container_name, MAX_ID_BYTES)


def _validate_identity(identity: fim_pb2.Identity) -> None:
    for name in ("watcher_namespace", "watcher_name", "pod_namespace", "pod_name"):
        _check_size(f"spec.identity.{name}", getattr(identity, name), MAX_ID_BYTES)


def _model_check(field: str, check: Callable[[int], None], value: int) -> None:
    try:
        check(value)
    except ModelError as err:
        raise ValidationError(field, str(err)) from None


def _subject(index: int, subject: fim_pb2.Subject) -> SubjectConfig:
    """The subject as engines apply it; validated by the contract's check_subject (and
    its coalescing window, which only fimd applies, by the model's check)."""
    field = f"spec.subjects[{index}].coalesce_ms"
    _model_check(field, model.check_coalesce_ms, subject.coalesce_ms)
    try:
        check_attributes(
            attributes=subject.attributes, hash=subject.hash, coalescing=subject.coalesce_ms > 0
        )
        return SubjectConfig(
            paths=tuple(subject.paths),
            events=tuple(subject.events),
            ignore=tuple(subject.ignore),
            only_dir=subject.only_dir,
            recursive=subject.recursive,
            max_depth=subject.max_depth,
            follow_move=subject.follow_move,
            tags=dict(subject.tags),
            attributes=subject.attributes,
            hash=subject.hash,
        )
    except SubjectError as err:
        field = f"spec.subjects[{index}]" + (f".{err.field}" if err.field else "")
        raise ValidationError(field, err.reason) from None


def validate_spec(
    spec: fim_pb2.WatchSpec,
) -> tuple[logformat.Template | None, tuple[SubjectConfig, ...]]:
    """Checks the whole spec; returns its compiled log format (None = JSON lines) and its
    subjects."""
    validate_key(spec.key, "spec.key")
    _validate_identity(spec.identity)
    _check_size("spec.container_id", spec.container_id, MAX_CONTAINER_ID_BYTES)
    if not spec.subjects:
        raise ValidationError("spec.subjects", "at least one subject is required")
    if len(spec.subjects) > MAX_SUBJECTS:
        raise ValidationError(
            "spec.subjects", f"has {len(spec.subjects)} entries, at most {MAX_SUBJECTS} allowed"
        )
    subjects = tuple(_subject(i, s) for i, s in enumerate(spec.subjects))
    _model_check("spec.line_budget", model.check_line_budget, spec.line_budget)
    _model_check("spec.scan_interval_s", model.check_scan_interval_s, spec.scan_interval_s)
    _check_size("spec.scan_request", spec.scan_request, MAX_SCAN_REQUEST_BYTES, required=False)
    if len(spec.log_format) > MAX_LOG_FORMAT_CHARS:
        raise ValidationError(
            "spec.log_format",
            f"is {len(spec.log_format)} characters, at most {MAX_LOG_FORMAT_CHARS} allowed",
        )
    if not spec.log_format:
        return None, subjects
    try:
        return logformat.compile_template(spec.log_format), subjects
    except logformat.TemplateError as err:
        raise ValidationError("spec.log_format", str(err)) from None
