"""Monthly billing cycles anchored on the subscription day, clamped to short months.

An anchor on the 31st gives Jan 31 -> Feb 28 (29 in leap years) -> Mar 31: each boundary is the
anchor day, or the month's last day when the month is shorter. Boundaries are midnight UTC.
"""
from __future__ import annotations

import calendar
from datetime import datetime, timezone


def boundary(anchor_day: int, year: int, month: int) -> datetime:
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return datetime(year, month, day, tzinfo=timezone.utc)


def next_boundary(anchor_day: int, after: datetime) -> datetime:
    """The first cycle boundary strictly after ``after``."""
    year, month = after.year, after.month
    while True:
        candidate = boundary(anchor_day, year, month)
        if candidate > after:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def first_cycle(now: datetime) -> tuple[int, datetime, datetime]:
    """(anchor day, cycle start, cycle end) for an organization created or subscribed at ``now``."""
    start = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
    return now.day, start, next_boundary(now.day, start)


def cycle_after(anchor_day: int, old_end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The cycle that follows one ending at ``old_end``, caught up to the cycle containing ``now``.

    Normally that is simply (old_end, next boundary). When the job did not run for a while (an
    outage), the skipped cycles are stepped over so the new cycle is the one ``now`` falls in:
    start <= now < end. The new start is always old_end or a later boundary, so cycles never
    overlap and never leave a gap.
    """
    start = old_end
    end = next_boundary(anchor_day, start)
    while end <= now:
        start, end = end, next_boundary(anchor_day, end)
    return start, end
