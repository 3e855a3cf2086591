"""A layer from build files: `--file DEST=SOURCE` pairs (DEST relative to the image root).

Bazel passes the runfiles of the image's Python targets here. Contents are read through
symlinks; each file is root-owned, 0755 if its source is executable else 0644.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from images.tools.layer import write_layer
from images.tools.tarball import Entry, regular, with_parents


def file_entries(pairs: list[str]) -> list[Entry]:
    entries = []
    for pair in pairs:
        dest, _, source = pair.partition("=")
        mode = 0o755 if os.access(source, os.X_OK) else 0o644
        entries.append(regular(dest, Path(source).read_bytes(), mode))
    return with_parents(entries)


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
