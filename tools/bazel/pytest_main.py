"""Entry point of every py_pytest target: runs pytest on the files given as arguments.

Bazel passes XML_OUTPUT_FILE; the JUnit report written there is what tools/test.sh
counts for its `N passed, N failed` line. An exception in a background thread or in a
finalizer (`__del__`, a callback at garbage collection) fails the test that caused it:
fimd's I/O loop and writer, and many test harnesses, run in threads, where pytest would
otherwise only warn. Each test log ends with its slowest steps (setup, call, teardown over
1 s), where the suite's time goes.
"""

import os
import sys

import pytest


def main() -> int:
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
