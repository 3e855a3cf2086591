"""Reading the OpenTelemetry Collector's file exporter output (OTLP JSON, one
ExportLogsServiceRequest per line) into flat records: resource attributes, record attributes
and body as plain Python values. Standard library only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Record:
    """One log record with its resource's attributes."""

    resource: dict[str, Any]
    attributes: dict[str, Any]
    body: Any
    time_unix_nano: int
    observed_time_unix_nano: int
    severity_text: str
    severity_number: int


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP AnyValue as a Python value (intValue is a string in OTLP JSON; an empty
    AnyValue is None)."""
    if not value:
        return None
    if len(value) != 1:
        raise ValueError(f"an AnyValue holds one field: {value}")
    ((kind, inner),) = value.items()
    if kind in {"stringValue", "boolValue", "doubleValue"}:
        return inner
    if kind == "intValue":
        return int(inner)
    if kind == "bytesValue":
        return str(inner)  # base64 text, as written
    if kind == "arrayValue":
        return [any_value(item) for item in inner.get("values", [])]
    if kind == "kvlistValue":
        return key_values(inner.get("values", []))
    raise ValueError(f"unknown AnyValue field {kind!r}")


def key_values(items: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP KeyValue list -> dict; a repeated key is an error (OTLP forbids it)."""
    out: dict[str, Any] = {}
    for item in items:
        key = item["key"]
        if key in out:
            raise ValueError(f"repeated attribute {key!r}")
        out[key] = any_value(item.get("value", {}))
    return out


def records(text: str) -> list[Record]:
    """Every log record of the complete lines of `text` (a line still being written, without
    its newline, is left for the next read)."""
    found: list[Record] = []
    complete = text[: text.rfind("\n") + 1]
    for line in complete.splitlines():
        if not line.strip():
            continue
        for resource_logs in json.loads(line).get("resourceLogs", []):
            resource = key_values(resource_logs.get("resource", {}).get("attributes", []))
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    found.append(
                        Record(
                            resource=resource,
                            attributes=key_values(record.get("attributes", [])),
                            body=any_value(record.get("body", {})),
                            time_unix_nano=int(record.get("timeUnixNano", 0)),
                            observed_time_unix_nano=int(record.get("observedTimeUnixNano", 0)),
                            severity_text=str(record.get("severityText", "")),
                            severity_number=int(record.get("severityNumber", 0)),
                        )
                    )
    return found


def rfc3339_unix_nano(stamp: str) -> int:
    """fimd's `time` (RFC 3339 UTC, up to microseconds, e.g. 2026-12-01T10:00:00.999999Z) in
    nanoseconds since the epoch, exactly (no float)."""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
