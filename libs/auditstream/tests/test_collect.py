"""Reading lines back from kubectl logs, Loki and Elastic exports."""

from __future__ import annotations

import json

import pytest

from libs.auditstream.collect import InputError, records
from libs.auditstream.tests.streams import boot_lines, ring

RING = ring()
LINES = [*boot_lines("n1", 5, RING), b"2026-12-01T10:00:00.000001Z MODIFY /x fim-seal ..."]


def test_plain_kubectl_logs() -> None:
    got = records(b"\n".join(LINES) + b"\n", "f")
    assert [r.line for r in got] == LINES
    assert all(r.ordered for r in got)
    assert got[2].source == "f:3"


def test_timestamps_and_prefix_are_removed_only_when_every_line_has_them() -> None:
    stamped = [b"2026-12-01T10:00:00.123456789Z " + line for line in LINES]
    assert [r.line for r in records(b"\n".join(stamped), "f")] == LINES
    both = [b"[pod/fimd-abc/fimd] " + line for line in stamped]
    assert [r.line for r in records(b"\n".join(both), "f")] == LINES
    # Only the logFormat line starts with a time: it is the line itself, not a prefix.
    assert [r.line for r in records(b"\n".join(LINES), "f")][-1] == LINES[-1]


def test_loki_jsonl_and_query_range_response() -> None:
    jsonl = [json.dumps({"labels": {}, "line": line.decode(), "timestamp": "t"}) for line in LINES]
    got = records("\n".join(jsonl).encode(), "loki")
    assert [r.line for r in got] == LINES
    assert not any(r.ordered for r in got)
    values = [[str(1000 + i), line.decode()] for i, line in enumerate(LINES)]
    response = {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"job": "fim-k8s"}, "values": list(reversed(values))}]}}  # fmt: skip
    assert [r.line for r in records(json.dumps(response, indent=1).encode(), "q")] == LINES


def test_elastic_search_response_and_ndjson() -> None:
    hits = [{"_source": {"message": line.decode(), "fim": {}}} for line in LINES]
    doc = {"hits": {"total": {"value": len(hits)}, "hits": hits}}
    assert [r.line for r in records(json.dumps(doc).encode(), "es")] == LINES
    ndjson = [
        json.dumps({"@timestamp": "t", "event": {"original": line.decode()}, "message": "x"})
        for line in LINES
    ]
    assert [r.line for r in records("\n".join(ndjson).encode(), "es")] == LINES
    with pytest.raises(InputError, match="hit 1"):
        records(json.dumps({"hits": {"hits": [{"_source": {}}]}}).encode(), "es")


def test_forced_kubectl_format_keeps_json_lines_as_they_are() -> None:
    loki_like = json.dumps({"line": "x"}).encode()
    assert [r.line for r in records(loki_like, "f", "kubectl")] == [loki_like]
    with pytest.raises(InputError, match="unknown input format"):
        records(b"", "f", "syslog")
