"""The two small images every cluster needs: the pod sandbox (pause) and a workload image
with a shell (busybox from Debian's busybox-static) for tests and the demo; and the
OpenTelemetry Collector of deploy/logging/otel (built by `tools/cluster/build.sh otelcol`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from images.oci import Entry, Image, directory, file, host_file, symlink
from tests.cluster.config import Binaries

PAUSE_IMAGE = "localhost/fim-k8s/pause:local"
WORKLOAD_IMAGE = "localhost/fim-k8s/workload:local"
OTELCOL_IMAGE = "localhost/fim-k8s/otelcol:local"
BUSYBOX = Path("/bin/busybox")
_HERE = Path(__file__).resolve().parent

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def pause_image() -> Image:
    """A static Go pause binary as the only file."""
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        env = os.environ | {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        subprocess.run(
            [
                _go(),
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags=-s -w",
                "-o",
                str(binary),
                ".",
            ],
            cwd=_HERE / "pause",
            env=env,
            check=True,
        )
        layer = [host_file("pause", binary, 0o755)]
    return Image(PAUSE_IMAGE, [layer], entrypoint=["/pause"], env=[])


def _go() -> str:
    """The Go toolchain (preinstalled in /usr/local/go on these machines)."""
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if found is None:
        raise FileNotFoundError("go not found (need Go >= 1.26 for the pause binary)")
    return found


def workload_image() -> Image:
    """busybox (static) with its applets linked in /bin: a shell, coreutils, sleep."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} missing: install Debian's busybox-static")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    layer: list[Entry] = [
        directory("bin"),
        directory("etc"),
        directory("root", 0o700),
        directory("tmp", 0o1777),
        directory("var"),
        directory("var/log"),
        host_file("bin/busybox", BUSYBOX, 0o755),
        file("etc/passwd", _PASSWD),
        file("etc/group", _GROUP),
    ]
    layer += [symlink(f"bin/{applet}", "busybox") for applet in applets if applet != "busybox"]
    return Image(WORKLOAD_IMAGE, [layer], entrypoint=[], cmd=["/bin/sh"], env=["PATH=/bin"])


def otelcol_image() -> Image:
    """The static collector binary alone (no shell, no libc): it reads /var/log/pods and
    writes its output directory, both mounted by the DaemonSet, and its config from a
    ConfigMap."""
    binaries = Binaries.from_env()
    binaries.require("otelcol")
    layer: list[Entry] = [
        directory("etc"),
        host_file("otelcol-fim", binaries.otelcol, 0o755),
        file("etc/passwd", _PASSWD),
        file("etc/group", _GROUP),
    ]
    return Image(OTELCOL_IMAGE, [layer], entrypoint=["/otelcol-fim"], env=[])
