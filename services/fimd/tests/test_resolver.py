"""Resolver on a fake /proc tree: every cgroup layout, init selection, near misses."""

from pathlib import Path

import pytest

from libs.k8s.container_id import parse_container_id
from services.fimd.resolver import ContainerNotFoundError, ProcResolver, Target, in_cgroup

ID = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
UID = "6f1c1c8e-3d1e-4c8a-9b0e-2f8a1b2c3d4e"
SUID = UID.replace("-", "_")

V1_HEAD = "12:pids:{path}\n11:memory:{path}\n1:name=systemd:/\n0::/\n"
V2 = "0::{path}\n"


def _proc(tmp_path: Path, procs: dict[int, tuple[int, str]]) -> ProcResolver:
    """procs: pid -> (ppid, /proc/<pid>/cgroup text)."""
    for pid, (ppid, cgroup) in procs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(cgroup)
        rest = " ".join(["S", str(ppid)] + ["0"] * 17 + ["4242"] + ["0"] * 10)
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (we ird) name) {rest}\n")
    (tmp_path / "self").mkdir()
    return ProcResolver(str(tmp_path))


@pytest.mark.parametrize(
    ("container_id", "cgroup"),
    [
        (f"containerd://{ID}", V1_HEAD.format(path=f"/kubepods/besteffort/pod{UID}/{ID}")),
        (f"containerd://{ID}", V1_HEAD.format(path=f"/kubepods/burstable/pod{UID}/{ID}")),
        (f"containerd://{ID}", V1_HEAD.format(path=f"/kubepods/pod{UID}/{ID}")),
        (
            f"containerd://{ID}",
            V1_HEAD.format(
                path="/kubepods.slice/kubepods-besteffort.slice/"
                f"kubepods-besteffort-pod{SUID}.slice/cri-containerd-{ID}.scope"
            ),
        ),
        (
            f"cri-o://{ID}",
            V2.format(path=f"/kubepods.slice/kubepods-pod{SUID}.slice/crio-{ID}.scope/container"),
        ),
        (f"cri-o://{ID}", V1_HEAD.format(path=f"/kubepods/burstable/pod{UID}/crio-{ID}")),
        (f"docker://{ID}", V2.format(path=f"/kubepods/besteffort/pod{UID}/{ID}")),
        (
            f"docker://{ID}",
            V2.format(path=f"/kubepods.slice/kubepods-pod{SUID}.slice/docker-{ID}.scope"),
        ),
    ],
)
def test_resolves_every_layout_to_the_containers_init(
    tmp_path: Path, container_id: str, cgroup: str
) -> None:
    resolver = _proc(
        tmp_path,
        {
            1: (0, V1_HEAD.format(path="/")),
            700: (650, cgroup),  # the container's init: parent is the shim, outside
            701: (700, cgroup),
            650: (1, V1_HEAD.format(path="/system")),
        },
    )
    assert resolver.resolve(parse_container_id(container_id)) == Target(700, 4242)
    assert resolver.members(parse_container_id(container_id)) == [700, 701]
    assert resolver.resolve_many([parse_container_id(container_id)]) == {
        parse_container_id(container_id): Target(700, 4242)
    }


def test_init_is_deterministic_when_several_parents_are_outside(tmp_path: Path) -> None:
    cgroup = V2.format(path=f"/kubepods/pod{UID}/{ID}")
    # 900 entered the cgroup through `exec` into the container (parent outside too).
    resolver = _proc(tmp_path, {900: (1, cgroup), 800: (1, cgroup), 801: (800, cgroup)})
    assert resolver.resolve(parse_container_id(f"containerd://{ID}")).pid == 800


def test_many_containers_in_one_scan(tmp_path: Path) -> None:
    resolver = _proc(
        tmp_path,
        {
            30: (1, V2.format(path=f"/kubepods/pod{UID}/{ID}")),
            31: (1, V2.format(path=f"/kubepods/pod{UID}/{OTHER}")),
        },
    )
    ids = [parse_container_id(f"containerd://{i}") for i in (ID, OTHER, "ab" * 32)]
    assert resolver.resolve_many(ids) == {ids[0]: Target(30, 4242), ids[1]: Target(31, 4242)}


def test_near_misses_are_not_the_container(tmp_path: Path) -> None:
    resolver = _proc(
        tmp_path,
        {
            10: (1, V2.format(path=f"/kubepods.slice/crio-conmon-{ID}.scope")),
            11: (1, V2.format(path=f"/kubepods/pod{UID}/{ID}x")),
            12: (1, V2.format(path=f"/kubepods/pod{UID}/{OTHER}")),
            13: (1, V2.format(path=f"/kubepods/pod{UID}/crio-{ID}")),  # CRI-O name, containerd ID
        },
    )
    with pytest.raises(ContainerNotFoundError, match=f"containerd://{ID}"):
        resolver.resolve(parse_container_id(f"containerd://{ID}"))


def test_process_gone_between_scan_and_stat(tmp_path: Path) -> None:
    resolver = _proc(tmp_path, {20: (1, V2.format(path=f"/kubepods/pod{UID}/{ID}"))})
    (tmp_path / "20" / "stat").unlink()
    with pytest.raises(ContainerNotFoundError):
        resolver.resolve(parse_container_id(f"containerd://{ID}"))


def test_in_cgroup_matches_whole_components_only() -> None:
    assert in_cgroup(f"0::/a/{ID}/sub\n", {ID})
    assert not in_cgroup(f"0::/a/x{ID}\n", {ID})


def test_a_resolution_is_reused_only_while_it_is_the_same_process(tmp_path: Path) -> None:
    path = V1_HEAD.format(path=f"/kubepods/besteffort/pod{UID}/{ID}")
    resolver = _proc(tmp_path, {300: (1, path), 301: (300, path), 400: (1, V2.format(path="/"))})
    cid = parse_container_id(f"containerd://{ID}")
    assert resolver.resolve(cid) == Target(300, 4242)
    # A new member appears with a lower PID: the remembered init is still alive and valid,
    # so it is reused without scanning (a scan would now pick 200).
    (tmp_path / "200").mkdir()
    (tmp_path / "200" / "cgroup").write_text(path)
    rest = " ".join(["S", "1"] + ["0"] * 17 + ["4242"] + ["0"] * 10)
    (tmp_path / "200" / "stat").write_text(f"200 (init) {rest}\n")
    assert resolver.resolve(cid) == Target(300, 4242)
    # The remembered PID now is another process (start time changed): scan again.
    stat = (tmp_path / "300" / "stat").read_text().replace(" 4242 ", " 9999 ")
    (tmp_path / "300" / "stat").write_text(stat)
    assert resolver.resolve(cid) == Target(200, 4242)
    # It left the container's cgroup: scan again; it is gone altogether: not found.
    (tmp_path / "200" / "cgroup").write_text(V2.format(path="/elsewhere"))
    assert resolver.resolve(cid).pid == 300
    for pid in ("300", "301"):
        (tmp_path / pid / "cgroup").write_text(V2.format(path="/elsewhere"))
    with pytest.raises(ContainerNotFoundError):
        resolver.resolve(cid)


def test_one_scan_resolves_every_container_of_the_node(tmp_path: Path) -> None:
    a, b, c = ("a1" * 32, "b2" * 32, "c3" * 32)
    cg = {x: V1_HEAD.format(path=f"/kubepods/besteffort/pod{UID}/{x}") for x in (a, b, c)}
    resolver = _proc(tmp_path, {500: (1, cg[a]), 600: (1, cg[b])})
    now = [100.0]
    resolver._clock = lambda: now[0]
    scans = []
    real_scan = resolver._scan

    def counting_scan() -> dict[str, list[tuple[int, str]]]:
        scans.append(now[0])
        return real_scan()

    resolver._scan = counting_scan  # type: ignore[method-assign]
    assert resolver.resolve(parse_container_id(f"containerd://{a}")).pid == 500
    assert resolver.resolve(parse_container_id(f"containerd://{b}")).pid == 600
    assert len(scans) == 1
    # A container that started after the scan is not in it: scanned for, within the TTL too.
    (tmp_path / "700").mkdir()
    (tmp_path / "700" / "cgroup").write_text(cg[c])
    (tmp_path / "700" / "stat").write_text((tmp_path / "600" / "stat").read_text())
    now[0] += 0.5
    assert resolver.resolve(parse_container_id(f"containerd://{c}")).pid == 700
    assert len(scans) == 2
