"""Prints the closing lines of a `bazel test` run, from its real results (standard library
only: tools/test.sh runs it with the system Python).

Usage: test_summary.py BUILD_EVENTS_JSON //label ...

Reads the run's build event protocol file (--build_event_json_file) for every attempt of
each test target: its status and JUnit report. Prints two lines:

    flaky: none | flaky: //tests/e2e:e2e_test (1 of 2 attempts failed, 3 failed cases), ...
    N passed, N failed[, N skipped]

How it counts (docs/testing.md):
- The final line counts the test cases of each target's last attempt: pytest targets report
  each case, other targets (mypy, ruff) Bazel's one-case report.
- A target retried into a pass is flaky: the line before the final one names it with its
  failed attempts and the failing cases of those attempts (they are not in the final line,
  which says what the code does now; they are never hidden).
- A target with no result in this run (it failed to build or never ran) counts as one
  failure; a failed target whose report shows no failing case (a crash, a timeout) adds one;
  a passed target whose report is missing or holds no case counts as one failure: a broken
  run can never look green.
- Exit status 1 when the target list is empty, a target counts a failure, or a target outside
  RETRY_ALLOWED was retried (retries are allowed for cluster and end-to-end tests only).
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

#: Targets that may be retried (tools/test.sh's --flaky_test_attempts uses the same regex):
#: they start a real cluster, where a loaded 2-core machine can miss a timing once.
RETRY_ALLOWED = re.compile(r"^//tests/(e2e|cluster)[:/]")


@dataclass(frozen=True)
class Attempt:
    status: str
    report: Path | None


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.passed + other.passed, self.failed + other.failed, self.skipped + other.skipped
        )


def attempts(events_file: Path) -> dict[str, list[Attempt]]:
    """label -> its attempts in this run, in order."""
    found: dict[str, list[Attempt]] = {}
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
        found.setdefault(label, []).append(Attempt(result.get("status", "NO_STATUS"), report))
    return found


def count(report: Path) -> Counts:
    passed = failed = skipped = 0
    for case in ET.parse(report).iter("testcase"):  # noqa: S314 (our own Bazel output)
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return Counts(passed, failed, skipped)


def tally(attempt: Attempt) -> Counts:
    """The cases of one attempt; a failed attempt counts at least one failure, and so does a
    passed one that reports no case (a missing or empty report proves nothing)."""
    try:
        counts = count(attempt.report) if attempt.report else Counts()
    except (OSError, ET.ParseError):
        counts = Counts()
    if attempt.status != "PASSED" and counts.failed == 0:
        return replace(counts, failed=1)
    if attempt.status == "PASSED" and counts == Counts():
        return Counts(failed=1)
    return counts


@dataclass(frozen=True)
class Summary:
    counts: Counts
    #: label -> (failed attempts, attempts, failed cases of the failed attempts)
    flaky: dict[str, tuple[int, int, int]]
    problems: list[str]

    def lines(self) -> list[str]:
        flaky = ", ".join(
            f"{label} ({bad} of {total} attempts failed, {cases} failed cases)"
            for label, (bad, total, cases) in sorted(self.flaky.items())
        )
        final = f"{self.counts.passed} passed, {self.counts.failed} failed"
        if self.counts.skipped:
            final += f", {self.counts.skipped} skipped"
        return [f"flaky: {flaky or 'none'}", final]

    def ok(self) -> bool:
        return not self.problems and self.counts.failed == 0


def summarize(events_file: Path, labels: list[str]) -> Summary:
    runs = attempts(events_file)
    total = Counts()
    flaky: dict[str, tuple[int, int, int]] = {}
    problems: list[str] = []
    if not labels:
        problems.append("no test target given: nothing was counted")
    for label in labels:
        tries = runs.get(label, [Attempt("NO_STATUS", None)])
        last = tally(tries[-1])
        total += last
        if last.failed and tries[-1].status == "PASSED":
            problems.append(f"{label} passed but reported no test case")
        if len(tries) > 1:
            earlier = [tally(t) for t in tries[:-1]]
            if tries[-1].status == "PASSED":
                flaky[label] = (len(earlier), len(tries), sum(c.failed for c in earlier))
            if not RETRY_ALLOWED.match(label):
                problems.append(f"{label} was retried: only e2e and cluster tests may be")
    return Summary(total, flaky, problems)


def main(argv: list[str]) -> int:
    result = summarize(Path(argv[0]), argv[1:])
    for problem in result.problems:
        print(f"test summary: {problem}", file=sys.stderr)
    print("\n".join(result.lines()))
    return 0 if result.ok() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
