"""Entry point of every py_pytest target: runs pytest on the files given as arguments.

Bazel passes XML_OUTPUT_FILE; the JUnit report written there is what tools/test.sh
counts for its `N passed, N failed` line.
"""

import os
import sys

import pytest


def main() -> int:
    args = ["-p", "no:cacheprovider", "--import-mode=importlib", "-q", *sys.argv[1:]]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
