"""protoc plugin: mypy-protobuf's .pyi generator for gRPC services (protoc-gen-mypy_grpc)."""

from mypy_protobuf.main import grpc

if __name__ == "__main__":
    grpc()
