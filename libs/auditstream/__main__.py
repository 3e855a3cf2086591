"""`python -m libs.auditstream verify ...`: see libs/auditstream/cli.py."""

from __future__ import annotations

import sys

from libs.auditstream.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["verify"]:
        args = args[1:]
    sys.exit(main(args))
