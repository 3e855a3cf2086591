"""Assembles layers into an image: an OCI image layout directory and a docker-archive tar.

Every JSON document is serialized canonically (sorted keys, no whitespace) and `created`
is the fixed SOURCE_DATE_EPOCH, so the manifest digest (the image digest) depends only on
the layers and the configuration. The docker-archive holds the same config and the
uncompressed layers (what `docker load`, `kind load image-archive` and `ctr images import`
expect); its image ID equals the OCI config digest.
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from images.tools.layer import Descriptor, read_descriptor
from images.tools.tarball import regular, sha256_digest, write_tar

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    blob: Path


@dataclass(frozen=True)
class Settings:
    name: str  # repository:tag, e.g. localhost/fim-k8s/fimd:dev
    entrypoint: list[str]
    env: list[str]
    user: str
    workdir: str
    labels: dict[str, str]
    mtime: int


def canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def image_config(layers: list[Layer], settings: Settings) -> bytes:
    created = datetime.fromtimestamp(settings.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {
                "Entrypoint": settings.entrypoint,
                "Env": settings.env,
                "User": settings.user,
                "WorkingDir": settings.workdir,
                "Labels": settings.labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [lay.descriptor.diff_id for lay in layers]},
        }
    )


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest(config: bytes, layers: list[Layer]) -> bytes:
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": _descriptor(CONFIG_TYPE, sha256_digest(config), len(config)),
            "layers": [
                _descriptor(LAYER_TYPE, layer.descriptor.digest, layer.descriptor.size)
                for layer in layers
            ],
        }
    )


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def write_oci_layout(layout: Path, layers: list[Layer], config: bytes, name: str) -> str:
    """Writes the layout; returns the image (manifest) digest."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    image_manifest = manifest(config, layers)
    for data in (config, image_manifest):
        _blob_path(layout, sha256_digest(data)).write_bytes(data)
    for layer in layers:
        _blob_path(layout, layer.descriptor.digest).write_bytes(layer.blob.read_bytes())
    digest = sha256_digest(image_manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_TYPE,
                "digest": digest,
                "size": len(image_manifest),
                # ref.name is the tag (skopeo/umoci `oci:DIR:TAG`); containerd reads the full name.
                "annotations": {
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    "io.containerd.image.name": name,
                },
            }
        ],
    }
    (layout / "index.json").write_bytes(canonical(index))
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    return digest


def docker_archive(layers: list[Layer], config: bytes, name: str, mtime: int) -> bytes:
    config_name = sha256_digest(config).removeprefix("sha256:") + ".json"
    entries = [regular(config_name, config)]
    layer_names = []
    for layer in layers:
        layer_name = layer.descriptor.diff_id.removeprefix("sha256:") + ".tar"
        if layer_name not in layer_names:
            entries.append(regular(layer_name, gzip.decompress(layer.blob.read_bytes())))
        layer_names.append(layer_name)
    docker_manifest = [{"Config": config_name, "RepoTags": [name], "Layers": layer_names}]
    entries.append(regular("manifest.json", canonical(docker_manifest)))
    return write_tar(entries, mtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], fromfile_prefix_chars="@")
    parser.add_argument("--layer", action="append", required=True, help="DESCRIPTOR=BLOB")
    parser.add_argument("--name", required=True, help="repository:tag")
    parser.add_argument("--entrypoint", required=True, help="JSON list")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--user", required=True)
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--mtime", type=int, required=True, help="SOURCE_DATE_EPOCH")
    parser.add_argument("--oci-layout", type=Path, required=True)
    parser.add_argument("--docker-archive", type=Path, required=True)
    parser.add_argument("--digest", type=Path, required=True, help="writes the image digest")
    args = parser.parse_args()
    layers = []
    for pair in args.layer:
        descriptor, _, blob = pair.partition("=")
        layers.append(Layer(read_descriptor(Path(descriptor)), Path(blob)))
    settings = Settings(
        name=args.name,
        entrypoint=json.loads(args.entrypoint),
        env=args.env,
        user=args.user,
        workdir=args.workdir,
        labels=dict(label.split("=", 1) for label in args.label),
        mtime=args.mtime,
    )
    config = image_config(layers, settings)
    digest = write_oci_layout(args.oci_layout, layers, config, args.name)
    args.docker_archive.write_bytes(docker_archive(layers, config, args.name, args.mtime))
    args.digest.write_text(digest + "\n")


if __name__ == "__main__":
    main()
