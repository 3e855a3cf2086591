"""Running `kubectl` for the plugin: the one way it talks to the cluster.

Why kubectl and not a client library: kubectl runs the plugin, so it is installed; running it
honours every kubeconfig feature exactly as kubectl does (exec credential plugins, OIDC,
client certificates, proxies, `--context`), and keeps the plugin a stdlib-only zipapp of a
few dozen KiB that needs no third-party packages on the user's machine (docs/kubectl-fim.md).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import IO, Any


class KubectlError(RuntimeError):
    """kubectl could not be run or exited non-zero; the message carries its stderr."""


#: The longest stderr kept for a message.
_MAX_STDERR = 4096


@dataclass(frozen=True)
class Kubectl:
    """kubectl with the connection flags the user gave (`--kubeconfig`, `--context`, ...)."""

    binary: str = "kubectl"
    flags: tuple[str, ...] = ()

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *self.flags, *args]

    def run(self, *args: str, timeout: float = 60.0) -> str:
        """kubectl's stdout; raises KubectlError (with its stderr) if it fails."""
        try:
            done = subprocess.run(
                self.argv(*args), capture_output=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise KubectlError(f"kubectl {' '.join(args)}: {error}") from None
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace").strip()[-_MAX_STDERR:]
            raise KubectlError(f"kubectl {' '.join(args)}: {stderr or 'failed'}")
        return done.stdout.decode("utf-8", "replace")

    def json(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """The JSON object kubectl prints for `args` (`-o json` is added)."""
        out = self.run(*args, "-o", "json", timeout=timeout)
        try:
            value = json.loads(out)
        except ValueError as error:
            raise KubectlError(f"kubectl {' '.join(args)}: not JSON: {error}") from None
        if not isinstance(value, dict):
            raise KubectlError(f"kubectl {' '.join(args)}: not a JSON object")
        return value

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """kubectl running in the background, stdout and stderr piped (binary)."""
        try:
            return subprocess.Popen(
                self.argv(*args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            raise KubectlError(f"kubectl {' '.join(args)}: {error}") from None


def read_stderr(stream: IO[bytes] | None) -> str:
    """The (bounded) text of a finished process's stderr."""
    if stream is None:
        return ""
    return stream.read(_MAX_STDERR).decode("utf-8", "replace").strip()
