"""The Debian base layer: `mmdebstrap --variant=extract` of pinned packages, normalized.

Run by Bazel (it needs the Debian mirror). The extract variant unpacks the packages and
their dependencies without running maintainer scripts, so there is no shell, no apt and no
package database. The tar is then rewritten deterministically (see tarball.py), device
nodes (the runtime provides /dev) and apt's empty state dirs are dropped, and the few files
a container needs that no package ships are added: passwd/group with the non-root user
and a world-writable /tmp. The resolved package versions are written next to the layer:
with the same versions the layer is bit-identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from images.tools.layer import write_layer
from images.tools.tarball import Entry, directory, regular, symlink

NONROOT_UID = 65532  # the conventional "nonroot" id of distroless images
DPKG_EXCLUDES = [
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
]
DROPPED_PREFIXES = ("dev/", "etc/apt/", "var/cache/apt/", "var/lib/apt/", "var/log/apt/")
PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/usr/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n"


def mmdebstrap(suite: str, sources: list[str], include: list[str], out: Path, debs: Path) -> None:
    command = ["mmdebstrap", "--quiet", "--variant=extract", f"--include={','.join(include)}"]
    command += [f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES]
    # The downloaded .deb names are the exact package versions the layer is made of.
    command.append(f'--extract-hook=ls "$1/var/cache/apt/archives" > {debs}')
    command += [suite, str(out), *sources]
    subprocess.run(command, check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "0"})


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> Entry | None:
    if member.isdir():
        return directory(path, member.mode, member.uid, member.gid)
    if member.issym():
        return symlink(path, member.linkname)
    if member.isfile() or member.islnk():
        # Hard links become copies: a sorted tar cannot promise the target comes first.
        source = tar.extractfile(member)
        assert source is not None
        return regular(path, source.read(), member.mode, member.uid, member.gid)
    return None  # device nodes and fifos: the container runtime provides /dev


def normalized_entries(rootfs_tar: Path) -> list[Entry]:
    entries = []
    with tarfile.open(rootfs_tar) as tar:
        for member in tar.getmembers():
            path = member.name.removeprefix("./").rstrip("/")
            if not path or (path + "/").startswith(DROPPED_PREFIXES):
                continue
            entry = _entry(tar, member, path)
            if entry is not None:
                entries.append(entry)
    return entries


def container_files() -> list[Entry]:
    return [
        regular("etc/passwd", PASSWD.encode()),
        regular("etc/group", GROUP.encode()),
        directory("tmp", 0o1777),
        directory("home/nonroot", 0o755, NONROOT_UID, NONROOT_UID),
    ]


def package_versions(debs_listing: str) -> str:
    """`name_version_arch.deb` lines -> sorted `name=version` lines (version URL-decoded)."""
    lines = []
    for name in debs_listing.split():
        if name.endswith(".deb"):
            package, version, _arch = name.removesuffix(".deb").split("_")
            lines.append(f"{package}={version.replace('%3a', ':')}")
    return "\n".join(sorted(lines)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--source", action="append", required=True, help="apt sources line")
    parser.add_argument("--include", action="append", required=True, help="Debian package")
    parser.add_argument("--mtime", type=int, required=True, help="SOURCE_DATE_EPOCH")
    parser.add_argument("--blob", type=Path, required=True)
    parser.add_argument("--descriptor", type=Path, required=True)
    parser.add_argument("--packages", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        raw, debs = Path(scratch, "rootfs.tar"), Path(scratch, "debs.txt")
        mmdebstrap(args.suite, args.source, args.include, raw, debs)
        entries = normalized_entries(raw) + container_files()
        args.packages.write_text(package_versions(debs.read_text()))
    # /tmp and passwd from container_files() replace whatever the packages shipped.
    unique = {entry.path: entry for entry in entries}
    write_layer(unique.values(), args.mtime, args.blob, args.descriptor)


if __name__ == "__main__":
    main()
