"""protoc plugin: mypy-protobuf's .pyi generator for messages (protoc-gen-mypy)."""

from mypy_protobuf.main import main

if __name__ == "__main__":
    main()
