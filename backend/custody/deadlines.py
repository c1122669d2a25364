"""Deadlines that DEA counts in business days: weekends and US federal holidays skipped."""

from __future__ import annotations

from datetime import datetime, timedelta

import holidays

COUNTRY = "US"


def add_business_days(start: datetime, days: int) -> datetime:
    """Return `start` moved forward by `days` business days, at the same local time.

    `start` must be in the organisation's timezone: its days, weekends and holidays are the
    ones counted. Holidays are the US federal ones, on the day they are observed (a Saturday's
    on the Friday before, a Sunday's on the Monday after).
    """
    # Without `years`, the calendar fills in each year as a day of it is asked about.
    federal = holidays.country_holidays(COUNTRY)
    moved = start
    while days:
        moved += timedelta(days=1)
        if moved.weekday() < 5 and moved.date() not in federal:
            days -= 1
    return moved
