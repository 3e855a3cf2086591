"""A whole local cluster (or only its control plane) started and stopped as one object."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.cluster.config import Binaries
from tests.cluster.controlplane import LOOPBACK, ControlPlane
from tests.cluster.node import BRIDGE, BRIDGE_ADDRESS, Node
from tests.cluster.supervisor import Supervisor

# Images every full cluster imports into containerd (built by `python -m images.build`).
BASE_IMAGES = ("pause", "workload")


class TeardownError(RuntimeError):
    """The host could not be restored completely (the message lists what is left)."""


class Cluster:
    """The cluster whose state lives in `state_dir`.

    `up()` starts it (only etcd + kube-apiserver with `apiserver_only`); `down()` stops every
    process by PID, restores the host and then fails loudly if the network guard stopped any
    packet. `Cluster.attach(state_dir)` finds a cluster another process started.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        apiserver_only: bool = True,
        apiserver_port: int | None = None,
        images: tuple[str, ...] = BASE_IMAGES,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.supervisor = supervisor or Supervisor(
            state_dir, bridge="" if apiserver_only else BRIDGE
        )
        self.supervisor.extra.setdefault("apiserver_only", apiserver_only)
        self.binaries = Binaries.from_env()
        # The API server binds 127.0.0.1 alone, the bridge's address with a node (pods reach
        # it through the `kubernetes` Service; see controlplane).
        self.control_plane = ControlPlane(
            self.supervisor,
            self.binaries,
            apiserver_port,
            address=LOOPBACK if self.apiserver_only else BRIDGE_ADDRESS,
        )
        self.node = Node(self.supervisor, self.binaries, self.control_plane)
        self.images = images
        self.startup_seconds = 0.0

    @classmethod
    def attach(cls, state_dir: Path) -> Cluster | None:
        supervisor = Supervisor.load(state_dir)
        if supervisor is None:
            return None
        return cls(state_dir, supervisor=supervisor)

    @property
    def apiserver_only(self) -> bool:
        return bool(self.supervisor.extra["apiserver_only"])

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def registry(self) -> str:
        """host:port of the node's OCI registry (images pushed there are pulled by the node)."""
        return self.node.registry.address

    def image_archives(self) -> list[Path]:
        archives = [self.binaries.images / f"{name}.tar" for name in self.images]
        missing = [str(path) for path in archives if not path.exists()]
        if missing:
            raise FileNotFoundError(
                f"images missing: {', '.join(missing)} -- build them with `python3 -m images.build`"
            )
        return archives

    def import_images(self, archives: list[Path]) -> None:
        """Imports more images (e.g. the service images Bazel builds) into the node."""
        self.node.import_images(archives)

    def up(self, timeout: float = 120.0) -> None:
        """Starts the cluster; on any failure stops what was started before re-raising."""
        started = time.monotonic()
        try:
            if not self.apiserver_only:
                self.node.prepare_network()
            self.control_plane.start(timeout)
            if not self.apiserver_only:
                self.node.start(self.image_archives(), timeout)
        except BaseException:
            self.down()
            raise
        self.startup_seconds = time.monotonic() - started

    def down(self, *, remove_state: bool = False) -> None:
        """Stops everything and restores the host; raises NetworkGuardError afterwards if a
        component tried to reach beyond the machine, TeardownError if something is left.
        With remove_state the state directory (etcd data, PKI, logs) goes too."""
        problems = self.node.stop()
        self.supervisor.stop_all()
        guard = self.supervisor.guard
        dropped = guard.dropped()
        guard.uninstall()
        self.supervisor.state_file.unlink(missing_ok=True)
        if remove_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        guard.check_count(dropped)
        if problems:
            raise TeardownError("host not fully restored:\n" + "\n".join(problems))

    def status(self) -> dict[str, bool]:
        """Component name -> alive."""
        return {record.name: record.alive() for record in self.supervisor.records}
