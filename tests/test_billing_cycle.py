"""Pure unit tests of the cycle arithmetic (no database)."""
from datetime import datetime, timezone

import pytest

from gateway.billing_cycle import boundary, cycle_after, first_cycle, next_boundary


def utc(y, m, d, hh=0, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=timezone.utc)


def test_anchor_31_clamps_to_short_months_and_comes_back():
    assert next_boundary(31, utc(2025, 1, 31)) == utc(2025, 2, 28)
    assert next_boundary(31, utc(2025, 2, 28)) == utc(2025, 3, 31)
    assert next_boundary(31, utc(2025, 3, 31)) == utc(2025, 4, 30)
    assert next_boundary(31, utc(2025, 4, 30)) == utc(2025, 5, 31)


def test_anchor_31_in_a_leap_year():
    assert next_boundary(31, utc(2024, 1, 31)) == utc(2024, 2, 29)
    assert next_boundary(31, utc(2024, 2, 29)) == utc(2024, 3, 31)


def test_anchor_29_and_30_in_february():
    assert next_boundary(30, utc(2025, 1, 30)) == utc(2025, 2, 28)
    assert next_boundary(30, utc(2025, 2, 28)) == utc(2025, 3, 30)
    assert next_boundary(29, utc(2023, 1, 29)) == utc(2023, 2, 28)
    assert next_boundary(29, utc(2024, 1, 29)) == utc(2024, 2, 29)


def test_next_boundary_is_strictly_after_and_crosses_the_year():
    assert next_boundary(15, utc(2025, 3, 15)) == utc(2025, 4, 15)
    assert next_boundary(15, utc(2025, 3, 14, 23, 59)) == utc(2025, 3, 15)
    assert next_boundary(5, utc(2025, 12, 20)) == utc(2026, 1, 5)
    assert boundary(31, 2025, 11) == utc(2025, 11, 30)


def test_first_cycle_starts_at_midnight_of_the_day():
    anchor, start, end = first_cycle(utc(2025, 1, 31, 17, 45))
    assert (anchor, start, end) == (31, utc(2025, 1, 31), utc(2025, 2, 28))


@pytest.mark.parametrize(("anchor", "old_end", "now", "expected"), [
    # On time: the new cycle starts where the old one ended.
    (31, utc(2025, 2, 28), utc(2025, 2, 28, 0, 5), (utc(2025, 2, 28), utc(2025, 3, 31))),
    (31, utc(2024, 1, 31), utc(2024, 1, 31), (utc(2024, 1, 31), utc(2024, 2, 29))),
    # Missed cycles: catch up to the cycle containing now.
    (31, utc(2025, 1, 31), utc(2025, 4, 2), (utc(2025, 3, 31), utc(2025, 4, 30))),
    (10, utc(2025, 1, 10), utc(2025, 3, 10), (utc(2025, 3, 10), utc(2025, 4, 10))),
    (10, utc(2024, 11, 10), utc(2025, 3, 9, 23, 59), (utc(2025, 2, 10), utc(2025, 3, 10))),
])
def test_cycle_after(anchor, old_end, now, expected):
    start, end = cycle_after(anchor, old_end, now)
    assert (start, end) == expected
    assert start <= now < end
