"""Repository rule: third-party Python wheels from requirements_lock.txt.

Installs every locked wheel (hash-checked, binary only, no dependency resolution:
the lock is the resolution) into one --target directory, creates a pip-less venv
used as the registered Python toolchain (so the host's site-packages never leak in),
and writes one py_library per distribution, wired by its Requires-Dist metadata.
"""

def _python(rctx):
    # Debian's interpreter is what the images ship; fall back to PATH elsewhere.
    for candidate in ["/usr/bin/python3.11", "python3.11", "python3"]:
        path = rctx.which(candidate) if not candidate.startswith("/") else rctx.path(candidate)
        if path and path.exists:
            return path
    fail("no python3.11 interpreter found")

def _run(rctx, args, timeout = 600, quiet = True):
    res = rctx.execute(args, timeout = timeout, quiet = quiet)
    if res.return_code != 0:
        fail("command failed (%d): %s\n%s\n%s" % (res.return_code, " ".join([str(a) for a in args]), res.stdout, res.stderr))
    return res

def _pip_lock_repository_impl(rctx):
    python = _python(rctx)
    lock = rctx.path(rctx.attr.lock)
    gen = rctx.path(rctx.attr._build_gen)
    _run(rctx, [python, "-m", "venv", "--without-pip", "venv"])
    _run(rctx, [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--no-compile",
        "--target",
        "site",
        "--requirement",
        lock,
    ], timeout = 1800, quiet = False)
    res = _run(rctx, [python, gen, "site", str(rctx.path("venv/bin/python3"))])
    rctx.file("BUILD.bazel", res.stdout)

pip_lock_repository = repository_rule(
    implementation = _pip_lock_repository_impl,
    attrs = {
        "lock": attr.label(mandatory = True, allow_single_file = True),
        "_build_gen": attr.label(default = "//tools/bazel:pip_build_gen.py", allow_single_file = True),
    },
)
