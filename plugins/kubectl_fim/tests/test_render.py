"""Compact and JSON rendering, including hostile bytes from watched pods."""

from __future__ import annotations

import base64
import json
from typing import Any

from libs.fimlines import parse
from plugins.kubectl_fim.render import Style, compact, json_line, short_time

PLAIN = Style(colour=False)
COLOUR = Style(colour=True)


def _event(**fields: Any) -> dict[str, Any]:
    record = {"kind": "event", "time": "2026-12-01T13:04:05.123456Z", "node": "n1",
              "namespace": "shop", "pod": "web-0", "container": "app",
              "watcher": "shop/logs", "event": "MODIFY", "path": "/var/log/a.log",
              "isDir": False, "tags": {"team": "payments"}}  # fmt: skip
    record.update(fields)
    return record


def test_event_line() -> None:
    line = compact(_event(), "", "fimd-x", PLAIN)
    assert line == (
        "2026-12-01T13:04:05.123Z n1 MODIFY       shop/web-0:app /var/log/a.log "
        "watcher=logs team=payments"
    )


def test_directory_coalesced_and_foreign_watcher() -> None:
    record = _event(isDir=True, count=7, watcher="ops/global", tags={}, event="CREATE")
    line = compact(record, "", "fimd-x", PLAIN)
    assert "CREATE       shop/web-0:app /var/log/a.log/ x7 watcher=ops/global" in line
    assert line.endswith("watcher=ops/global")


def test_hostile_path_tags_and_names_cannot_reach_the_terminal() -> None:
    hostile = "/data/\x1b[2J\x1b]0;pwned\x07\r\n\u202e\x85\u2028evil"
    record = _event(path=hostile, tags={"k\x1b[31m": "v\x9b1m"}, pod="p\x1b", node="n\u2029")
    for style in (PLAIN, COLOUR):
        line = compact(record, json.dumps(record), "fimd-x", style)
        without_sgr = line.replace("\x1b[0m", "")
        for code in ("\x1b[2m", "\x1b[1m", "\x1b[33m", "\x1b[36m"):
            without_sgr = without_sgr.replace(code, "")
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in without_sgr), line
        assert "\u202e" not in line
        assert "\u2028" not in line
        assert "\u2029" not in line
    shown = compact(record, "", "fimd-x", PLAIN)
    assert "/data/\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\x0a\\u202e\\x85\\u2028evil" in shown
    assert "k\\x1b[31m=v\\x9b1m" in shown
    assert "p\\x1b" in shown
    assert "n\\u2029" in shown


def test_non_utf8_path_shows_its_raw_bytes() -> None:
    raw = b"/srv/\xff\x1bname"
    record = _event(path=raw.decode("utf-8", "replace"), pathBytes=base64.b64encode(raw).decode())
    assert "/srv/\\xff\\x1bname " in compact(record, "", "fimd-x", PLAIN)
    # A name of the four characters `\xff` looks different from the byte 0xFF.
    assert "/srv/\\\\xff " in compact(_event(path="/srv/\\xff"), "", "fimd-x", PLAIN)
    # A pathBytes that is not base64 (a forged line) shows the text path.
    assert "/srv/x " in compact(_event(path="/srv/x", pathBytes="!!"), "", "fimd-x", PLAIN)


def test_colours_only_when_asked() -> None:
    assert "\x1b[" not in compact(_event(), "", "fimd-x", PLAIN)
    coloured = compact(_event(event="DELETE"), "", "fimd-x", COLOUR)
    assert "\x1b[31mDELETE" in coloured
    assert coloured.count("\x1b[0m") >= 3


def test_summary_op_other_and_plain_lines() -> None:
    summary = {"kind": "summary", "time": "2026-12-01T13:04:05.000001Z", "node": "n1",
               "namespace": "shop", "pod": "web", "container": "app", "watcher": "shop/w",
               "budget": 100, "lines": 4000, "count": 5000, "events": {"MODIFY": 5000},
               "paths": [{"path": "/hot", "count": 4900}]}  # fmt: skip
    assert compact(summary, "", "f", PLAIN) == (
        "2026-12-01T13:04:05.000Z n1 SUMMARY      shop/web:app 5000 events in 4000 lines "
        "over budget 100/s MODIFY=5000 busiest=/hot x4900 watcher=w"
    )
    op = {"kind": "op", "time": "t", "level": "warning", "node": "n1", "msg": "inotify_overflow",
          "namespace": "shop", "pod": "web", "container": "app", "engine": 1, "seq": 5,
          "mac": "ab"}  # fmt: skip
    assert compact(op, "", "f", PLAIN) == "t n1 OP warning inotify_overflow shop/web:app engine=1"
    future = {"kind": "audit", "time": "t", "node": "n1", "change": "X", "path": "/etc/x"}
    assert compact(future, "", "f", PLAIN) == "t n1 AUDIT        change=X path=/etc/x"
    assert compact(None, "Traceback \x1b[1m", "fimd-a", PLAIN) == "fimd-a | Traceback \\x1b[1m"
    sealed = "MODIFY /etc/x fim-seal seq=4 boot=0123456789abcdef kid=n1/1 mac=" + "ab" * 32
    assert compact(None, sealed, "fimd-a", PLAIN) == "fimd-a | MODIFY /etc/x"
    op_sealed = {**op, "boot": "0123456789abcdef", "kid": "n1/1"}
    assert compact(op_sealed, "", "f", PLAIN) == compact(op, "", "f", PLAIN)
    long_op = {"kind": "op", "time": "t", "node": "n", "msg": "m", "level": "info",
               "detail": "x" * 1000}  # fmt: skip
    assert compact(long_op, "", "f", PLAIN).endswith("...")
    assert len(compact(long_op, "", "f", PLAIN)) < 500


def test_short_time() -> None:
    assert short_time("2026-12-01T13:04:05.999999Z") == "2026-12-01T13:04:05.999Z"
    assert short_time("garbage\x1b") == "garbage\\x1b"
    assert short_time(17) == "17"


def test_json_keeps_fimds_bytes_and_escapes_raw_controls() -> None:
    honest = '{"kind":"event","path":"/a\\u001b[2J\\u202e","tags":{"é":"ü"}}'
    assert json_line(honest) == honest
    forged = '{"kind":"event","path":"/a\u202e\x85\u2028"}'
    safe = json_line(forged)
    assert safe == '{"kind":"event","path":"/a\\u202e\\u0085\\u2028"}'
    assert parse(safe) == parse(forged) == {"kind": "event", "path": "/a\u202e\x85\u2028"}
    # Raw C0 controls make a line invalid JSON: it is not a record (`-o json` leaves it
    # out, compact output shows it neutralised as a plain line).
    assert parse('{"path":"/a\x1b[2J"}') is None


OLD = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
NEW = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_event_attributes() -> None:
    record = _event(sha256=NEW, size=4, mode="0644", previous={"sha256": OLD, "size": 0})
    assert "/var/log/a.log sha256=e3b0c44298fc>9f86d081884c size=4 mode=0644 watcher=logs" in (
        compact(record, "", "f", PLAIN)
    )
    same = _event(sha256=NEW, size=4, mode="0644", previous={"sha256": NEW})
    assert " sha256=9f86d081884c size=4 " in compact(same, "", "f", PLAIN)
    skipped = _event(hashSkipped="size 70000000 is over the cap 67108864", size=70000000)
    assert "size=70000000 hashSkipped=size 70000000 is over the cap 67108864" in (
        compact(skipped, "", "f", PLAIN)
    )
    gone = _event(event="DELETE", previous={"sha256": OLD})
    assert "/var/log/a.log sha256=e3b0c44298fc watcher=logs" in compact(gone, "", "f", PLAIN)


def test_drift_and_scan() -> None:
    base = {"time": "2026-12-01T10:05:00.120000Z", "node": "n1", "namespace": "shop"}
    base |= {"pod": "web-0", "container": "app", "watcher": "shop/etc", "reason": "activation"}
    changed = {**base, "kind": "drift", "change": "CHANGED", "path": "/etc/app.conf",
               "type": "file", "changed": ["sha256", "size"], "before": {"sha256": OLD},
               "after": {"sha256": NEW}, "tags": {"pci": "11.5"}}  # fmt: skip
    assert compact(changed, "", "f", PLAIN) == (
        "2026-12-01T10:05:00.120Z n1 DRIFT CHANGED shop/web-0:app /etc/app.conf "
        "changed=sha256,size sha256=e3b0c44298fc>9f86d081884c watcher=etc reason=activation "
        "pci=11.5"
    )
    added = {**base, "kind": "drift", "change": "ADDED", "path": "/etc/new.d", "type": "dir",
             "after": {"type": "dir"}}  # fmt: skip
    assert "DRIFT ADDED  shop/web-0:app /etc/new.d/ watcher=etc" in compact(added, "", "f", PLAIN)
    assert "\x1b[32mDRIFT ADDED" in compact(added, "", "f", COLOUR)
    removed = {**base, "kind": "drift", "change": "REMOVED", "path": "/etc/\x1b[2J",
               "before": {"sha256": OLD}}  # fmt: skip
    line = compact(removed, "", "f", PLAIN)
    assert "/etc/\\x1b[2J sha256=e3b0c44298fc " in line
    scan = {**base, "kind": "scan", "baseline": False, "scanned": 120, "added": 0,
            "removed": 0, "changed": 1, "durationSeconds": 0.031, "truncated": True,
            "errors": 2, "driftLinesOmitted": 0}  # fmt: skip
    assert compact(scan, "", "f", PLAIN) == (
        "2026-12-01T10:05:00.120Z n1 SCAN         shop/web-0:app scanned=120 added=0 removed=0 "
        "changed=1 in 0.031s watcher=etc reason=activation new baseline truncated errors=2"
    )
