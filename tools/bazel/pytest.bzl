"""py_pytest: a py_test that runs pytest on its sources and writes JUnit XML for CI."""

# Tags of a test that changes this machine's state: a whole local cluster (tests/cluster,
# tests/e2e), real cgroups below kubepods, iptables. Two of them must never overlap (each
# snapshots the host and checks it is restored), but any other test may run beside them.
# Bazel admits an action when the CPU units in use plus 0.6 x its request fit in the total
# (.bazelrc: 6 units, 16 jobs): such a test reserves 4, so a second one (4 + 2.4 > 6) never
# starts while one runs, and two ordinary tests (1 unit each: 4 + 1 + 0.6 <= 6) do.
# `exclusive` serialized them too, but only after every other test and alone, which left the
# second core idle for most of the suite (docs/testing.md).
HOST_TEST_TAGS = ["cpu:4", "no-sandbox"]

def py_pytest(name, srcs, deps = [], data = [], args = [], **kwargs):
    native.py_test(
        name = name,
        srcs = srcs + ["//tools/bazel:pytest_main.py"],
        main = "//tools/bazel:pytest_main.py",
        args = ["$(rootpath %s)" % src for src in srcs] + args,
        deps = deps + ["@pypi//:pytest"],
        data = data,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
