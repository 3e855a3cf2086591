"""The CI summary line counts real results and never turns a broken run green."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.test_summary import summary

JUNIT = """<testsuites><testsuite>{cases}</testsuite></testsuites>"""


def junit(tmp: Path, name: str, passed: int, failed: int = 0, skipped: int = 0) -> Path:
    cases = (
        "<testcase name='p'/>" * passed
        + "<testcase name='f'><failure/></testcase>" * failed
        + "<testcase name='s'><skipped/></testcase>" * skipped
    )
    path = tmp / f"{name}.xml"
    path.write_text(JUNIT.format(cases=cases))
    return path


def event(label: str, status: str, report: Path | None) -> str:
    outputs = [{"name": "test.xml", "uri": f"file://{report}"}] if report else []
    return json.dumps(
        {
            "id": {"testResult": {"label": label, "attempt": 1}},
            "testResult": {"status": status, "testActionOutput": outputs},
        }
    )


def run(tmp_path: Path, events: list[str], labels: list[str]) -> str:
    bep = tmp_path / "events.json"
    bep.write_text("\n".join([json.dumps({"id": {"started": {}}}), *events]) + "\n")
    return summary(bep, labels)


def test_counts_test_cases_of_every_target(tmp_path: Path) -> None:
    events = [
        event("//a:t", "PASSED", junit(tmp_path, "a", passed=3, skipped=1)),
        event("//b:t", "FAILED", junit(tmp_path, "b", passed=2, failed=1)),
    ]
    assert run(tmp_path, events, ["//a:t", "//b:t"]) == "5 passed, 1 failed, 1 skipped"


def test_a_target_without_a_result_is_a_failure(tmp_path: Path) -> None:
    events = [event("//a:t", "PASSED", junit(tmp_path, "a", passed=2))]
    assert run(tmp_path, events, ["//a:t", "//never:built"]) == "2 passed, 1 failed"


@pytest.mark.parametrize("status", ["FAILED", "TIMEOUT", "INCOMPLETE"])
def test_a_failed_target_whose_report_shows_no_failure_adds_one(
    tmp_path: Path, status: str
) -> None:
    events = [event("//a:t", status, junit(tmp_path, "a", passed=4))]
    assert run(tmp_path, events, ["//a:t"]) == "4 passed, 1 failed"


def test_a_retried_target_counts_its_last_attempt_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [
        event("//a:t", "FAILED", junit(tmp_path, "a1", passed=1, failed=1)),
        event("//a:t", "PASSED", junit(tmp_path, "a2", passed=2)),
    ]
    assert run(tmp_path, events, ["//a:t"]) == "2 passed, 0 failed"
    assert "flaky: //a:t passed on attempt 2" in capsys.readouterr().err


def test_an_unreadable_report_still_counts_the_status(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites>")
    events = [event("//a:t", "FAILED", broken), event("//b:t", "PASSED", broken)]
    assert run(tmp_path, events, ["//a:t", "//b:t"]) == "0 passed, 1 failed"
