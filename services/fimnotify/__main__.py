"""fimnotify: an engine holding many inotify watches inside containers for fimd.

Usage::

    python -m services.fimnotify --queue /fimk8s.<id>.e0 [--proc-root /proc]
        [--max-dirs 10000] [--buffer-bytes 8388608] [--name e0]

Control messages (add or remove a watch) come on stdin, one JSON object per line; records
go to the queue (both in libs/fimnotify_api). Exit statuses are
`libs.fimnotify_api.wire.ExitStatus`: 0 stopped (SIGTERM/SIGINT or stdin closed), 1 fatal
error, 2 bad usage, 4 queue unusable. Diagnostics go to stderr.
"""

from __future__ import annotations

import sys

from libs.fimnotify_api.control import ControlError, EngineConfig
from libs.fimnotify_api.wire import ExitStatus
from services.fimnotify.engine import Engine
from services.fimnotify.sink import QueueError


def main(argv: list[str] | None = None) -> int:
    try:
        config = EngineConfig.parse(argv)
    except ControlError as exc:
        print(f"fimnotify: {exc}", file=sys.stderr)
        return int(ExitStatus.USAGE)
    try:
        return Engine(config).run()
    except QueueError as exc:
        print(f"fimnotify[{config.name}]: {exc}", file=sys.stderr)
        return int(ExitStatus.QUEUE)


if __name__ == "__main__":
    sys.exit(main())
