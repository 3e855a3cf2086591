"""The config hash of a WatchSpec: how controller and fimd agree a watch is up to date.

Both sides compute it with this one function, over protobuf's deterministic
serialization (map entries sorted), so equal specs always hash equal.
"""

import hashlib

from fim.v1 import fim_pb2


def config_hash(spec: fim_pb2.WatchSpec) -> str:
    """Hex SHA-256 of the deterministic serialization of `spec`."""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()
