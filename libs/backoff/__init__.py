"""Exponential backoff: the one delay formula every retry loop of fim-k8s uses.

`delay(attempt, base=b, cap=c)` is b for the first attempt and doubles per further attempt
up to c: b, 2b, 4b, ... c. It is pure (no clock, no jitter), so callers and tests agree on
every value; whoever sleeps or schedules decides when attempt counting starts again.
"""

from __future__ import annotations

#: Doubling stops here: 2**64 times any useful base is past every cap, and a float stays exact.
_MAX_DOUBLINGS = 64


def delay(attempt: int, *, base: float, cap: float) -> float:
    """The wait before retry number `attempt` (1 = first retry): base * 2**(attempt-1) <= cap.

    An attempt below 1 counts as the first. Raises ValueError for a negative base or a cap
    below the base, which would make the sequence shrink.
    """
    if base < 0 or cap < base:
        raise ValueError(f"backoff needs 0 <= base <= cap, got base={base} cap={cap}")
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    return float(min(base * 2.0**doublings, cap))
