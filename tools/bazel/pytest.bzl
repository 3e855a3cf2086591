"""py_pytest: a py_test that runs pytest on its sources and writes JUnit XML for CI."""

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
