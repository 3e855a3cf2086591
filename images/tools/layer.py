"""A layer on disk: its gzipped tar plus a descriptor JSON with the digests OCI needs.

The descriptor (`diff_id` of the uncompressed tar, `digest` and `size` of the gzip) lets
the assembler write manifests without re-reading or re-hashing the layer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from images.tools.tarball import Entry, gzip_bytes, sha256_digest, write_tar


@dataclass(frozen=True)
class Descriptor:
    diff_id: str  # sha256 of the uncompressed tar (image config rootfs.diff_ids)
    digest: str  # sha256 of the gzipped blob (manifest layers[].digest)
    size: int  # bytes of the gzipped blob


def write_layer(entries: Iterable[Entry], mtime: int, blob: Path, descriptor: Path) -> Descriptor:
    tar = write_tar(entries, mtime)
    compressed = gzip_bytes(tar)
    blob.write_bytes(compressed)
    result = Descriptor(sha256_digest(tar), sha256_digest(compressed), len(compressed))
    descriptor.write_text(json.dumps(asdict(result), sort_keys=True) + "\n")
    return result


def read_descriptor(path: Path) -> Descriptor:
    fields = json.loads(path.read_text())
    return Descriptor(fields["diff_id"], fields["digest"], fields["size"])
