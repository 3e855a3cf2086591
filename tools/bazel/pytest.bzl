"""py_pytest: a py_test that runs pytest on its sources and writes JUnit XML for CI."""

# Test scheduling (docs/testing.md). A test that changes this machine's state (a whole local
# cluster in tests/cluster and tests/e2e, real cgroups below kubepods, iptables) must never
# overlap another such test (each snapshots the host and checks it is restored), but any other
# test may run beside it. Such a target has these tags and `size = "enormous"` (with its own
# `timeout`): Bazel reserves 800 MB of the 1,500 .bazelrc declares for an enormous test, so a
# second one never starts while one runs.
HOST_TEST_TAGS = ["no-sandbox"]

# Every other test asks for 2 of the 7 CPU units .bazelrc declares, a host test for 1: with
# three ordinary tests running (6 units) a fourth does not fit but a host test does, so the
# host tests, the longest chain of the suite, run back to back from the start, beside three
# others. py_pytest adds it to every test that is not "enormous"; a plain py_test adds it
# itself. No test other than a host test may be larger than "medium" (100 MB): three large
# ones (300 MB each) would keep the next host test out.
ORDINARY_TEST_TAGS = ["cpu:2"]

def py_pytest(name, srcs, deps = [], data = [], args = [], tags = [], **kwargs):
    if kwargs.get("size") != "enormous":
        tags = tags + ORDINARY_TEST_TAGS
    native.py_test(
        name = name,
        srcs = srcs + ["//tools/bazel:pytest_main.py"],
        main = "//tools/bazel:pytest_main.py",
        args = ["$(rootpath %s)" % src for src in srcs] + args,
        deps = deps + ["@pypi//:pytest"],
        data = data,
        tags = tags,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
