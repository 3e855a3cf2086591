"""Prints `N passed, N failed[, N skipped]` for a `bazel test` run, from its real results.

Usage: test_summary.py BUILD_EVENTS_JSON //label ...
Reads the run's build event protocol file (--build_event_json_file) for each test
target's status and JUnit report (of its last attempt; targets that passed only on a
retry are named on stderr as flaky): pytest targets report each test case; other
targets (mypy, ruff) get Bazel's one-case report. A target with no result in this
run (it failed to build or never ran) counts as one failure, and a failed target
whose report shows no failing case (a crash, a timeout) adds one, so a broken run
can never look green.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlparse


def results(events_file: Path) -> dict[str, tuple[str, Path | None]]:
    """label -> (status, JUnit report path) of the last attempt of each test target."""
    found: dict[str, tuple[str, Path | None]] = {}
    attempts: dict[str, list[str]] = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        label = event.get("id", {}).get("testResult", {}).get("label")
        if label is None or "testResult" not in event:
            continue
        result = event["testResult"]
        report = None
        for output in result.get("testActionOutput", []):
            if output.get("name") == "test.xml":
                report = Path(unquote(urlparse(output["uri"]).path))
        found[label] = (result.get("status", "NO_STATUS"), report)
        attempts.setdefault(label, []).append(found[label][0])
    for label, statuses in sorted(attempts.items()):
        if statuses[-1] == "PASSED" and len(statuses) > 1:
            print(f"flaky: {label} passed on attempt {len(statuses)}", file=sys.stderr)
    return found


def count(report: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for case in ET.parse(report).iter("testcase"):  # noqa: S314 (our own Bazel output)
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def tally(status: str, report: Path | None) -> tuple[int, int, int]:
    try:
        passed, failed, skipped = count(report) if report else (0, 0, 0)
    except (OSError, ET.ParseError):
        passed, failed, skipped = 0, 0, 0
    if status != "PASSED" and failed == 0:
        failed = 1
    return passed, failed, skipped


def summary(events_file: Path, labels: list[str]) -> str:
    runs = results(events_file)
    passed = failed = skipped = 0
    for label in labels:
        p, f, s = tally(*runs.get(label, ("NO_STATUS", None)))
        passed, failed, skipped = passed + p, failed + f, skipped + s
    line = f"{passed} passed, {failed} failed"
    return f"{line}, {skipped} skipped" if skipped else line


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]), sys.argv[2:]))
