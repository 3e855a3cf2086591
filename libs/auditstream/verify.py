"""Verifies collected lines against the key ring: per node and fimd boot, what is intact.

Lines are grouped by the node of their key id and their boot, then put in `seq` order and
the MAC chain is recomputed. Findings (each fails verification):

- `gap`: seqs missing between two lines of a boot (deleted lines, or lines lost between fimd
  and the store);
- `altered`: a line whose MAC does not match (its bytes, or its predecessor's MAC, changed);
- `inserted`: a second, different line with the seq of a line that verifies;
- `reordered`: a line that comes after a line with a higher seq, in an input whose order is
  fimd's write order (kubectl logs); not judged for Loki and Elastic exports;
- `unsealed`: a line without a seal (not written by a sealing fimd, or forged);
- `unknown_key`: a key id whose generation is not in the ring;
- `missing_heartbeats`: heartbeats more than 1.5 intervals apart, or lines written more than
  1.5 intervals after the boot's last heartbeat;
- `heartbeat_mismatch`: a heartbeat whose `lines` differs from the lines since the previous one.

Not failures, reported: `duplicates` (the same line twice: a collector that re-read a file),
and `first_seq` > 1 (the input starts within a boot, e.g. after the kubelet rotated the log:
that first line anchors the chain and is `unanchored`: its own MAC cannot be checked).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from libs.auditstream import seal as sealing
from libs.auditstream.collect import Record
from libs.auditstream.keys import KeyRing, KeyRingError, parse_kid

HEARTBEAT = "heartbeat"
DEFAULT_INTERVAL = 60.0
FAILURES = (
    "gap",
    "altered",
    "inserted",
    "reordered",
    "unsealed",
    "unknown_key",
    "missing_heartbeats",
    "heartbeat_mismatch",
)


@dataclass
class Finding:
    count: int = 0
    first: str = ""  # where it first happened (seq and input position)


@dataclass
class BootReport:
    node: str
    boot: str  # "" for a node's unsealed lines
    verified: int = 0
    first_seq: int = 0
    last_seq: int = 0
    heartbeats: int = 0
    duplicates: int = 0
    unanchored: int = 0
    kids: set[str] = field(default_factory=set)
    findings: dict[str, Finding] = field(default_factory=dict)

    def add(self, kind: str, where: str, count: int = 1) -> None:
        finding = self.findings.setdefault(kind, Finding())
        if not finding.count:
            finding.first = where
        finding.count += count

    @property
    def ok(self) -> bool:
        return not any(self.findings.get(kind, Finding()).count for kind in FAILURES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "boot": self.boot,
            "ok": self.ok,
            "verified": self.verified,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "heartbeats": self.heartbeats,
            "duplicates": self.duplicates,
            "unanchored": self.unanchored,
            "kids": sorted(self.kids),
            "findings": {k: {"count": f.count, "first": f.first} for k, f in self.findings.items()},
        }


@dataclass(frozen=True)
class _Line:
    seal: sealing.Seal
    record: Record
    raw: bytes


def _node_of(line: bytes) -> str:
    try:
        doc = json.loads(line)
    except ValueError:
        return ""
    node = doc.get("node") if isinstance(doc, dict) else None
    return node if isinstance(node, str) else ""


def _time(body: dict[str, Any]) -> float | None:
    text = body.get("time")
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    except ValueError:
        return None


def _json_body(body: bytes) -> dict[str, Any] | None:
    if not body.startswith(b"{"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class _Boot:
    """The lines of one (node, boot), checked once all are in."""

    def __init__(self, report: BootReport, ring: KeyRing, judge_order: bool) -> None:
        self.report = report
        self._ring = ring
        self._judge_order = judge_order
        self._lines: list[_Line] = []

    def add(self, line: _Line) -> None:
        self._lines.append(line)

    def check(self) -> BootReport:
        self._order()
        by_seq: dict[int, list[_Line]] = defaultdict(list)
        for line in self._lines:
            variants = by_seq[line.seal.seq]
            if any(v.raw == line.raw for v in variants):
                self.report.duplicates += 1
            else:
                variants.append(line)
        self._chain(by_seq)
        return self.report

    def _order(self) -> None:
        if not self._judge_order:
            return
        highest: _Line | None = None
        seen: set[bytes] = set()
        for line in self._lines:
            if not line.record.ordered or line.raw in seen:
                continue  # a duplicate: where a collector re-read it says nothing
            seen.add(line.raw)
            if highest is not None and line.seal.seq < highest.seal.seq:
                where = (
                    f"seq {line.seal.seq} ({line.record.source}) after seq "
                    f"{highest.seal.seq} ({highest.record.source})"
                )
                self.report.add("reordered", where)
            elif highest is None or line.seal.seq > highest.seal.seq:
                highest = line

    def _chain(self, by_seq: dict[int, list[_Line]]) -> None:
        report = self.report
        seqs = sorted(by_seq)
        report.first_seq, report.last_seq = seqs[0], seqs[-1]
        previous_seq, previous_mac = 0, sealing.GENESIS
        beats = _Heartbeats(report)
        for seq in seqs:
            variants = by_seq[seq]
            where = f"seq {seq} ({variants[0].record.source})"
            if seq != previous_seq + 1 and previous_seq:
                report.add("gap", f"after seq {previous_seq}: {seq - previous_seq - 1} missing",
                           seq - previous_seq - 1)  # fmt: skip
            anchored = seq == previous_seq + 1
            chosen = self._judge(variants, previous_mac if anchored else None, where)
            if chosen is None:
                return
            previous_seq, previous_mac = seq, chosen.seal.mac
            beats.line(chosen)
        beats.finish()

    def _judge(self, variants: list[_Line], previous: bytes | None, where: str) -> _Line | None:
        """The variant that continues the chain; counts the others."""
        report = self.report
        good: list[_Line] = []
        unknown = 0
        for line in variants:
            report.kids.add(line.seal.kid)
            try:
                key = self._ring.key_for(line.seal.kid)
            except KeyRingError:
                report.add("unknown_key", f"{where}: key {line.seal.kid}")
                unknown += 1
                continue
            if previous is None:
                good.append(line)  # the chain's first line here: its MAC cannot be checked
            elif sealing.mac_of(key.key, previous, line.seal.covered) == line.seal.mac:
                good.append(line)
        if previous is None:
            report.unanchored += 1
            if len(variants) > 1:
                report.add(
                    "inserted", f"{where}: {len(variants)} different lines", len(variants) - 1
                )
            return good[0] if good else variants[0]
        if good:
            report.verified += 1
            if len(variants) > len(good):
                report.add("inserted", where, len(variants) - len(good))
            return good[0]
        if len(variants) > unknown:
            report.add("altered", where, len(variants) - unknown)
        return variants[0]  # continue the chain with its claimed MAC


class _Heartbeats:
    """Heartbeat spacing and counts along one boot, in seq order."""

    def __init__(self, report: BootReport) -> None:
        self._report = report
        self._last: tuple[int, float, float] | None = None  # seq, time, interval
        self._latest_time: float | None = None

    def line(self, line: _Line) -> None:
        body = _json_body(line.seal.body)
        if body is None:
            return
        when = _time(body)
        if body.get("kind") == "op" and body.get("msg") == HEARTBEAT and when is not None:
            self._heartbeat(line, body, when)
        elif when is not None and (self._latest_time is None or when > self._latest_time):
            self._latest_time = when

    def _heartbeat(self, line: _Line, body: dict[str, Any], when: float) -> None:
        report = self._report
        report.heartbeats += 1
        interval = body.get("interval")
        interval = (
            float(interval)
            if isinstance(interval, int | float) and interval > 0
            else (DEFAULT_INTERVAL)
        )
        seq = line.seal.seq
        if self._last is not None:
            last_seq, last_time, _ = self._last
            lines = body.get("lines")
            if isinstance(lines, int) and lines != seq - last_seq - 1:
                report.add(
                    "heartbeat_mismatch", f"seq {seq}: lines {lines}, {seq - last_seq - 1} seen"
                )
            self._missing(last_time, when, interval, f"between seq {last_seq} and {seq}")
        self._last = (seq, when, interval)
        self._latest_time = None

    def _missing(self, start: float, end: float, interval: float, where: str) -> None:
        if end - start > 1.5 * interval:
            self._report.add(
                "missing_heartbeats", where, max(1, round((end - start) / interval) - 1)
            )

    def finish(self) -> None:
        if self._last is not None and self._latest_time is not None:
            seq, when, interval = self._last
            self._missing(when, self._latest_time, interval, f"after seq {seq}")


def verify(
    records: Iterable[Record], ring: KeyRing, *, judge_order: bool = True
) -> list[BootReport]:
    """One report per (node, boot), sorted; a node's unsealed lines in a report with boot ""."""
    boots: dict[tuple[str, str], _Boot] = {}
    unsealed: dict[str, BootReport] = {}
    for record in records:
        parsed = sealing.parse(record.line)
        if parsed is None:
            node = _node_of(record.line)
            report = unsealed.setdefault(node, BootReport(node, ""))
            report.add("unsealed", record.source)
            continue
        try:
            node, _ = parse_kid(parsed.kid)
        except KeyRingError:
            node = ""
        key = (node, parsed.boot)
        if key not in boots:
            boots[key] = _Boot(BootReport(node, parsed.boot), ring, judge_order)
        boots[key].add(_Line(parsed, record, record.line))
    reports = [boot.check() for boot in boots.values()] + list(unsealed.values())
    return sorted(reports, key=lambda r: (r.node, r.boot))
