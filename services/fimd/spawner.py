"""Starting fimnotify processes: the process adapter behind the supervisor's Spawn action.

The WatchConfig JSON goes to the child's stdin (`libs.fimnotify_api.config`). The child's
stdout is redirected to fimd's stderr: fimd's stdout carries only fimd's own lines. The
child gets SIGTERM if fimd dies (PR_SET_PDEATHSIG), so a killed fimd leaks no watchers.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
from collections.abc import Sequence
from typing import Protocol

from libs.fimnotify_api.config import WatchConfig, dumps

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class Child(Protocol):
    """A running fimnotify process (subprocess.Popen fits)."""

    pid: int

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Spawner(Protocol):
    def spawn(self, config: WatchConfig) -> Child:
        """Starts a watcher for `config`; raises OSError if it cannot be started."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only an async-signal-safe libc call here.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessSpawner:
    """Runs `command` (e.g. `python -m services.fimnotify`) once per watch."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    def spawn(self, config: WatchConfig) -> Child:
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=2,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - nothing but one prctl call
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(dumps(config).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child exited already; the supervisor sees its exit status
        return proc
