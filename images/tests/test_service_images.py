"""The service images start under a real OCI runtime (umoci unpack + runc), as built."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

IMAGES = {
    # image: (text its --help prints, uid it runs as)
    "controller": ("usage:", 65532),
    "fimd": ("--node-name", 0),
    "fimnotify": ("--queue", 0),
}
# The controller's is the largest (the kubernetes package); about a fifth of each is the
# bytecode of every module (images/tools/files_layer.py).
MAX_COMPRESSED_MB = 50


def _bundle(image: str, tmp_path: Path, args: list[str]) -> Path:
    """A runc bundle from the OCI layout: rootfs + config.json derived from the image config."""
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"images/{image}.oci:local", str(bundle)],
        check=True,
        capture_output=True,
    )
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config_path.write_text(json.dumps(config))
    return bundle


def _run(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Our own runc state dir: nothing shared with the cluster's containerd.
    name = f"fim-image-test-{uuid.uuid4().hex[:8]}"
    return subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle), name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _entrypoint(image: str) -> list[str]:
    layout = Path(f"images/{image}.oci")
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    entrypoint: list[str] = config["config"]["Entrypoint"]
    return entrypoint


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_entrypoint_help_runs(image: str, tmp_path: Path) -> None:
    bundle = _bundle(image, tmp_path, [*_entrypoint(image), "--help"])
    result = _run(bundle, tmp_path)
    assert result.returncode == 0, result.stderr
    assert IMAGES[image][0] in result.stdout


def test_controller_image_runs_the_pki_job_entrypoint(tmp_path: Path) -> None:
    bundle = _bundle("controller", tmp_path, ["/usr/bin/python3", "-m", "libs.pki", "--help"])
    result = _run(bundle, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--namespace" in result.stdout


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_module_it_starts_with_is_loaded_from_shipped_bytecode(
    image: str, tmp_path: Path
) -> None:
    """Root filesystems are read-only in the cluster: a module without bytecode in the image
    would be compiled again at every start. `python3 -v` names the file each module's code
    came from: a `.py` is a compilation."""
    entrypoint = _entrypoint(image)
    bundle = _bundle(image, tmp_path, [entrypoint[0], "-v", *entrypoint[1:], "--help"])
    result = _run(bundle, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sources = re.findall(r"^# code object from '?(/app/\S+?)'?$", result.stderr, re.MULTILINE)
    compiled = [path for path in sources if not path.endswith(".pyc")]
    assert compiled == []
    assert len(sources) > 20  # the service's own modules and its dependencies


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runs_as_its_user_without_shell_or_apt(image: str, tmp_path: Path) -> None:
    probe = (
        "import os, shutil; "
        "print(os.getuid(), os.getgid(), [t for t in ('sh', 'bash', 'dash', 'apt', 'apt-get') "
        "if shutil.which(t)])"
    )
    bundle = _bundle(image, tmp_path, ["/usr/bin/python3", "-c", probe])
    result = _run(bundle, tmp_path)
    assert result.returncode == 0, result.stderr
    uid = IMAGES[image][1]
    assert result.stdout.split("\n")[0] == f"{uid} {uid} []"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_docker_archive_is_readable_and_small(image: str) -> None:
    inspected = subprocess.run(
        ["skopeo", "inspect", "--raw", f"docker-archive:images/{image}.tar"],
        check=True,
        capture_output=True,
        text=True,
    )
    config = json.loads(inspected.stdout)["config"]
    assert (
        config["digest"]
        == json.loads(
            subprocess.run(
                ["skopeo", "inspect", "--raw", f"oci:images/{image}.oci:local"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["config"]["digest"]
    )
    blobs = Path(f"images/{image}.oci/blobs/sha256")
    compressed = sum(blob.stat().st_size for blob in blobs.iterdir())
    assert compressed < MAX_COMPRESSED_MB * 1e6
