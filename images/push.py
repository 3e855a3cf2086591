"""Pushes the Bazel-built service images to a registry by digest, and pins kustomize overlays
to the pushed digests (so nobody writes a digest by hand).

    python3 -m images.push REGISTRY [--images-dir bazel-bin/images] [--tag TAG]
        [--write-images deploy/overlays/production/kustomization.yaml]
        [--pin OVERLAY_DIR --out DIR --kubectl KUBECTL] [--no-push]

Each image goes to `REGISTRY/fim-k8s/<name>@sha256:<digest>` (and `:<TAG>` too with --tag)
from its OCI layout `<name>.oci` with `skopeo copy --preserve-digests`; the digest is the one
Bazel wrote into `<name>.digest`, and the registry's own answer (skopeo's --digestfile) must
equal it, else the push fails. TLS is verified except for registries on the loopback
(127.0.0.0/8, localhost): the local cluster's registry speaks plain HTTP.

`--write-images FILE` replaces the `images:` block of a kustomization (comments elsewhere
kept) with `newName` + `digest` per image: what `tools/release.sh` does to the production
overlay. `--pin OVERLAY --out DIR` writes `DIR/kustomization.yaml`, a kustomization whose only
resource is OVERLAY and which sets every fim-k8s image of it to the pushed digest (and
imagePullPolicy IfNotPresent): what the e2e harness and the demo apply, since the digests
of a code change cannot be committed. `--no-push` writes the built digests without pushing
(a digest does not depend on the registry). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The images a deployment runs: Bazel target name -> the image name in deploy/base.
SERVICE_IMAGES = {"controller": "fim-controller", "fimd": "fimd"}
REPOSITORY_PREFIX = "fim-k8s"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The workload kinds of deploy/base and the path of their (single) container.
_POD_CONTAINER = {
    "Deployment": "/spec/template/spec/containers/0",
    "DaemonSet": "/spec/template/spec/containers/0",
    "Job": "/spec/template/spec/containers/0",
    "CronJob": "/spec/jobTemplate/spec/template/spec/containers/0",
}
_BEGIN = (
    "# images: written by images/push.py (tools/release.sh) from the pushed digests; do not edit"
)


class PushError(RuntimeError):
    """skopeo failed, or the registry holds a different digest than the one built."""


@dataclass(frozen=True)
class Pushed:
    """One image in the registry: `repository@digest` is what a pod runs."""

    name: str  # controller, fimd
    repository: str  # e.g. 127.0.0.1:5000/fim-k8s/fimd
    digest: str  # sha256:...

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def insecure(registry: str) -> bool:
    """Plain HTTP (no TLS verification) only for registries on this machine's loopback."""
    host = registry.split("/", 1)[0].rsplit(":", 1)[0]
    return host == "localhost" or host.startswith("127.")


def built_digest(images_dir: Path, name: str) -> str:
    """The manifest digest Bazel wrote for the image (`<name>.digest`)."""
    text = (images_dir / f"{name}.digest").read_text()
    found = _DIGEST.search(text)
    if found is None:
        raise PushError(f"no sha256 digest in {images_dir / f'{name}.digest'}: {text!r}")
    return found.group(0)


def repository(registry: str, name: str) -> str:
    return f"{registry.rstrip('/')}/{REPOSITORY_PREFIX}/{name}"


def planned(registry: str, images_dir: Path, name: str) -> Pushed:
    """The image as a push to REGISTRY would give it (its digest does not depend on where it
    is pushed: --preserve-digests), without pushing."""
    return Pushed(name, repository(registry, name), built_digest(images_dir, name))


def push(
    registry: str,
    images_dir: Path,
    name: str,
    *,
    tag: str = "",
    skopeo: str = "skopeo",
) -> Pushed:
    """Pushes `<images_dir>/<name>.oci` to REGISTRY/fim-k8s/<name> by its digest."""
    image = planned(registry, images_dir, name)
    layout = f"oci:{images_dir / f'{name}.oci'}"
    tls = f"--dest-tls-verify={'false' if insecure(registry) else 'true'}"
    destinations = [image.reference] + ([f"{image.repository}:{tag}"] if tag else [])
    for destination in destinations:
        with tempfile.TemporaryDirectory() as scratch:
            digest_file = Path(scratch) / "digest"
            argv = [
                skopeo,
                "copy",
                "--quiet",
                "--preserve-digests",
                tls,
                f"--digestfile={digest_file}",
                layout,
                f"docker://{destination}",
            ]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise PushError(f"{' '.join(argv)}: {done.stderr.strip()}")
            pushed = digest_file.read_text().strip()
        if pushed != image.digest:
            raise PushError(f"{destination}: the registry has {pushed}, Bazel built {image.digest}")
    return image


def push_all(
    registry: str, images_dir: Path, *, tag: str = "", skopeo: str = "skopeo"
) -> list[Pushed]:
    return [push(registry, images_dir, name, tag=tag, skopeo=skopeo) for name in SERVICE_IMAGES]


def images_block(pushed: list[Pushed]) -> str:
    """The kustomization `images:` block pinning base image names to the pushed digests."""
    lines = [_BEGIN, "images:"]
    for image in pushed:
        lines += [
            f"  - name: {SERVICE_IMAGES[image.name]}",
            f"    newName: {image.repository}",
            f"    digest: {image.digest}",
        ]
    return "\n".join(lines) + "\n"


def write_images(kustomization: Path, pushed: list[Pushed]) -> None:
    """Replaces the top-level `images:` block (and the marker comment above it) of a
    kustomization.yaml with the pushed digests; everything else stays byte for byte."""
    lines = kustomization.read_text().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "images:"), None)
    if start is None:
        raise PushError(f"{kustomization}: no top-level `images:` block to replace")
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "-", "#")) or not lines[end].strip()):
        end += 1
    if start > 0 and lines[start - 1].rstrip() == _BEGIN:
        start -= 1
    text = "".join(lines[:start]) + images_block(pushed) + "".join(lines[end:])
    tmp = kustomization.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(kustomization)


def overlay_images(overlay: Path, kubectl: str) -> list[str]:
    """The image names (without tag or digest) the overlay renders, via `kubectl kustomize`."""
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    names = set()
    for image in re.findall(r"^\s*(?:-\s+)?image:\s*(\S+)\s*$", out, re.MULTILINE):
        name = image.split("@", 1)[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        names.add(name.strip("'\""))
    return sorted(names)


def pin(overlay: Path, out_dir: Path, pushed: list[Pushed], kubectl: str) -> Path:
    """Writes out_dir/kustomization.yaml: OVERLAY as its resource, every fim-k8s image of it
    (matched by the last part of its name: controller or fim-controller, fimd) set to the
    pushed repository and digest, pulled IfNotPresent. Returns out_dir."""
    by_short = {
        short: image for image in pushed for short in (image.name, SERVICE_IMAGES[image.name])
    }
    found: dict[str, Pushed] = {}
    for name in overlay_images(overlay, kubectl):
        image = by_short.get(name.rsplit("/", 1)[-1])
        if image is not None:
            found[name] = image
    missing = {image.name for image in pushed} - {image.name for image in found.values()}
    if missing:
        raise PushError(f"{overlay} renders no image for {', '.join(sorted(missing))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Generated by images/push.py: the overlay below, pinned to the pushed digests.",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        f"  - {os.path.relpath(overlay, out_dir)}",
        "images:",
    ]
    for name, image in sorted(found.items()):
        lines += [
            f"  - name: {name}",
            f"    newName: {image.repository}",
            f"    digest: {image.digest}",
        ]
    lines.append("patches:")
    for kind, container in _POD_CONTAINER.items():
        lines += [
            f"  - target: {{kind: {kind}}}",
            "    patch: |-",
            "      - op: add",
            f"        path: {container}/imagePullPolicy",
            "        value: IfNotPresent",
        ]
    (out_dir / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m images.push",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("registry", help="host[:port][/path], e.g. 127.0.0.1:5000")
    parser.add_argument("--images-dir", type=Path, default=Path("bazel-bin/images"))
    parser.add_argument("--tag", default="", help="also tag each image (e.g. a version)")
    parser.add_argument("--write-images", type=Path, metavar="KUSTOMIZATION_YAML")
    parser.add_argument("--pin", type=Path, metavar="OVERLAY_DIR")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where --pin writes")
    parser.add_argument("--kubectl", default="kubectl", help="for --pin: renders the overlay")
    parser.add_argument(
        "--no-push",
        action="store_true",
        help="only write the built digests (what a push gives: e.g. an example registry)",
    )
    args = parser.parse_args(argv)
    if args.pin is not None and args.out is None:
        parser.error("--pin needs --out")
    try:
        if args.no_push:
            pushed = [planned(args.registry, args.images_dir, name) for name in SERVICE_IMAGES]
        else:
            pushed = push_all(args.registry, args.images_dir, tag=args.tag)
        for image in pushed:
            print(f"{image.name} {image.reference}", flush=True)
        if args.write_images is not None:
            write_images(args.write_images, pushed)
            print(f"wrote the digests into {args.write_images}")
        if args.pin is not None:
            pinned = pin(args.pin.resolve(), args.out.resolve(), pushed, args.kubectl)
            print(f"pinned overlay: {pinned}")
    except (PushError, OSError, subprocess.CalledProcessError) as error:
        print(f"images.push: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
