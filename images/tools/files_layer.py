"""A layer from build files: `--file DEST=SOURCE` pairs (DEST relative to the image root).

Bazel passes the runfiles of the image's Python targets here. Contents are read through
symlinks; each file is root-owned, 0755 if its source is executable else 0644.

Every Python source also gets its bytecode, where the interpreter looks for it
(`__pycache__/NAME.cpython-311.pyc`). The containers' root filesystems are read-only, so
without it every start of the controller, fimd, each fimnotify engine and the PKI Job compiled
every module it imports again (about 1,700 files with the kubernetes package's models), which
delayed the controller's first probe answer by seconds on a busy node. The bytecode is
hash-checked (PEP 552): it carries the source's hash instead of a timestamp, so the layer is
reproducible, and Python recompiles in memory if a source ever differs. Compiled by the
interpreter running this tool: a base image with another Python minor version ignores the
files (another cache tag) instead of misreading them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import sys
import tempfile
from pathlib import Path, PurePosixPath

from images.tools.layer import write_layer
from images.tools.tarball import Entry, regular, with_parents


def file_entries(pairs: list[str]) -> list[Entry]:
    entries = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in pairs:
            dest, _, source = pair.partition("=")
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
            entries.append(regular(dest, Path(source).read_bytes(), mode))
            if dest.endswith(".py"):
                entries += bytecode(dest, source, Path(scratch) / "out.pyc")
    return with_parents(entries)


def bytecode(dest: str, source: str, scratch: Path) -> list[Entry]:
    """The hash-checked .pyc of `source` at the place Python looks for `dest`'s bytecode;
    none for a file that does not compile (importing it fails either way)."""
    cache = PurePosixPath(importlib.util.cache_from_source("/" + dest)).relative_to("/")
    try:
        py_compile.compile(
            source,
            cfile=str(scratch),
            dfile="/" + dest,  # the path tracebacks name inside the image
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
    except py_compile.PyCompileError as error:
        print(f"files_layer: {dest} left without bytecode: {error.msg}", file=sys.stderr)
        return []
    return [regular(str(cache), scratch.read_bytes(), 0o644)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], fromfile_prefix_chars="@")
    parser.add_argument("--mtime", type=int, required=True, help="SOURCE_DATE_EPOCH")
    parser.add_argument("--blob", type=Path, required=True)
    parser.add_argument("--descriptor", type=Path, required=True)
    parser.add_argument("pairs", nargs="*", metavar="DEST=SOURCE")
    args = parser.parse_args()
    write_layer(file_entries(args.pairs), args.mtime, args.blob, args.descriptor)


if __name__ == "__main__":
    main()
