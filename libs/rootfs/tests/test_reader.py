"""The root-confined file reader on real files: a temporary directory is the container root."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from libs.rootfs.reader import FileState, NotRegular, read_state


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    top = tmp_path / "root"
    top.mkdir()
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield top, fd
    os.close(fd)


def test_a_regular_file_gets_its_attributes_and_sha256(root: tuple[Path, int]) -> None:
    top, fd = root
    (top / "etc").mkdir()
    data = b"hello\n" * 1000
    (top / "etc" / "app.conf").write_bytes(data)
    os.chmod(top / "etc" / "app.conf", 0o2640)
    st = os.stat(top / "etc" / "app.conf")

    state = read_state(fd, b"/etc/app.conf", hash_content=True)

    assert isinstance(state, FileState)
    assert state.sha256 == hashlib.sha256(data).hexdigest()
    assert (state.size, stat.S_IMODE(state.mode), state.uid, state.gid) == (
        6000,
        0o2640,
        os.getuid(),
        os.getgid(),
    )
    assert state.mtime_ns == st.st_mtime_ns
    assert not state.skipped


def test_without_hash_only_the_attributes_are_read(root: tuple[Path, int]) -> None:
    top, fd = root
    (top / "f").write_bytes(b"abc")
    state = read_state(fd, b"/f", hash_content=False)
    assert isinstance(state, FileState)
    assert (state.size, state.sha256, state.skipped) == (3, "", "")


def test_a_file_over_the_cap_is_not_hashed_and_says_why(root: tuple[Path, int]) -> None:
    top, fd = root
    (top / "big").write_bytes(b"x" * 101)
    (top / "small").write_bytes(b"x" * 100)

    big = read_state(fd, b"/big", hash_content=True, max_bytes=100)
    small = read_state(fd, b"/small", hash_content=True, max_bytes=100)

    assert isinstance(big, FileState)
    assert big.sha256 == ""
    assert big.skipped == "size 101 is over the cap 100"
    assert big.size == 101
    assert isinstance(small, FileState)
    assert small.sha256 == hashlib.sha256(b"x" * 100).hexdigest()


def test_an_absolute_symlinked_parent_stays_inside_the_root(
    tmp_path: Path, root: tuple[Path, int]
) -> None:
    top, fd = root
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(b"host secret")
    (top / "escape").symlink_to(host)  # absolute: "/<tmp>/host" names a host directory
    (top / "up").symlink_to("../../../../../host")  # ".." stops at the container root

    assert read_state(fd, b"/escape/secret", hash_content=True) == NotRegular("missing")
    assert read_state(fd, b"/up/secret", hash_content=True) == NotRegular("missing")
    # The same absolute path inside the root is what the container means by it.
    inside = top / str(host).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "secret").write_bytes(b"container file")
    state = read_state(fd, b"/escape/secret", hash_content=True)
    assert isinstance(state, FileState)
    assert state.sha256 == hashlib.sha256(b"container file").hexdigest()


def test_a_symlink_itself_is_not_followed(tmp_path: Path, root: tuple[Path, int]) -> None:
    top, fd = root
    (top / "target").write_bytes(b"t")
    (top / "link").symlink_to("/target")
    assert read_state(fd, b"/link", hash_content=True) == NotRegular("a symlink")
    assert read_state(fd, b"/", hash_content=True) == NotRegular("a directory")
    assert read_state(fd, b"/nothing/here", hash_content=True) == NotRegular("missing")
    assert read_state(fd, b"/target/below", hash_content=True) == NotRegular("missing")


def test_procfs_magic_links_are_refused() -> None:
    """With the host's "/" as the root, /proc/self/root is a magic link: never followed."""
    host_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        assert os.path.exists("/proc/self/root/proc/self/stat")  # it would lead somewhere
        refused = read_state(host_root, b"/proc/self/root/proc/self/stat", hash_content=True)
        assert refused == NotRegular("ELOOP")
        fd_link = read_state(
            host_root, f"/proc/self/fd/{host_root}/etc".encode(), hash_content=False
        )
        assert fd_link == NotRegular("ELOOP")
    finally:
        os.close(host_root)


def test_a_fifo_is_never_opened(root: tuple[Path, int]) -> None:
    """Opening a FIFO for reading would block until a writer comes: it is not opened."""
    top, fd = root
    os.mkfifo(top / "pipe")
    assert read_state(fd, b"/pipe", hash_content=True) == NotRegular("not a regular file")


def _atime_updates(path: Path) -> bool:
    """Whether reading `path` (atime older than mtime) updates atime on this filesystem."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_mtime_ns - 86_400 * 10**9, st.st_mtime_ns))
    path.read_bytes()
    return os.stat(path).st_atime_ns != st.st_mtime_ns - 86_400 * 10**9


def test_hashing_does_not_change_atime(root: tuple[Path, int]) -> None:
    top, fd = root
    path = top / "data"
    path.write_bytes(b"d" * 4096)
    if not _atime_updates(path):
        pytest.skip("this filesystem does not update atime on read (noatime mount)")
    st = os.stat(path)
    old_atime = st.st_mtime_ns - 86_400 * 10**9
    os.utime(path, ns=(old_atime, st.st_mtime_ns))

    state = read_state(fd, b"/data", hash_content=True)

    assert isinstance(state, FileState)
    assert state.sha256 == hashlib.sha256(b"d" * 4096).hexdigest()
    assert state.noatime
    assert os.stat(path).st_atime_ns == old_atime


def test_an_unchanged_file_reuses_the_known_hash(root: tuple[Path, int]) -> None:
    top, fd = root
    path = top / "f"
    path.write_bytes(b"one")
    first = read_state(fd, b"/f", hash_content=True)
    assert isinstance(first, FileState)
    marked = attrs.evolve(first, sha256="ab" * 32)  # proves the file was not read again

    again = read_state(fd, b"/f", hash_content=True, known=marked)

    assert isinstance(again, FileState)
    assert again.sha256 == "ab" * 32
    path.write_bytes(b"two")
    later = first.mtime_ns + 10**9  # a different mtime whatever the clock's granularity
    os.utime(path, ns=(later, later))
    changed = read_state(fd, b"/f", hash_content=True, known=marked)
    assert isinstance(changed, FileState)
    assert changed.sha256 == hashlib.sha256(b"two").hexdigest()
