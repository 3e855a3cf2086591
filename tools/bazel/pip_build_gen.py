"""Writes the BUILD file of the third-party repository (see pip.bzl).

Usage: pip_build_gen.py SITE_DIR VENV_PYTHON > BUILD.bazel
One py_library per installed distribution, named by its normalized name, holding the
files listed in its RECORD and depending on the installed distributions it requires.

Every Python source also gets its bytecode, where the interpreter looks for it, hash-checked
(PEP 552: reproducible, and recompiled in memory if a source ever differs). Without it each
test process compiled every third-party module it imports again (pytest, the kubernetes
client's models, grpc, hypothesis: about 1.3 s per process), since nothing writes a .pyc into
the repository's files from the tests. Image layers compile their own (images/tools).
"""

from __future__ import annotations

import importlib.util
import py_compile
import re
import sys
from email.parser import HeaderParser
from pathlib import Path

# Characters Bazel accepts in a target name; files with others (none that matter at
# run time) are left out rather than breaking the whole repository.
_LABEL_SAFE = re.compile(r"^[A-Za-z0-9_./+=,@~-]+$")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"\bextra\s*==")

HEADER = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "python_toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def record_files(dist_info: Path, site: Path) -> list[str]:
    files = []
    for line in (dist_info / "RECORD").read_text().splitlines():
        rel = line.rsplit(",", 2)[0]
        # pip --target records scripts relative to a scheme two levels up; they land in bin/.
        rel = rel.removeprefix("../../")
        if not rel or rel.startswith(".."):
            continue
        if "__pycache__" in rel or not _LABEL_SAFE.match(rel):
            continue
        if (site / rel).is_file():
            files.append(f"site/{rel}")
            if rel.endswith(".py"):
                files += bytecode(site, rel)
    return sorted(files)


def bytecode(site: Path, rel: str) -> list[str]:
    """The hash-checked .pyc of site/rel (none for a file that does not compile)."""
    cache = Path(importlib.util.cache_from_source(str(site / rel)))
    try:
        py_compile.compile(
            str(site / rel),
            cfile=str(cache),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
    except py_compile.PyCompileError:
        return []
    return [f"site/{cache.relative_to(site)}"]


def requirements(dist_info: Path) -> tuple[str, list[str]]:
    meta = HeaderParser().parsestr((dist_info / "METADATA").read_text())
    requires = []
    for req in meta.get_all("Requires-Dist") or []:
        if _EXTRA_MARKER.search(req):
            continue
        match = _REQ_NAME.match(req)
        if match:
            requires.append(normalize(match.group(1)))
    return normalize(meta["Name"]), requires


def main(site_arg: str, python: str) -> None:
    site = Path(site_arg)
    dists = {}
    for dist_info in sorted(site.glob("*.dist-info")):
        name, requires = requirements(dist_info)
        dists[name] = (record_files(dist_info, site), requires)
    out = [HEADER.format(python=python)]
    for name, (files, requires) in sorted(dists.items()):
        deps = sorted({f":{r}" for r in requires if r in dists and r != name})
        out.append(
            "py_library(\n"
            f'    name = "{name}",\n'
            f"    data = {files!r},\n"
            '    imports = ["site"],\n'
            f"    deps = {deps!r},\n"
            ")\n"
        )
    sys.stdout.write("\n".join(out).replace("'", '"'))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
