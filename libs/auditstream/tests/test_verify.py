"""Sealer and verifier: an intact stream verifies; each tampering is found on its own."""

from __future__ import annotations

import json

from libs.auditstream import seal
from libs.auditstream.collect import Record
from libs.auditstream.tests.streams import boot_lines, event, heartbeat, ring, sealed
from libs.auditstream.verify import BootReport, verify

RING = ring(2)


def records(lines: list[bytes], ordered: bool = True) -> list[Record]:
    return [Record(line, f"in:{i + 1}", ordered) for i, line in enumerate(lines)]


def check(lines: list[bytes], ordered: bool = True) -> list[BootReport]:
    return verify(records(lines, ordered), RING)


def findings(report: BootReport) -> dict[str, int]:
    return {kind: f.count for kind, f in report.findings.items()}


def test_intact_stream_verifies_every_line() -> None:
    lines = boot_lines("n1", 50, RING)
    [report] = check(lines)
    assert report.ok, report
    assert (report.node, report.verified, report.first_seq, report.last_seq) == ("n1", 50, 1, 50)
    assert report.heartbeats == 1
    assert report.kids == {"n1/2"}


def test_sealed_json_line_stays_json_with_the_seal_last() -> None:
    [line] = sealed("n1", [event("n1", 1)], RING, boot="00112233aabbccdd")
    doc = json.loads(line)
    assert list(doc)[-4:] == ["seq", "boot", "kid", "mac"]
    assert (doc["seq"], doc["boot"], doc["kid"]) == (1, "00112233aabbccdd", "n1/2")
    parsed = seal.parse(line)
    assert parsed is not None
    assert parsed.body == event("n1", 1)
    key = RING.node_key("n1").key
    assert seal.mac_of(key, seal.GENESIS, line[: line.rindex(b'"mac":"') + 7]) == parsed.mac


def test_text_lines_and_empty_objects_are_sealed_and_verify() -> None:
    bodies = [b"2026-12-01T10:00:00.000001Z MODIFY /etc/x", b"{}", b"{ }", b"", event("n1", 2)]
    lines = sealed("n1", bodies, RING)
    assert lines[0].startswith(bodies[0] + b" fim-seal seq=1 boot=")
    assert json.loads(lines[1])["seq"] == 2
    assert json.loads(lines[2])["seq"] == 3
    assert [seal.parse(line).body for line in lines] == bodies  # type: ignore[union-attr]
    [report] = check(lines)
    assert report.ok
    assert report.verified == 5


def test_one_deleted_line_is_a_gap() -> None:
    lines = boot_lines("n1", 20, RING)
    del lines[7]  # seq 8
    [report] = check(lines)
    assert not report.ok
    assert findings(report) == {"gap": 1}
    assert report.findings["gap"].first.startswith("after seq 7: 1 missing")
    # seq 9 follows a gap: its own MAC cannot be checked, the rest of the chain can.
    assert (report.verified, report.unanchored) == (18, 1)


def test_one_edited_line_is_altered() -> None:
    lines = boot_lines("n1", 20, RING)
    lines[5] = lines[5].replace(b"/etc/file-5", b"/etc/file-X")
    [report] = check(lines)
    assert findings(report) == {"altered": 1}
    assert report.findings["altered"].first.startswith("seq 6 ")
    assert report.verified == 19


def test_an_edited_mac_breaks_that_line_and_the_next() -> None:
    lines = boot_lines("n1", 10, RING)
    mac = lines[3][-66:-2]
    lines[3] = lines[3].replace(mac, bytes(reversed(mac)))
    [report] = check(lines)
    assert findings(report) == {"altered": 2}


def test_one_reordered_pair_is_reordered_but_every_mac_verifies() -> None:
    lines = boot_lines("n1", 20, RING)
    lines[10], lines[11] = lines[11], lines[10]
    [report] = check(lines)
    assert findings(report) == {"reordered": 1}
    assert report.findings["reordered"].first.startswith("seq 11 (in:12) after seq 12 (in:11)")
    assert report.verified == 20
    # Loki and Elastic order by their own time: order is not judged there.
    [unordered] = check(lines, ordered=False)
    assert unordered.ok


def test_one_inserted_copy_with_other_content_is_inserted() -> None:
    lines = boot_lines("n1", 20, RING)
    forged = lines[4].replace(b"/etc/file-4", b"/etc/harmless")
    lines.insert(5, forged)
    [report] = check(lines)
    assert findings(report) == {"inserted": 1}
    assert report.findings["inserted"].first.startswith("seq 5 ")
    assert report.verified == 20


def test_one_inserted_unsealed_line_is_unsealed() -> None:
    lines = boot_lines("n1", 20, RING)
    lines.insert(5, event("n1", 99))
    unsealed, sealed_boot = check(lines)
    assert (unsealed.node, unsealed.boot, findings(unsealed)) == ("n1", "", {"unsealed": 1})
    assert unsealed.findings["unsealed"].first == "in:6"
    assert sealed_boot.ok
    assert sealed_boot.verified == 20


def test_a_line_sealed_with_another_nodes_key_is_altered() -> None:
    lines = boot_lines("n1", 5, RING, boot="aaaaaaaaaaaaaaaa")
    other = sealed("n2", [event("n1", i) for i in range(1, 6)], RING, boot="aaaaaaaaaaaaaaaa")
    spoof = other[2].replace(b'"kid":"n2/2"', b'"kid":"n1/2"')
    lines[2] = spoof
    [report] = check(lines)
    assert findings(report)["altered"] >= 1


def test_duplicates_are_counted_not_failed() -> None:
    lines = boot_lines("n1", 10, RING)
    [report] = check(lines + lines[5:])  # a collector that read the file again
    assert report.ok
    assert (report.duplicates, report.verified) == (5, 10)


def test_interleaved_nodes_and_boots_verify_separately() -> None:
    a1 = boot_lines("a", 30, RING, boot="a" * 16)
    a2 = boot_lines("a", 10, RING, boot="b" * 16)
    b1 = boot_lines("b", 30, RING, boot="c" * 16)
    mixed: list[bytes] = []
    for i in range(30):
        mixed += [a1[i], b1[i]] + ([a2[i]] if i < 10 else [])
    del mixed[mixed.index(b1[20])]
    reports = check(mixed)
    assert [(r.node, r.boot, r.ok, r.verified) for r in reports] == [
        ("a", "a" * 16, True, 30),
        ("a", "b" * 16, True, 10),
        ("b", "c" * 16, False, 28),
    ]
    assert findings(reports[2]) == {"gap": 1}


def test_rotation_within_a_boot_verifies_with_both_generations() -> None:
    sealer = seal.Sealer(RING.node_key("n1", 1))
    lines = [sealer.seal(event("n1", i)) for i in range(1, 4)]
    sealer.key = RING.node_key("n1", 2)
    lines += [sealer.seal(event("n1", i)) for i in range(4, 7)]
    [report] = check(lines)
    assert report.ok
    assert report.kids == {"n1/1", "n1/2"}
    assert report.verified == 6
    old_ring_only = ring(1)
    [unknown] = verify(records(lines), old_ring_only)
    assert findings(unknown) == {"unknown_key": 3}


def test_missing_heartbeats_are_found_between_and_after_heartbeats() -> None:
    bodies = [heartbeat("n1", 0, 0), event("n1", 1, 30), heartbeat("n1", 60, 1)]
    bodies += [event("n1", 2, 100), heartbeat("n1", 240, 1), event("n1", 3, 250)]
    [report] = check(sealed("n1", bodies, RING))
    assert findings(report) == {"missing_heartbeats": 2}
    assert report.findings["missing_heartbeats"].first == "between seq 3 and 5"
    tail = [*bodies[:3], event("n1", 9, 200)]
    [late] = check(sealed("n1", tail, RING))
    assert findings(late) == {"missing_heartbeats": 1}
    assert late.findings["missing_heartbeats"].first == "after seq 3"
    on_time = [*bodies[:3], event("n1", 9, 110), heartbeat("n1", 120, 1)]
    [fine] = check(sealed("n1", on_time, RING))
    assert fine.ok


def test_heartbeat_line_count_must_match_the_lines_between() -> None:
    bodies = [heartbeat("n1", 0, 0), event("n1", 1), event("n1", 2), heartbeat("n1", 60, 3)]
    [report] = check(sealed("n1", bodies, RING))
    assert findings(report) == {"heartbeat_mismatch": 1}


def test_input_starting_within_a_boot_is_anchored_not_failed() -> None:
    lines = boot_lines("n1", 20, RING)[8:]
    [report] = check(lines)
    assert report.ok
    assert (report.first_seq, report.unanchored, report.verified) == (9, 1, 11)


def test_seal_block_marks_each_line_and_rolls_back() -> None:
    sealer = seal.Sealer(RING.node_key("n1"))
    data, marks = sealer.seal_block(event("n1", 1) + b"\n" + event("n1", 2) + b"\n")
    assert data.count(b"\n") == 2
    assert [m[1].seq for m in marks] == [1, 2]
    assert marks[-1][0] == len(data)
    sealer.state = marks[0][1]  # the second line was not written
    again = sealer.seal(event("n1", 3))
    [report] = check([*data.split(b"\n")[:1], again])
    assert report.ok
    assert report.last_seq == 2


def test_without_a_key_lines_pass_unchanged() -> None:
    sealer = seal.Sealer(None)
    assert sealer.seal(b'{"a":1}') == b'{"a":1}'
    assert sealer.state.seq == 0


def test_seal_block_equals_sealing_line_by_line() -> None:
    bodies = [event("n1", 1), b"FIM CREATE /x", b"{}", b"{ }", b"", event("n1", 2)]
    block = seal.Sealer(RING.node_key("n1"), "0123456789abcdef")
    single = seal.Sealer(RING.node_key("n1"), "0123456789abcdef")
    data, marks = block.seal_block(b"\n".join(bodies) + b"\n")
    assert data == b"".join(single.seal(body) + b"\n" for body in bodies)
    assert block.state == single.state == marks[-1][1]
    assert seal.Sealer(None).seal_block(b"a\nb\n") == (b"a\nb\n", [])
