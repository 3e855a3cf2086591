"""The baseline walk on real files: a temporary directory is the container root."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from libs.rootfs.walk import Entry, Rules, walk


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    top = tmp_path / "root"
    for d in ("etc/app/conf.d/deep", "etc/app/.git", "var"):
        (top / d).mkdir(parents=True)
    (top / "etc/app/main.conf").write_bytes(b"main")
    (top / "etc/app/conf.d/a.conf").write_bytes(b"a")
    (top / "etc/app/conf.d/deep/b.conf").write_bytes(b"b")
    (top / "etc/app/.git/HEAD").write_bytes(b"ref")
    (top / "etc/app/link").symlink_to("/var")
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield top, fd
    os.close(fd)


def _paths(result: dict[bytes, Entry]) -> set[str]:
    return {p.decode() for p in result}


def test_a_directory_and_its_entries(root: tuple[Path, int]) -> None:
    _, fd = root
    result = walk(fd, [b"/etc/app"], Rules())
    assert _paths(result.entries) == {
        "/etc/app", "/etc/app/main.conf", "/etc/app/conf.d", "/etc/app/.git", "/etc/app/link",
    }  # fmt: skip
    assert result.entries[b"/etc/app"].kind == "dir"
    assert result.entries[b"/etc/app/link"].kind == "symlink"  # an entry, never followed
    assert result.entries[b"/etc/app/main.conf"].kind == "file"
    assert result.entries[b"/etc/app/main.conf"].size == 4
    assert result.entries[b"/etc/app/main.conf"].sha256 == ""  # no hash asked for
    assert not result.truncated
    assert result.errors == 0


def test_recursive_with_depth_ignore_and_hash(root: tuple[Path, int]) -> None:
    _, fd = root
    rules = Rules(recursive=True, max_depth=1, ignore=(".git",), hash_content=True)
    result = walk(fd, [b"/etc/app"], rules)
    assert _paths(result.entries) == {
        "/etc/app", "/etc/app/main.conf", "/etc/app/conf.d", "/etc/app/conf.d/a.conf",
        "/etc/app/conf.d/deep", "/etc/app/link",
    }  # fmt: skip
    assert result.entries[b"/etc/app/conf.d/a.conf"].sha256 == hashlib.sha256(b"a").hexdigest()
    unlimited = walk(fd, [b"/etc/app"], attrs.evolve(rules, max_depth=0))
    assert b"/etc/app/conf.d/deep/b.conf" in unlimited.entries


def test_a_configured_file_and_a_missing_path(root: tuple[Path, int]) -> None:
    _, fd = root
    result = walk(fd, [b"/etc/app/main.conf", b"/nothing"], Rules(hash_content=True))
    assert _paths(result.entries) == {"/etc/app/main.conf"}
    assert walk(fd, [b"/etc/app/main.conf"], Rules(only_dir=True)).entries == {}


def test_a_configured_symlink_is_resolved_inside_the_root(
    tmp_path: Path, root: tuple[Path, int]
) -> None:
    top, fd = root
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(b"host")
    (top / "escape").symlink_to(host)
    assert walk(fd, [b"/escape"], Rules(recursive=True)).entries == {}
    (top / "conf").symlink_to("../../../etc/app/conf.d")  # ".." stops at the root
    result = walk(fd, [b"/conf"], Rules())
    assert _paths(result.entries) == {"/conf", "/conf/a.conf", "/conf/deep"}


def test_the_entry_cap_truncates(root: tuple[Path, int]) -> None:
    _, fd = root
    result = walk(fd, [b"/etc/app"], Rules(recursive=True, max_entries=3))
    assert len(result.entries) == 3
    assert result.truncated


def test_an_unchanged_file_reuses_its_known_hash(root: tuple[Path, int]) -> None:
    _, fd = root
    rules = Rules(hash_content=True)
    first = walk(fd, [b"/etc/app/main.conf"], rules).entries[b"/etc/app/main.conf"]
    marked = attrs.evolve(first, sha256="cd" * 32)
    again = walk(fd, [b"/etc/app/main.conf"], rules, {b"/etc/app/main.conf": marked}.get)
    assert again.entries[b"/etc/app/main.conf"].sha256 == "cd" * 32
