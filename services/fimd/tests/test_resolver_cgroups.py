"""Resolver against real cgroups of this machine (cgroup v1 hierarchies and the v2 one)."""

import secrets
import uuid

import pytest

from libs.k8s.container_id import parse_container_id
from services.fimd.resolver import ContainerNotFoundError, ProcResolver
from services.fimd.tests.cgroups import cgroup, run_in, stop, wait_members


def _layout(kind: str, uid: str, cid: str) -> tuple[str, str, str]:
    """(hierarchy, cgroup path, containerID) of one kubelet/runtime layout."""
    suid = uid.replace("-", "_")
    return {
        "besteffort": ("pids", f"kubepods/besteffort/pod{uid}/{cid}", f"containerd://{cid}"),
        "burstable": ("pids", f"kubepods/burstable/pod{uid}/{cid}", f"containerd://{cid}"),
        "guaranteed": ("pids", f"kubepods/pod{uid}/{cid}", f"containerd://{cid}"),
        "systemd": (
            "cpu",
            f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{suid}.slice/"
            f"cri-containerd-{cid}.scope",
            f"containerd://{cid}",
        ),
        "crio": ("pids", f"kubepods/besteffort/pod{uid}/crio-{cid}", f"cri-o://{cid}"),
        "v2": ("unified", f"kubepods/burstable/pod{uid}/{cid}", f"docker://{cid}"),
    }[kind]


@pytest.mark.parametrize("kind", ["besteffort", "burstable", "guaranteed", "systemd", "crio", "v2"])
def test_resolves_a_real_process_tree_in_a_real_cgroup(kind: str) -> None:
    cid = secrets.token_hex(32)
    hierarchy, path, container_id = _layout(kind, str(uuid.uuid4()), cid)
    resolver = ProcResolver()
    with cgroup(hierarchy, path) as directory:
        proc = run_in([directory], "sleep 60 & sleep 60 & wait")
        try:
            members = wait_members(directory, 3)
            assert resolver.resolve(parse_container_id(container_id)).pid == proc.pid
            assert resolver.members(parse_container_id(container_id)) == members
        finally:
            stop(proc, directory)
        with pytest.raises(ContainerNotFoundError):
            resolver.resolve(parse_container_id(container_id))
