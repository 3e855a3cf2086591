"""fimd's two capabilities are exactly what watching another container's files needs.

The fimd image runs under runc in the host PID namespace (the DaemonSet's hostPID) with a
given capability set, and puts an inotify watch, as fimnotify does, on a 0700 directory
of a process owned by another user, through that process's /proc/<pid>/root.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

FIMD_CAPS = ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
OTHER_UID = 4242
SLEEP = ["sleep", "300"]
PROBE = """
import errno, os, sys
from inotify_simple import INotify, flags
path = sys.argv[1]
try:
    INotify().add_watch(path, flags.MODIFY | flags.CREATE)
    print(sorted(os.listdir(path)))
except OSError as err:
    print(errno.errorcode[err.errno])
"""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A process of another user and its private directory, as /proc/<pid>/root/... path."""
    private = tmp_path_factory.mktemp("victim") / "private"
    private.mkdir(mode=0o700)
    (private / "secret.conf").write_text("x")
    os.chown(private, OTHER_UID, OTHER_UID)
    os.chmod(private.parent, 0o755)  # noqa: S103 -- the other user must reach its directory
    process = subprocess.Popen(
        ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups", *SLEEP]
    )
    try:
        yield f"/proc/{process.pid}/root{private}"
    finally:
        process.kill()
        process.wait()


def _probe(capabilities: list[str], path: str, tmp_path: Path) -> str:
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", "images/fimd.oci:local", str(bundle)],
        check=True,
        capture_output=True,
    )
    config = json.loads((bundle / "config.json").read_text())
    process = config["process"]
    process.update(terminal=False, args=["/usr/bin/python3", "-c", PROBE, path])
    process["capabilities"] = dict.fromkeys(("bounding", "effective", "permitted"), capabilities)
    namespaces = config["linux"]["namespaces"]
    config["linux"]["namespaces"] = [ns for ns in namespaces if ns["type"] != "pid"]  # hostPID
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"fim-caps-test-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle), name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_fimd_capabilities_suffice(target: str, tmp_path: Path) -> None:
    assert _probe(FIMD_CAPS, target, tmp_path) == "['secret.conf']"


def test_without_sys_ptrace_the_container_root_is_denied(target: str, tmp_path: Path) -> None:
    assert _probe(["CAP_DAC_READ_SEARCH"], target, tmp_path) == "EACCES"


def test_without_dac_read_search_the_private_directory_is_denied(
    target: str, tmp_path: Path
) -> None:
    assert _probe(["CAP_SYS_PTRACE"], target, tmp_path) == "EACCES"
