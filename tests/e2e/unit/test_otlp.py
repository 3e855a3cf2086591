"""tests.e2e.otlp on hand-written OTLP JSON: every AnyValue kind, resource and record fields,
a line still being written, and what OTLP forbids."""

from __future__ import annotations

import json

import pytest

from tests.e2e.otlp import any_value, records, rfc3339_unix_nano


def _line(*logs: dict[str, object]) -> str:
    resource = {"attributes": [{"key": "k8s.pod.name", "value": {"stringValue": "fimd-1"}}]}
    request = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": list(logs)}]}]}
    return json.dumps(request) + "\n"


def test_any_value_kinds() -> None:
    assert any_value({"stringValue": "a"}) == "a"
    assert any_value({"boolValue": False}) is False
    assert any_value({"intValue": "3412"}) == 3412
    assert any_value({"doubleValue": 0.5}) == 0.5
    assert any_value({"bytesValue": "L3Nydi//"}) == "L3Nydi//"
    assert any_value({}) is None
    assert any_value({"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "x"}]}}) == [
        1,
        "x",
    ]
    nested = {"kvlistValue": {"values": [{"key": "team", "value": {"stringValue": "pay"}}]}}
    assert any_value(nested) == {"team": "pay"}
    assert any_value({"kvlistValue": {}}) == {}
    with pytest.raises(ValueError, match="unknown"):
        any_value({"fooValue": 1})
    with pytest.raises(ValueError, match="one field"):
        any_value({"stringValue": "a", "intValue": "1"})


def test_records_flatten_resource_and_record() -> None:
    record = {
        "timeUnixNano": "1796119200999999000",
        "observedTimeUnixNano": "1796119201000000000",
        "severityText": "info",
        "severityNumber": 9,
        "body": {"stringValue": "line"},
        "attributes": [{"key": "event", "value": {"stringValue": "CREATE"}}],
    }
    text = _line(record) + _line({"body": {"stringValue": "second"}})
    first, second = records(text)
    assert first.resource == {"k8s.pod.name": "fimd-1"}
    assert first.attributes == {"event": "CREATE"}
    assert first.body == "line"
    assert first.time_unix_nano == 1796119200999999000
    assert first.observed_time_unix_nano == 1796119201000000000
    assert (first.severity_text, first.severity_number) == ("info", 9)
    assert second.body == "second"
    assert (second.attributes, second.time_unix_nano, second.severity_number) == ({}, 0, 0)


def test_a_line_without_its_newline_is_left_for_later() -> None:
    complete = _line({"body": {"stringValue": "done"}})
    partial = _line({"body": {"stringValue": "half"}})[:-10]
    assert [r.body for r in records(complete + partial)] == ["done"]
    assert records(partial) == []


def test_a_repeated_attribute_is_an_error() -> None:
    twice = [{"key": "a", "value": {"stringValue": "1"}}] * 2
    with pytest.raises(ValueError, match="repeated"):
        records(_line({"attributes": twice}))


def test_rfc3339_is_exact_to_the_microsecond() -> None:
    assert rfc3339_unix_nano("1970-01-01T00:00:00Z") == 0
    assert rfc3339_unix_nano("2026-12-01T10:00:00.999999Z") == 1_796_119_200_999_999_000
    assert rfc3339_unix_nano("2026-12-01T10:00:02.5Z") == 1_796_119_202_500_000_000
