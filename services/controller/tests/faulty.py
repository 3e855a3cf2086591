"""`python -m services.controller.tests.faulty`: the real controller with a bug tests trigger.

A pod controls the file names in fimd's watch messages, and a bug in handling such data
once made a sync raise something other than ApiError or FimdError. This entry point runs
the controller (`services.controller.cli.main`, same flags) with one collaborator made
fragile, switched on and off through fake fimd data: reading a watch status whose message
starts with RAISE raises InjectedError (an arbitrary exception, quoting the whole message);
one that starts with KILL raises WorkerKiller, a BaseException no sync handles, which ends
the worker thread that read it.
"""

from __future__ import annotations

import sys

from fim.v1 import fim_pb2
from services.controller.cli import main
from services.controller.state import Observed

RAISE = "fault:raise "
KILL = "fault:kill "


class InjectedError(LookupError):
    """An exception the controller does not expect from a sync."""


class WorkerKiller(BaseException):
    """Escapes every `except Exception`: ends the worker thread it is raised in."""


def install() -> None:
    original = Observed.from_proto

    def fragile(cls: type[Observed], status: fim_pb2.WatchStatus) -> Observed:
        if status.message.startswith(RAISE):
            raise InjectedError(f"cannot handle watch message {status.message!r}")
        if status.message.startswith(KILL):
            raise WorkerKiller(status.message)
        return original(status)

    Observed.from_proto = classmethod(fragile)  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    install()
    sys.exit(main())
