"""Runs the real fimd (`python -m services.fimd`) as a child process for integration tests
and benchmarks, with its stdout in a file and an mqueue filesystem of its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from libs.auditstream import seal
from services.fimd.tests.certs import Pki


def body_of(line: str) -> str:
    """A line without its seal (libs/auditstream), or the line itself if it has none."""
    sealed = seal.parse(line.encode())
    return line if sealed is None else sealed.body.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FimdProcess:
    """`python -m services.fimd` over mTLS on 127.0.0.1 (and its plaintext health port), in a
    private mount namespace where the mqueue filesystem is mounted at `mqueue_dir` (so stale
    queues can be listed without touching the host's mounts; the IPC namespace, and so the
    queues, are the host's)."""

    def __init__(self, workdir: Path, pki: Pki, queue_prefix: str, *extra: str) -> None:
        self.workdir = workdir
        self.pki = pki
        self.port = free_port()
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.stdout_path = workdir / "fimd.out"
        self.mqueue_dir = workdir / "mqueue"
        self.mqueue_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "services.fimd", "--node-name", "node-1",
            "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--health-listen", f"127.0.0.1:{self.health_port}",
            "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
            "--client-ca", str(pki.ca), "--mqueue-dir", str(self.mqueue_dir),
            "--queue-prefix", queue_prefix, *extra,
        ]  # fmt: skip
        script = 'mount -t mqueue fimd-test "$0" && exec "$@"'
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                 str(self.mqueue_dir), *args],
                stdout=out, env=env,
            )  # fmt: skip
        self.channel = grpc.secure_channel(
            f"localhost:{self.port}",
            grpc.ssl_channel_credentials(
                pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
            ),
        )
        self.stub = fim_pb2_grpc.FimDaemonStub(self.channel)
        grpc.channel_ready_future(self.channel).result(timeout=20)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw_lines() if line.startswith("{")]

    def raw_lines(self) -> list[str]:
        """Complete lines only: fimd may be mid-write of the last one while we read."""
        return self.stdout_path.read_text().split("\n")[:-1]

    def bodies(self) -> list[str]:
        """Complete lines without their seal (seq, boot, kid, mac), as fimd rendered them."""
        return [body_of(line) for line in self.raw_lines()]

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("kind") == "event" and path in (None, e["path"])]

    def ops(self, msg: str) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("kind") == "op" and e["msg"] == msg]

    def watch(self, key: fim_pb2.WatchKey) -> fim_pb2.WatchStatus | None:
        state = self.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
        return next((w for w in state.watches if w.key == key), None)

    def wait_active(self, key: fim_pb2.WatchKey, timeout: float = 10) -> fim_pb2.WatchStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.watch(key)
            if status is not None and status.phase == fim_pb2.WATCH_PHASE_ACTIVE:
                return status
            time.sleep(0.02)
        raise AssertionError(f"watch not ACTIVE: {self.watch(key)}")

    def stop(self) -> int:
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)
