"""The sealed stream as fimd writes it: every written line verifies, drops and failed writes
leave no seq gap, heartbeats carry the counts, the key ring is reloaded on rotation."""

from __future__ import annotations

import errno
import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from libs.auditstream import keys
from libs.auditstream.collect import Record
from libs.auditstream.verify import BootReport, verify
from services.fimd.audit import AuditStream, KeyFile
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.tests.test_output import (
    Capture,
    Drops,
    ScriptedWrite,
    drained,
    full_pipe,
    wait_for,
)

DAY = timedelta(days=1)


def ring_file(tmp_path: Path, ring: keys.KeyRing) -> Path:
    """Writes the ring as the kubelet updates a Secret volume: a new file swapped in."""
    path = tmp_path / "keys.json"
    fresh = tmp_path / "keys.json.new"
    fresh.write_bytes(ring.dumps())
    os.replace(fresh, path)
    return path


def new_ring() -> keys.KeyRing:
    return keys.new_ring(datetime(2026, 12, 1, tzinfo=UTC))


def writer_for(
    fd: int, key: Path | None, interval: float = 3600.0, **kwargs: object
) -> tuple[LineWriter, AuditStream]:
    key_file = KeyFile(str(key), "n1") if key else None
    audit = AuditStream("n1", key_file, interval=interval)
    return LineWriter(fd, "n1", audit=audit, **kwargs), audit  # type: ignore[arg-type]


def check(lines: list[str], ring: keys.KeyRing) -> list[BootReport]:
    records = [Record(line.encode(), f"out:{i + 1}", True) for i, line in enumerate(lines)]
    return verify(records, ring)


def event(i: int) -> str:
    return f'{{"kind":"event","node":"n1","path":"/f{i}"}}\n'


def write_until(writer: LineWriter, capture: Capture, text: str) -> None:
    """Writes one event line at a time (each waited for) until `text` shows in the output:
    the key file is looked at only while writing, at most once a second."""
    numbers = itertools.count(2)

    def step() -> bool:
        n = next(numbers)
        writer.put_events([event(n)])
        wait_for(lambda: any(f'"path":"/f{n}"' in line for line in capture.lines))
        return any(text in line for line in capture.lines)

    wait_for(step, timeout=10)


def test_every_written_line_is_sealed_and_verifies(tmp_path: Path) -> None:
    ring = new_ring()
    capture = Capture()
    writer, _ = writer_for(capture.write_fd, ring_file(tmp_path, ring))
    for i in range(500):
        assert writer.put_events([event(i), event(i)])
        if i % 100 == 0:
            writer.op("hello", "info", i=i)
    writer.close()
    capture.close()
    parsed = capture.json()
    assert [p["seq"] for p in parsed] == list(range(1, len(parsed) + 1))
    assert {p["kid"] for p in parsed} == {"n1/1"}
    assert parsed[0]["msg"] == "heartbeat"  # the boot opens with a heartbeat
    assert sum(1 for p in parsed if p.get("kind") == "event") == 1000
    [report] = check(capture.lines, ring)
    assert report.ok, report
    assert report.verified == len(parsed)


def test_dropped_lines_leave_no_gap_and_are_reported_sealed(tmp_path: Path) -> None:
    ring = new_ring()
    read_fd, write_fd = full_pipe()
    drops = Drops()
    writer, _ = writer_for(write_fd, ring_file(tmp_path, ring), max_event_bytes=4096, on_drop=drops)
    # The pipe is full: the writer is stuck on the first heartbeat, the buffer fills up.
    accepted = [writer.put_events([event(i)]) for i in range(200)]
    assert not all(accepted)
    with drained(read_fd) as capture_lines:
        writer.close()
        os.close(write_fd)
    parsed = [json.loads(line) for line in capture_lines]
    # The writer may wake up while the last lines are still being refused: the drops then
    # span two reports, which together count every one.
    # (The hook also counts operational lines: one can be refused while the writer closes,
    # after its last report.)
    reports = [p for p in parsed if p.get("msg") == "output_dropped"]
    event_drops = drops.counts["event", "buffer"] + drops.counts["event", "write"]
    assert sum(r["events"] for r in reports) == accepted.count(False) == event_drops
    assert sum(r["ops"] for r in reports) <= drops.total() - event_drops
    [verified] = check(capture_lines, ring)
    assert verified.ok, verified
    assert verified.verified == len(parsed)


def test_a_failed_write_takes_the_chain_back_to_the_last_whole_line(tmp_path: Path) -> None:
    ring = new_ring()
    capture = Capture()
    write = ScriptedWrite()
    writer, _ = writer_for(capture.write_fd, ring_file(tmp_path, ring), write=write)
    wait_for(lambda: capture.lines)  # the first heartbeat
    # One whole sealed line and half of the next, then EIO.
    sealed_len = len(event(0)) + 110
    write.script = [sealed_len + 20, OSError(errno.EIO, "I/O error")]
    assert writer.put_events([event(0), event(1), event(2)])
    wait_for(lambda: len(capture.lines) >= 2)
    assert writer.put_events([event(3)])
    writer.close()
    capture.close()
    whole = [line for line in capture.lines if line.endswith("}")]
    fragment = [line for line in capture.lines if not line.endswith("}")]
    assert len(fragment) == 1  # the half line, on a line of its own
    seqs = [json.loads(line)["seq"] for line in whole]
    assert seqs == list(range(1, len(seqs) + 1))
    reports = check(capture.lines, ring)
    sealed = [r for r in reports if r.boot]
    assert len(sealed) == 1
    assert sealed[0].ok, sealed[0]
    # The fragment is not a line fimd vouches for: the verifier shows it as unsealed.
    assert [r.findings["unsealed"].count for r in reports if not r.boot] == [1]


def test_heartbeats_carry_the_counts_since_the_previous_one(tmp_path: Path) -> None:
    ring = new_ring()
    capture = Capture()
    metrics = Metrics()
    key_file = KeyFile(str(ring_file(tmp_path, ring)), "n1")
    audit = AuditStream(
        "n1",
        key_file,
        interval=0.3,
        on_heartbeat=lambda when, sealed: metrics.audit_heartbeat.set(when),
    )
    writer = LineWriter(capture.write_fd, "n1", audit=audit)
    wait_for(lambda: any('"heartbeat"' in line for line in capture.lines))
    for i in range(7):
        writer.put_events([event(i)])
    writer.op("x")

    def counted() -> int:
        return sum(p["events"] for p in capture.json() if p.get("msg") == "heartbeat")

    wait_for(lambda: counted() == 7)
    writer.close()
    capture.close()
    parsed = capture.json()
    beats = [p for p in parsed if p.get("msg") == "heartbeat"]
    assert beats[0]["lines"] == 0
    last = max(i for i, p in enumerate(parsed) if p.get("msg") == "heartbeat")
    before_last = [p for p in parsed[:last] if p.get("msg") != "heartbeat"]
    assert sum(b["lines"] for b in beats) == len(before_last)
    assert sum(b["ops"] for b in beats) == len(before_last) - 7
    assert all(b["sealed"] and b["interval"] == 0.3 and b["dropped"] == 0 for b in beats)
    value = metrics.registry.get_sample_value("fimd_audit_heartbeat_timestamp_seconds")
    assert value is not None
    assert value > 0
    [report] = check(capture.lines, ring)
    assert report.ok, report
    assert report.heartbeats == len(beats)


def test_a_rotated_ring_is_used_from_the_next_line_and_both_verify(tmp_path: Path) -> None:
    ring = new_ring()
    capture = Capture()
    path = ring_file(tmp_path, ring)
    writer, _ = writer_for(capture.write_fd, path)
    writer.put_events([event(1)])
    wait_for(lambda: any('"path":"/f1"' in line for line in capture.lines))
    rotated = keys.rotate(ring, ring.generations[1].created + 30 * DAY, every=30 * DAY)
    ring_file(tmp_path, rotated)
    # The file is looked at once a second, on a write: keep writing until the new key shows.
    write_until(writer, capture, '"kid":"n1/2"')
    writer.put_events([event(9999)])
    writer.close()
    capture.close()
    parsed = capture.json()
    rotated_line = [p for p in parsed if p.get("msg") == "audit_key_rotated"]
    assert [(p["kid"], p["previous"]) for p in rotated_line] == [("n1/2", "n1/1")]
    assert {p["kid"] for p in parsed} == {"n1/1", "n1/2"}
    [report] = check(capture.lines, rotated)
    assert report.ok, report
    assert report.kids == {"n1/1", "n1/2"}


def test_without_a_usable_key_lines_are_unsealed_and_it_is_said(tmp_path: Path) -> None:
    capture = Capture()
    metrics = Metrics()
    path = tmp_path / "keys.json"
    path.write_text("{}")
    key_file = KeyFile(str(path), "n1", on_error=metrics.audit_key_errors.inc)
    audit = AuditStream("n1", key_file, interval=3600)
    writer = LineWriter(capture.write_fd, "n1", audit=audit)
    writer.put_events([event(1)])
    wait_for(lambda: any("audit_key_unavailable" in line for line in capture.lines))
    ring = new_ring()
    ring_file(tmp_path, ring)
    write_until(writer, capture, '"seq":')
    writer.close()
    capture.close()
    parsed = capture.json()
    [unavailable] = [p for p in parsed if p.get("msg") == "audit_key_unavailable"]
    assert unavailable["level"] == "error"
    assert "lines are unsealed" in unavailable["detail"]
    assert not parsed[0]["sealed"]  # the first heartbeat
    assert [p["kid"] for p in parsed if p.get("msg") == "audit_key_loaded"] == ["n1/1"]
    assert metrics.registry.get_sample_value("fimd_audit_key_errors_total") == 1
    reports = check(capture.lines, ring)
    assert [r.ok for r in reports] == [False, True]  # the unsealed lines, then the sealed ones
    assert reports[0].findings["unsealed"].count == sum(1 for p in parsed if "seq" not in p)
