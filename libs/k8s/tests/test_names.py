"""Kubernetes name syntax, with the edge cases of k8s.io/apimachinery validation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from libs.k8s.errors import ModelError
from libs.k8s.names import (
    check_dns1123_label,
    check_dns1123_subdomain,
    check_label_value,
    check_qualified_name,
)

VALID = [
    (check_dns1123_label, "shop"),
    (check_dns1123_label, "a"),
    (check_dns1123_label, "0-a-9"),
    (check_dns1123_label, "a" * 63),
    (check_dns1123_subdomain, "myapp-logs"),
    (check_dns1123_subdomain, "a.b-c.d"),
    (check_dns1123_subdomain, ".".join(["a" * 63] * 3) + "." + "a" * 61),
    (check_qualified_name, "app"),
    (check_qualified_name, "App_1.x-Y"),
    (check_qualified_name, "app.kubernetes.io/name"),
    (check_qualified_name, "example.com/" + "a" * 63),
    (check_qualified_name, "a" * 253 + "/n"),
    (check_label_value, ""),
    (check_label_value, "v1.2_3-Z"),
    (check_label_value, "a" * 63),
]

INVALID = [
    (check_dns1123_label, "", "not a valid DNS-1123 label"),
    (check_dns1123_label, "Shop", "not a valid DNS-1123 label"),
    (check_dns1123_label, "-shop", "not a valid DNS-1123 label"),
    (check_dns1123_label, "shop-", "not a valid DNS-1123 label"),
    (check_dns1123_label, "a.b", "not a valid DNS-1123 label"),
    (check_dns1123_label, "shop\n", "not a valid DNS-1123 label"),
    (check_dns1123_label, "a" * 64, "no more than 63 characters"),
    (check_dns1123_subdomain, "", "not a valid DNS-1123 subdomain"),
    (check_dns1123_subdomain, "a..b", "not a valid DNS-1123 subdomain"),
    (check_dns1123_subdomain, "a_b", "not a valid DNS-1123 subdomain"),
    (check_dns1123_subdomain, ".a", "not a valid DNS-1123 subdomain"),
    (check_dns1123_subdomain, "a" * 254, "no more than 253 characters"),
    (check_qualified_name, "", "empty name part"),
    (check_qualified_name, "example.com/", "empty name part"),
    (check_qualified_name, "/app", "empty prefix"),
    (check_qualified_name, "a/b/c", "more than one '/'"),
    (check_qualified_name, "Example.com/app", "not a valid DNS-1123 subdomain"),
    (check_qualified_name, "a" * 254 + "/n", "no more than 253 characters"),
    (check_qualified_name, "-app", "not a valid qualified name"),
    (check_qualified_name, "app_", "not a valid qualified name"),
    (check_qualified_name, "app name", "not a valid qualified name"),
    (check_qualified_name, "app\n", "not a valid qualified name"),
    (check_qualified_name, "a" * 64, "no more than 63 characters"),
    (check_label_value, "-v", "not a valid label value"),
    (check_label_value, "v.", "not a valid label value"),
    (check_label_value, "a b", "not a valid label value"),
    (check_label_value, "a/b", "not a valid label value"),
    (check_label_value, "é", "not a valid label value"),
    (check_label_value, "a" * 64, "no more than 63 characters"),
]


@pytest.mark.parametrize(("check", "value"), VALID)
def test_accepts(check: Callable[[str], None], value: str) -> None:
    check(value)


@pytest.mark.parametrize(("check", "value", "message"), INVALID)
def test_rejects(check: Callable[[str], None], value: str, message: str) -> None:
    with pytest.raises(ModelError, match=message) as caught:
        check(value)
    assert caught.value.path == ""
