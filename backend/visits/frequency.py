"""Check a proposed dose time against a phase's minimum interval and 7- and 28-day limits."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WEEK = timedelta(days=7)
FOUR_WEEKS = timedelta(days=28)


@dataclass(frozen=True)
class Limits:
    """The frequency limits of the phase a dose falls in."""

    min_interval_hours: int
    max_per_7_days: int
    max_per_28_days: int


@dataclass(frozen=True)
class Violation:
    """Which rule a schedule breaks, at which dose, and the numbers behind it."""

    rule: str
    at: datetime
    detail: dict

    def message(self) -> str:
        """Return the sentence a scheduler reads."""
        if self.rule == "min_interval":
            return (f"Doses {self.detail['hours_apart']} h apart; the phase requires at least "
                    f"{self.detail['min_interval_hours']} h.")
        return (f"{self.detail['count']} doses within {self.detail['days']} days; the phase "
                f"allows {self.detail['limit']}.")


def _max_in_window(times: Sequence[datetime], at: datetime, span: timedelta) -> int:
    """Return the most doses in any half-open window of length `span` that contains `at`."""
    best = 0
    # The busiest window containing `at` can always be slid right until it starts on a dose.
    for start in times[bisect_left(times, at - span + timedelta(microseconds=1)):
                       bisect_right(times, at)]:
        best = max(best, bisect_left(times, start + span) - bisect_left(times, start))
    return best


def _interval_violation(at: datetime, other: datetime, limits: Limits) -> Violation | None:
    if abs(at - other) >= timedelta(hours=limits.min_interval_hours):
        return None
    hours = round(abs(at - other).total_seconds() / 3600, 1)
    return Violation("min_interval", at, {"hours_apart": hours,
                                          "min_interval_hours": limits.min_interval_hours})


def _window_counts(times: Sequence[datetime], at: datetime, limits: Limits):
    for rule, span, limit in (("weekly_limit", WEEK, limits.max_per_7_days),
                              ("monthly_limit", FOUR_WEEKS, limits.max_per_28_days)):
        yield rule, span, limit, _max_in_window(times, at, span)


def violation_at(times: Sequence[datetime], at: datetime, limits: Limits) -> Violation | None:
    """Return the first rule that the dose at `at` breaks among sorted `times` (which hold it)."""
    index = bisect_left(times, at)
    for neighbour in (times[index - 1] if index else None,
                      times[index + 1] if index + 1 < len(times) else None):
        if neighbour is not None and (found := _interval_violation(at, neighbour, limits)):
            return found
    for rule, span, limit, count in _window_counts(times, at, limits):
        if count > limit:
            return Violation(rule, at, {"count": count, "days": span.days, "limit": limit})
    return None


def check_schedule(existing: Sequence[datetime], proposed: datetime,
                   limits_at: Callable[[datetime], Limits]) -> Violation | None:
    """Return the rule that adding `proposed` breaks, for it or for a dose already scheduled.

    A dose already scheduled counts only for what `proposed` makes worse, so that an earlier
    prescriber override does not block every later visit near it.
    """
    before = sorted(existing)
    after = sorted([*before, proposed])
    if found := violation_at(after, proposed, limits_at(proposed)):
        return found
    for at in before:
        if abs(at - proposed) >= FOUR_WEEKS:
            continue
        limits = limits_at(at)
        if found := _interval_violation(at, proposed, limits):
            return found
        for rule, span, limit, count in _window_counts(after, at, limits):
            if count > limit and count > _max_in_window(before, at, span):
                return Violation(rule, at, {"count": count, "days": span.days, "limit": limit})
    return None
