"""fimnotify: watch one container's paths with inotify, send records to fimd's queue.

Usage::

    python -m services.fimnotify [--config FILE]

The WatchConfig JSON (services/fimnotify/config.py) is read from FILE, or from stdin
when no --config is given (fimd writes it and closes stdin). Exit statuses are
`libs.fimnotify_api.wire.ExitStatus`: 0 stopped by SIGTERM/SIGINT, 1 fatal error,
2 bad usage/config, 3 target process gone (re-resolve the PID), 4 queue unusable.
Diagnostics go to stderr; records (including the EXIT record) go to the queue.
"""

from __future__ import annotations

import argparse
import sys

from libs.fimnotify_api.config import ConfigError, WatchConfig, loads
from services.fimnotify.engine import Engine
from services.fimnotify.sink import QueueError
from libs.fimnotify_api.wire import ExitStatus


def _read_config(path: str | None) -> WatchConfig:
    if path is None:
        return loads(sys.stdin.buffer.read())
    try:
        with open(path, "rb") as handle:
            return loads(handle.read())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fimnotify", description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="WatchConfig JSON (default: stdin)")
    args = parser.parse_args(argv)
    try:
        config = _read_config(args.config)
    except ConfigError as exc:
        print(f"fimnotify: invalid config: {exc}", file=sys.stderr)
        return int(ExitStatus.USAGE)
    try:
        return Engine(config).run()
    except QueueError as exc:
        print(f"fimnotify[{config.watch_id}]: {exc}", file=sys.stderr)
        return int(ExitStatus.QUEUE)


if __name__ == "__main__":
    sys.exit(main())
