"""Two independent builds of every image (mmdebstrap included) give identical bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

IMAGES = Path("images")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _layout(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file of an OCI layout directory."""
    return {str(f.relative_to(path)): _sha256(f) for f in path.rglob("*") if f.is_file()}


@pytest.mark.parametrize("image", ["controller", "fimd", "fimnotify"])
def test_image_digest_and_archives_identical(image: str) -> None:
    digest = (IMAGES / f"{image}.digest").read_text()
    assert digest.startswith("sha256:")
    assert digest == (IMAGES / f"{image}_rebuild.digest").read_text()
    assert _layout(IMAGES / f"{image}.oci") == _layout(IMAGES / f"{image}_rebuild.oci")
    assert _sha256(IMAGES / f"{image}.tar") == _sha256(IMAGES / f"{image}_rebuild.tar")


@pytest.mark.parametrize("suffix", [".tar.gz", ".json", ".packages.txt"])
def test_debian_layer_and_package_versions_identical(suffix: str) -> None:
    assert _sha256(IMAGES / f"debian{suffix}") == _sha256(IMAGES / f"debian_rebuild{suffix}")
