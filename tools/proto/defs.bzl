"""py_grpc_library: generates _pb2/_pb2_grpc modules and mypy stubs from one .proto."""

def py_grpc_library(name, proto, import_root, deps = []):
    """Compiles `proto` (a path below this package) into a py_library.

    Args:
      name: the py_library's name.
      proto: the .proto file, relative to the package, e.g. "fim/v1/fim.proto".
      import_root: the package-relative directory protoc treats as the import root
        ("." for the package itself); generated modules are importable from there.
      deps: py_library deps of the generated code (grpcio, protobuf are added).
    """
    stem = proto[:-len(".proto")]
    outs = [stem + suffix for suffix in ["_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"]]
    pkg = native.package_name()
    root = pkg if import_root == "." else pkg + "/" + import_root
    out_dir = "$(GENDIR)/" + root
    native.genrule(
        name = name + "_gen",
        srcs = [proto],
        outs = outs,
        cmd = " ".join([
            "$(location //tools/proto:protoc)",
            "-I" + root,
            "--python_out=" + out_dir,
            "--grpc_python_out=" + out_dir,
            "--plugin=protoc-gen-mypy=$(location //tools/proto:protoc_gen_mypy)",
            "--mypy_out=" + out_dir,
            "--plugin=protoc-gen-mypy_grpc=$(location //tools/proto:protoc_gen_mypy_grpc)",
            "--mypy_grpc_out=" + out_dir,
            "$(location %s)" % proto,
        ]),
        exec_tools = [
            "//tools/proto:protoc",
            "//tools/proto:protoc_gen_mypy",
            "//tools/proto:protoc_gen_mypy_grpc",
        ],
    )
    native.filegroup(
        name = name + "_stubs",
        srcs = [o for o in outs if o.endswith(".pyi")],
    )
    native.py_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".py")],
        data = [o for o in outs if o.endswith(".pyi")],
        imports = [import_root],
        deps = deps + ["@pypi//:grpcio", "@pypi//:protobuf"],
    )
