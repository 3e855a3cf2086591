"""The one exception type for invalid Kubernetes input, carrying the offending field path.

Controller and fimd report these verbatim (status conditions, operational log lines), so the
path uses the JSON (camelCase) field names a user wrote, e.g.
`spec.subjects[1].paths[0]: must be an absolute path`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ModelError(ValueError):
    """Input does not satisfy the FimWatcher contract; `path` says where, `reason` says why."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path

    def within(self, segment: str | int) -> ModelError:
        """The same error seen from the enclosing object (field name, list index or map key)."""
        if isinstance(segment, int):
            segment = f"[{segment}]"
        if not self.path:
            return type(self)(self.reason, segment)
        sep = "" if self.path.startswith("[") else "."
        return type(self)(self.reason, f"{segment}{sep}{self.path}")


@contextlib.contextmanager
def within(segment: str | int) -> Iterator[None]:
    """Prefixes the path of any ModelError raised in the block with `segment`."""
    try:
        yield
    except ModelError as err:
        raise err.within(segment) from None
