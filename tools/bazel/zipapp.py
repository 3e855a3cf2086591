"""Packs Python sources into one executable zipapp (a zip file with a shebang line).

    zipapp.py --output OUT --main PATH [--shebang '#!/usr/bin/env python3'] SRC...

Each SRC is stored under its workspace-relative path (the import path of its module); MAIN
is stored again as the archive's `__main__.py`. The output is reproducible: entries sorted,
fixed timestamps and modes, so the same sources give the same bytes. Standard library only.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import sys
import zipfile

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build(sources: list[str], main: str) -> bytes:
    """The zip archive's bytes: every source under its path, plus `main` as __main__.py."""
    if main not in sources:
        raise ValueError(f"--main {main} is not among the sources")
    entries: dict[str, str] = {}
    for path in sources:
        if not path.endswith(".py") or path.startswith(("/", "..")):
            raise ValueError(f"{path}: expected a relative .py path")
        entries[path] = path
    entries["__main__.py"] = main
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            with open(entries[name], "rb") as f:
                archive.writestr(_entry(name), f.read())
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--main", required=True)
    parser.add_argument("--shebang", default="#!/usr/bin/env python3")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args(argv)
    try:
        archive = build(args.sources, args.main)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    with open(args.output, "wb") as f:
        f.write(args.shebang.encode() + b"\n" + archive)
    os.chmod(args.output, 0o755)  # noqa: S103 (an executable for everyone, like /usr/bin)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
