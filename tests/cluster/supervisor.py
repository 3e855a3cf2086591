"""The processes of one cluster, their logs and the state file that outlives the harness.

`Supervisor` starts components inside the network guard, remembers them in
`<state_dir>/state.json` (so `python -m tests.cluster down` in another process can stop
them) and stops them in reverse start order, by PID.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.cluster.config import SYSTEM_PATH
from tests.cluster.netguard import NetworkGuard
from tests.cluster.processes import ProcessRecord, start


class ComponentDiedError(RuntimeError):
    """A component exited while the cluster was starting or running."""


class Supervisor:
    """Owns the processes (and the network guard) of the cluster in `state_dir`."""

    def __init__(self, state_dir: Path, *, bridge: str = "", ident: str = "") -> None:
        self.state_dir = state_dir
        self.guard = NetworkGuard(ident or secrets.token_hex(4), bridge)
        self.records: list[ProcessRecord] = []
        self.extra: dict[str, Any] = {}  # other state the cluster needs to tear down
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @classmethod
    def load(cls, state_dir: Path) -> Supervisor | None:
        """The supervisor recorded in state_dir, or None if no cluster is recorded there."""
        path = state_dir / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        supervisor = cls(state_dir, bridge=data["bridge"], ident=data["ident"])
        supervisor.records = [ProcessRecord(**record) for record in data["processes"]]
        supervisor.extra = data["extra"]
        return supervisor

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "ident": self.guard.ident,
            "bridge": self.guard.bridge,
            "processes": [asdict(record) for record in self.records],
            "extra": self.extra,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Starts a component in the guard's cgroup and records it."""
        self.guard.install()
        full_env = {"PATH": SYSTEM_PATH}
        full_env.update(env or {})
        proc, record = start(
            name,
            argv,
            self.log_dir / f"{name}.log",
            cgroup_procs=self.guard.cgroup_procs,
            env=full_env,
        )
        self._children[proc.pid] = proc
        self.records.append(record)
        self.save()

    def record(self, name: str) -> ProcessRecord:
        return next(record for record in self.records if record.name == name)

    def ensure_alive(self) -> None:
        """Raises ComponentDiedError (with the end of its log) if any component exited."""
        for record in self.records:
            if not record.alive():
                raise ComponentDiedError(
                    f"{record.name} (pid {record.pid}) exited; end of {record.log}:\n"
                    + log_tail(Path(record.log))
                )

    def stop(self, name: str) -> None:
        self.record(name).stop()
        self.records = [record for record in self.records if record.name != name]
        self.save()

    def stop_all(self) -> None:
        """Stops every component in reverse start order."""
        for record in reversed(list(self.records)):
            self.stop(record.name)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
