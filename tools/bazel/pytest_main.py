"""Entry point of every py_pytest target: runs pytest on the files given as arguments.

Bazel passes XML_OUTPUT_FILE; the JUnit report written there is what tools/test.sh
counts for its `N passed, N failed` line. An exception in a background thread or in a
finalizer (`__del__`, a callback at garbage collection) fails the test that caused it:
fimd's I/O loop and writer, and many test harnesses, run in threads, where pytest would
otherwise only warn. Hypothesis's `too_slow` health check is off: it fails a test when
generating its examples takes long in wall time, which on a loaded CI machine says nothing
about the code (the fuzz targets are derandomized, with fixed example budgets and no
deadline). Each test log ends with its slowest steps (setup, call, teardown over
1 s), where the suite's time goes.
"""

import os
import sys

import pytest


def _hypothesis_profile() -> None:
    try:
        from hypothesis import HealthCheck, settings  # noqa: PLC0415 - fuzz targets only
    except ImportError:  # a target without the fuzzing dependency
        return
    settings.register_profile("fim-k8s", suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("fim-k8s")


def main() -> int:
    _hypothesis_profile()
    args = [
        "-p", "no:cacheprovider", "--import-mode=importlib", "-q",
        "-W", "error::pytest.PytestUnhandledThreadExceptionWarning",
        "-W", "error::pytest.PytestUnraisableExceptionWarning",
        "--durations=8", "--durations-min=1.0",
        *sys.argv[1:],
    ]  # fmt: skip
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
