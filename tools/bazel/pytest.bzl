"""py_pytest: a py_test that runs pytest on its sources and writes JUnit XML for CI."""

# A test that changes this machine's state (a whole local cluster in tests/cluster and
# tests/e2e, real cgroups below kubepods, iptables) must never overlap another such test (each
# snapshots the host and checks it is restored), but any other test may run beside it. Such a
# target has these tags and `size = "enormous"` (with its own `timeout`): Bazel reserves
# 800 MB of the 1,500 .bazelrc declares for an enormous test, so a second one never starts
# while one runs, and every other test (20-300 MB, 1 of 3 CPU units) can. docs/testing.md
# says why not `exclusive` or a `cpu:N` tag.
HOST_TEST_TAGS = ["no-sandbox"]

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
