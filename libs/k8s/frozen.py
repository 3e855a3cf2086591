"""Read-only mapping fields for the frozen value classes.

attrs `frozen` only stops attribute assignment; a dict field could still be mutated in place
and silently change an object that is shared between reconcile loops. Fields holding maps
convert their input with `frozen_map` and are left out of `__hash__` (they still take part in
equality, so equal objects keep equal hashes).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


def frozen_map(value: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of `value`: later changes to the caller's dict do not leak in."""
    return MappingProxyType(dict(value))
