"""Builds the images into `${FIM_CACHE:-/var/cache/fim-k8s}/images/<name>.tar`.

    python -m images.build [pause] [workload] [otelcol]      (default: all)

Each tar is both an OCI layout and a docker archive (see images.oci); the manifest digest
of each image is printed and written next to it (`<name>.digest`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from images.base import otelcol_image, pause_image, workload_image
from images.oci import Image

BUILDERS: dict[str, Callable[[], Image]] = {
    "pause": pause_image,
    "workload": workload_image,
    "otelcol": otelcol_image,
}


def image_dir() -> Path:
    return Path(os.environ.get("FIM_CACHE") or "/var/cache/fim-k8s") / "images"


def build(name: str, out_dir: Path) -> str:
    """Builds one image into out_dir; returns its manifest digest."""
    started = time.monotonic()
    image = BUILDERS[name]()
    digest = image.write_archive(out_dir / f"{name}.tar")
    (out_dir / f"{name}.digest").write_text(f"{image.name} {digest}\n")
    size = (out_dir / f"{name}.tar").stat().st_size
    print(
        f"[images] {name}: {image.name} {digest} ({size / 1e6:.1f} MB, "
        f"{time.monotonic() - started:.1f} s)",
        flush=True,
    )
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.build", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BUILDERS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown images: {', '.join(sorted(unknown))}")
    for name in args.names or BUILDERS:
        build(name, args.out or image_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
