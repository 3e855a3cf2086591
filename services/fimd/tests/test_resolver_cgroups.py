"""Resolver against the real cgroups of this machine: each layout in the cgroup version it
belongs to, in the hierarchy the host really mounts (v1 controllers and/or the v2 tree)."""

import secrets
import uuid
from pathlib import Path

import pytest

from libs.k8s.container_id import parse_container_id
from services.fimd.resolver import ContainerNotFoundError, ProcResolver
from services.fimd.tests.cgroups import (
    UNIFIED,
    NotMountedError,
    cgroup,
    hierarchy_root,
    mounted,
    run_in,
    stop,
    wait_members,
)

# kind -> (cgroup version, hierarchy, cgroup path, containerID) of one kubelet/runtime layout.
LAYOUTS = {
    "besteffort": (1, "pids", "kubepods/besteffort/pod{uid}/{cid}", "containerd://{cid}"),
    "burstable": (1, "pids", "kubepods/burstable/pod{uid}/{cid}", "containerd://{cid}"),
    "guaranteed": (1, "pids", "kubepods/pod{uid}/{cid}", "containerd://{cid}"),
    "systemd": (
        1,
        "cpu",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{suid}.slice/"
        "cri-containerd-{cid}.scope",
        "containerd://{cid}",
    ),
    "crio": (1, "pids", "kubepods/besteffort/pod{uid}/crio-{cid}", "cri-o://{cid}"),
    "v2": (2, UNIFIED, "kubepods/burstable/pod{uid}/{cid}", "docker://{cid}"),
    "v2-systemd": (
        2,
        UNIFIED,
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{suid}.slice/"
        "cri-containerd-{cid}.scope",
        "containerd://{cid}",
    ),
}


def _host_versions() -> set[int]:
    """The cgroup versions this process is a member of, from /proc/self/cgroup (v1 lines
    name their hierarchy; the v2 line is `0::path`)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    return {2 if line.startswith("0::") else 1 for line in lines if line}


def test_the_hierarchies_found_are_the_ones_the_host_mounts() -> None:
    found = mounted()
    assert {version for _, version in found.values()} == _host_versions()
    for hierarchy, (point, version) in found.items():
        # A v1 hierarchy is a mount of its own; never a directory of the v2 tree.
        assert point.is_dir()
        assert version == (2 if hierarchy == UNIFIED else 1)
    sample = (
        "30 25 0:26 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n"
        "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "32 25 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
        "33 25 0:29 / /proc rw - proc proc rw\n"
    )
    assert mounted(sample) == {
        "pids": (Path("/sys/fs/cgroup/pids"), 1),
        "cpu": (Path("/sys/fs/cgroup/cpu,cpuacct"), 1),
        "cpuacct": (Path("/sys/fs/cgroup/cpu,cpuacct"), 1),
        UNIFIED: (Path("/sys/fs/cgroup"), 2),
    }


def test_this_host_exercises_every_version_it_mounts() -> None:
    """The layouts of every cgroup version the host runs are exercised below (none skipped):
    on a hybrid host such as this one, v1 layouts run in real v1 hierarchies."""
    runnable = set()
    for version, hierarchy, _, _ in LAYOUTS.values():
        try:
            if hierarchy_root(hierarchy)[1] == version:
                runnable.add(version)
        except NotMountedError:
            continue
    assert runnable == _host_versions()


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_resolves_a_real_process_tree_in_a_real_cgroup(kind: str) -> None:
    version, hierarchy, path_template, id_template = LAYOUTS[kind]
    try:
        root, mounted_version = hierarchy_root(hierarchy)
    except NotMountedError as err:
        pytest.skip(f"cgroup v{version} layout: {err}")
    assert mounted_version == version, f"{hierarchy} at {root} is v{mounted_version}"
    cid = secrets.token_hex(32)
    uid = str(uuid.uuid4())
    path = path_template.format(uid=uid, suid=uid.replace("-", "_"), cid=cid)
    container_id = parse_container_id(id_template.format(cid=cid))
    resolver = ProcResolver()
    with cgroup(hierarchy, path) as directory:
        assert directory.is_relative_to(root)
        proc = run_in([directory], "sleep 60 & sleep 60 & wait")
        try:
            members = wait_members(directory, 3)
            line = next(
                x for x in Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines() if cid in x
            )
            # The process really is in a cgroup of this version.
            assert line.startswith("0::") == (version == 2)
            assert resolver.resolve(container_id).pid == proc.pid
            assert resolver.members(container_id) == members
        finally:
            stop(proc, directory)
        with pytest.raises(ContainerNotFoundError):
            resolver.resolve(container_id)
    assert not directory.exists()
