"""Kubernetes name syntax (k8s.io/apimachinery/pkg/util/validation), re-checked locally.

The API server enforces these rules only for what it stores as names and labels; selector
values, tags and condition types also come from users and from our own code, and a value
Kubernetes itself would reject must never reach a label selector or a log line. Every check
raises ModelError with an empty path: callers add the field path with `errors.within`.
Patterns are matched with `fullmatch`, so a trailing newline is not accepted.
"""

from __future__ import annotations

import re

from libs.k8s.errors import ModelError

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
QUALIFIED_NAME_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL)
_DNS1123_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _check(value: str, pattern: re.Pattern[str], max_length: int, what: str) -> None:
    if len(value) > max_length:
        raise ModelError(f"must be no more than {max_length} characters ({what})")
    if not pattern.fullmatch(value):
        raise ModelError(f"{value!r} is not a valid {what}")


def check_dns1123_label(value: str) -> None:
    """A namespace name: lowercase alphanumerics and '-', at most 63 characters."""
    _check(value, _DNS1123_LABEL_RE, DNS1123_LABEL_MAX_LENGTH, "DNS-1123 label")


def check_dns1123_subdomain(value: str) -> None:
    """An object name or label-key prefix: dot-separated DNS labels, at most 253 characters."""
    _check(value, _DNS1123_SUBDOMAIN_RE, DNS1123_SUBDOMAIN_MAX_LENGTH, "DNS-1123 subdomain")


def check_qualified_name(value: str) -> None:
    """A label key: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            raise ModelError(f"{value!r} has an empty prefix before '/'")
        if "/" in prefix:
            raise ModelError(f"{value!r} has more than one '/'")
        check_dns1123_subdomain(prefix)
    if not name:
        raise ModelError(f"{value!r} has an empty name part")
    _check(name, _QUALIFIED_NAME_RE, QUALIFIED_NAME_MAX_LENGTH, "qualified name")


def check_label_value(value: str) -> None:
    """A label value: empty, or a qualified-name-like string of at most 63 characters."""
    if value:
        _check(value, _QUALIFIED_NAME_RE, LABEL_VALUE_MAX_LENGTH, "label value")
