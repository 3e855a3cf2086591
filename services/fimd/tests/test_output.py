"""LineWriter: batching, back-pressure, and counted, reported drops."""

from __future__ import annotations

import json
import os
import threading

from services.fimd.output import LineWriter
from services.fimd.tests.harness import Capture


def test_lines_arrive_in_order() -> None:
    capture = Capture()
    writer = LineWriter(capture.write_fd, "n1")
    for i in range(1000):
        assert writer.put_events([f'{{"i":{i}}}\n'])
    writer.op("hello", "info", x=1)
    writer.close()
    capture.close()
    parsed = capture.json()
    assert [p["i"] for p in parsed if "i" in p] == list(range(1000))
    assert [p["msg"] for p in parsed if p.get("kind") == "op"] == ["hello"]


def test_stalled_stdout_drops_are_counted_and_reported() -> None:
    read_fd, write_fd = os.pipe()
    writer = LineWriter(write_fd, "n1", max_lines=10, block_timeout=0.01)
    line = "x" * 10_000 + "\n"
    # Nobody reads: the pipe (64 KiB, 6 lines) and the 10-line buffer fill up.
    results = [writer.put_events([line]) for _ in range(40)]
    dropped = results.count(False)
    assert dropped > 0
    first_drop = results.index(False)
    assert results[:first_drop] == [True] * first_drop
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 1 << 20), b""))
    )
    reader.start()
    writer.close()
    os.close(write_fd)
    reader.join(5)
    text = b"".join(chunks).decode().splitlines()
    reports = [json.loads(t) for t in text if t.startswith("{")]
    assert sum(r["count"] for r in reports if r["msg"] == "output_dropped") == dropped
    assert sum(1 for t in text if t.startswith("x")) == 40 - dropped
