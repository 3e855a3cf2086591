"""The CI summary line counts real results and never turns a broken run green."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.test_summary import main, summarize

JUNIT = """<testsuites><testsuite>{cases}</testsuite></testsuites>"""


def junit(tmp: Path, name: str, passed: int = 0, failed: int = 0, skipped: int = 0) -> Path:
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
    """The closing line (the last one) of a run."""
    return lines(tmp_path, events, labels)[-1]


def lines(tmp_path: Path, events: list[str], labels: list[str]) -> list[str]:
    bep = tmp_path / "events.json"
    bep.write_text("\n".join([json.dumps({"id": {"started": {}}}), *events]) + "\n")
    return summarize(bep, labels).lines()


def exit_status(tmp_path: Path, events: list[str], labels: list[str]) -> int:
    lines(tmp_path, events, labels)
    return main([str(tmp_path / "events.json"), *labels])


def test_counts_test_cases_of_every_target(tmp_path: Path) -> None:
    events = [
        event("//a:t", "PASSED", junit(tmp_path, "a", passed=3, skipped=1)),
        event("//b:t", "FAILED", junit(tmp_path, "b", passed=2, failed=1)),
    ]
    assert lines(tmp_path, events, ["//a:t", "//b:t"]) == [
        "flaky: none",
        "5 passed, 1 failed, 1 skipped",
    ]
    assert exit_status(tmp_path, events, ["//a:t", "//b:t"]) == 1


def test_an_all_green_run_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = [event("//a:t", "PASSED", junit(tmp_path, "a", passed=3))]
    assert exit_status(tmp_path, events, ["//a:t"]) == 0
    assert capsys.readouterr().out == "flaky: none\n3 passed, 0 failed\n"


def test_a_target_without_a_result_is_a_failure(tmp_path: Path) -> None:
    events = [event("//a:t", "PASSED", junit(tmp_path, "a", passed=2))]
    assert run(tmp_path, events, ["//a:t", "//never:built"]) == "2 passed, 1 failed"


@pytest.mark.parametrize("status", ["FAILED", "TIMEOUT", "INCOMPLETE"])
def test_a_failed_target_whose_report_shows_no_failure_adds_one(
    tmp_path: Path, status: str
) -> None:
    events = [event("//a:t", status, junit(tmp_path, "a", passed=4))]
    assert run(tmp_path, events, ["//a:t"]) == "4 passed, 1 failed"


def test_an_empty_target_list_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status(tmp_path, [], []) == 1
    assert "no test target given" in capsys.readouterr().err


@pytest.mark.parametrize("report", ["missing", "empty"])
def test_a_passed_target_that_reports_no_case_is_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], report: str
) -> None:
    path = junit(tmp_path, "a", passed=0) if report == "empty" else None
    events = [event("//a:t", "PASSED", path), event("//b:t", "PASSED", junit(tmp_path, "b", 2))]
    assert run(tmp_path, events, ["//a:t", "//b:t"]) == "2 passed, 1 failed"
    assert exit_status(tmp_path, events, ["//a:t", "//b:t"]) == 1
    assert "//a:t passed but reported no test case" in capsys.readouterr().err


def test_a_retried_e2e_target_is_named_with_its_failed_attempts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    label = "//tests/e2e:e2e_test"
    events = [
        event(label, "FAILED", junit(tmp_path, "a1", passed=1, failed=2)),
        event(label, "PASSED", junit(tmp_path, "a2", passed=3)),
        event("//tests/cluster:cluster_test", "PASSED", junit(tmp_path, "c", passed=1)),
    ]
    labels = [label, "//tests/cluster:cluster_test"]
    assert lines(tmp_path, events, labels) == [
        "flaky: //tests/e2e:e2e_test (1 of 2 attempts failed, 2 failed cases)",
        "4 passed, 0 failed",
    ]
    assert exit_status(tmp_path, events, labels) == 0


def test_a_retried_target_outside_e2e_and_cluster_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [
        event("//services/fimd:daemon_test", "FAILED", junit(tmp_path, "d1", 1, failed=1)),
        event("//services/fimd:daemon_test", "PASSED", junit(tmp_path, "d2", passed=2)),
        event("//tests/cluster/tests:x_test", "FAILED", junit(tmp_path, "x1", failed=1)),
        event("//tests/cluster/tests:x_test", "PASSED", junit(tmp_path, "x2", passed=1)),
    ]
    labels = ["//services/fimd:daemon_test", "//tests/cluster/tests:x_test"]
    assert lines(tmp_path, events, labels) == [
        "flaky: //services/fimd:daemon_test (1 of 2 attempts failed, 1 failed cases), "
        "//tests/cluster/tests:x_test (1 of 2 attempts failed, 1 failed cases)",
        "3 passed, 0 failed",
    ]
    assert exit_status(tmp_path, events, labels) == 1
    err = capsys.readouterr().err
    assert "//services/fimd:daemon_test was retried" in err
    assert "x_test was retried" not in err


def test_a_target_failing_every_attempt_is_failed_not_flaky(tmp_path: Path) -> None:
    label = "//tests/e2e:e2e_test"
    events = [
        event(label, "FAILED", junit(tmp_path, "a1", passed=1, failed=1)),
        event(label, "FAILED", junit(tmp_path, "a2", passed=1, failed=1)),
    ]
    assert lines(tmp_path, events, [label]) == ["flaky: none", "1 passed, 1 failed"]


def test_an_unreadable_report_still_counts_the_status(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites>")
    events = [event("//a:t", "FAILED", broken), event("//b:t", "PASSED", broken)]
    assert run(tmp_path, events, ["//a:t", "//b:t"]) == "0 passed, 2 failed"
