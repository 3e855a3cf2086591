"""Fixtures for the controller tests that run against a real kube-apiserver.

Use with `pytest_plugins = ["tests.cluster.fixtures", "services.controller.tests.fixtures"]`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import attrs
import grpc
import pytest

from services.controller.kube import Kube
from services.controller.tests import apiserver
from services.controller.tests.fake_fimd import FakeFimd, FakeFimdServer
from tests.cluster.controlplane import ControlPlane

_ids = itertools.count(1)


@attrs.define
class Env:
    """The API server with deploy/base applied, and an admin client."""

    admin: Kube
    kubeconfig: Path  # the controller ServiceAccount's
    tmp: Path
    control_plane: ControlPlane


@attrs.define
class World:
    """One test's namespace, fake fimd nodes and controllers."""

    env: Env
    ns: str
    tag: str
    fimds: dict[str, FakeFimdServer]
    controllers: list[apiserver.ControllerProcess] = attrs.field(factory=list)

    @property
    def kube(self) -> Kube:
        return self.env.admin

    def add_node(
        self, node: str, credentials: grpc.ServerCredentials | None = None
    ) -> FakeFimdServer:
        server = FakeFimdServer(FakeFimd(node), credentials)
        self.fimds[node] = server
        self.fimd_pod(node, server.port)
        return server

    def fimd_pod(self, node: str, port: int, name: str = "") -> None:
        apiserver.create_pod(
            self.kube,
            apiserver.SYSTEM,
            name or f"fimd-{self.tag}-{node}",
            node=node,
            labels={"app.kubernetes.io/name": "fimd", "fim-test": self.tag},
            containers={"fimd": 1},
            ports={apiserver.FIMD_PORT_NAME: port},
        )

    def start_controller(
        self,
        *extra: str,
        name: str = "",
        module: str = "services.controller",
        kubeconfig: Path | None = None,
    ) -> apiserver.ControllerProcess:
        log = self.env.tmp / f"controller-{self.tag}-{len(self.controllers)}{name}.log"
        secure = any(arg.startswith("--fimd-ca") for arg in extra)
        args = [
            *([] if secure else ["--insecure"]),
            f"--namespace={apiserver.SYSTEM}",
            f"--fimd-selector=app.kubernetes.io/name=fimd,fim-test={self.tag}",
            "--http-address=127.0.0.1:0",
            "--resync-period=3",
            "--call-timeout=1",
            "--log-level=debug",
            *extra,
        ]
        if "--leader-elect" not in extra:
            args.append("--no-leader-elect")
        controller = apiserver.ControllerProcess(
            kubeconfig or self.env.kubeconfig, log, *args, module=module
        )
        self.controllers.append(controller)
        return controller


@pytest.fixture(scope="session")
def env(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Env:
    admin = Kube.connect(str(control_plane.kubeconfig))
    apiserver.apply_files(admin, ["namespace.yaml", "crd.yaml", "controller-rbac.yaml"])
    apiserver.namespace(admin, apiserver.SYSTEM)
    tmp = tmp_path_factory.mktemp("controller")
    kubeconfig = apiserver.service_account_kubeconfig(
        admin,
        control_plane.server,
        control_plane.pki.ca.cert,
        tmp,
    )
    return Env(admin=admin, kubeconfig=kubeconfig, tmp=tmp, control_plane=control_plane)


@pytest.fixture
def world(env: Env) -> Iterator[World]:
    tag = f"t{next(_ids)}"
    ns = f"app-{tag}"
    apiserver.namespace(env.admin, ns)
    created = World(env=env, ns=ns, tag=tag, fimds={})
    yield created
    for controller in created.controllers:
        if controller.process.poll() is None:
            controller.kill()
    _remove_watchers(env.admin, ns)
    for server in created.fimds.values():
        server.stop()


def _remove_watchers(kube: Kube, ns: str) -> None:
    """Strips finalizers (no controller runs any more) so later tests see no leftovers."""
    for item in kube.request("GET", apiserver.watcher_path(ns)).get("items", []):
        name = item["metadata"]["name"]
        kube.request(
            "PATCH",
            apiserver.watcher_path(ns, name),
            body={"metadata": {"finalizers": None}},
            content_type=apiserver.MERGE_PATCH,
        )
        apiserver.delete(kube, apiserver.watcher_path(ns, name))
