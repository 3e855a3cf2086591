"""The backoff formula: exact values, the cap, and no overflow for huge attempt counts."""

from __future__ import annotations

import pytest

from libs.backoff import delay


def test_doubles_from_base_up_to_cap() -> None:
    assert [delay(n, base=0.5, cap=3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_attempts_below_one_count_as_the_first() -> None:
    assert delay(0, base=2.0, cap=60.0) == 2.0
    assert delay(-5, base=2.0, cap=60.0) == 2.0


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    assert delay(10**9, base=0.05, cap=60.0) == 60.0


def test_zero_base_never_waits() -> None:
    assert delay(7, base=0.0, cap=1.0) == 0.0


@pytest.mark.parametrize(("base", "cap"), [(-1.0, 1.0), (2.0, 1.0)])
def test_shrinking_sequences_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base"):
        delay(1, base=base, cap=cap)
