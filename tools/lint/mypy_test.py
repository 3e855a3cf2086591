"""`mypy --strict` over all first-party code, as a Bazel test (config: pyproject.toml).

Runs in the runfiles tree, where hand-written sources and generated protobuf stubs
(`*_pb2.pyi`) sit side by side, so type errors against the contract fail the build.
"""

import os
import sys
import tempfile

from mypy import api


def main() -> int:
    files = [f for f in sys.argv[1:] if f.endswith(".py")]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as cache:
        out, err, code = api.run(["--config-file", "pyproject.toml", "--cache-dir", cache, *files])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())
