"""protoc for Bazel genrules: grpcio-tools' bundled protoc with its well-known types.

grpc_tools.protoc does not add its own include directory (google/protobuf/*.proto)
when called as a module, so this wrapper appends it.
"""

import sys
from importlib import resources

from grpc_tools import protoc


def main() -> int:
    include = resources.files("grpc_tools") / "_proto"
    return int(protoc.main(["protoc", *sys.argv[1:], f"-I{include}"]))


if __name__ == "__main__":
    sys.exit(main())
