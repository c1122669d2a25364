"""Check a proposed dose time against a phase's minimum interval and 7- and 28-day limits.

The minimum interval is in real hours. The 7- and 28-day limits count local calendar days, as
a clinic does: a weekly dose at 10:00 stays weekly across a daylight-saving change, when the
real gap is 167 or 169 hours. The minimum interval counts every dose; a phase's 7- and 28-day
limits count only the doses on its own dates, so that weekly maintenance can follow twice-weekly
induction on the protocol's dates (CLINICAL.md Frequency).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

WINDOWS = (("weekly_limit", 7), ("monthly_limit", 28))


@dataclass(frozen=True)
class Limits:
    """The frequency limits of the phase a dose falls in."""

    min_interval_hours: int
    max_per_7_days: int
    max_per_28_days: int
    # The local dates whose doses count toward the 7- and 28-day limits: the phase's own,
    # from its first day to the next phase's; None leaves that side open.
    counts_from: date | None = None
    counts_before: date | None = None

    def per_window(self, days: int) -> int:
        """Return the most doses allowed in any `days` consecutive days."""
        return self.max_per_7_days if days == 7 else self.max_per_28_days

    def counted_days(self) -> tuple[int, int]:
        """Return the first local day ordinal counted and the one after the last."""
        return ((self.counts_from or date.min).toordinal(),
                self.counts_before.toordinal() if self.counts_before else date.max.toordinal() + 1)


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


@dataclass(frozen=True)
class Schedule:
    """Dose times in order, with the local calendar day of each."""

    times: list[datetime]
    days: list[int]

    @classmethod
    def of(cls, times: Sequence[datetime], zone: tzinfo) -> Schedule:
        """Return the schedule of `times`, with days counted in `zone`."""
        ordered = sorted(times)
        return cls(ordered, [t.astimezone(zone).date().toordinal() for t in ordered])

    def most_in_window(self, at: datetime, days: int, limits: Limits) -> int:
        """Return the most doses on `limits`' dates in any `days` consecutive local days that
        include `at`'s."""
        day = self.days[bisect_left(self.times, at)]
        first, after = limits.counted_days()
        best = 0
        # The busiest window containing `day` can always be slid right to start on a dose.
        for start in self.days[bisect_left(self.days, max(day - days + 1, first)):
                               bisect_right(self.days, day)]:
            best = max(best, bisect_left(self.days, min(start + days, after))
                       - bisect_left(self.days, start))
        return best


def _interval_violation(at: datetime, other: datetime, limits: Limits) -> Violation | None:
    if abs(at - other) >= timedelta(hours=limits.min_interval_hours):
        return None
    hours = round(abs(at - other).total_seconds() / 3600, 1)
    return Violation("min_interval", at, {"hours_apart": hours,
                                          "min_interval_hours": limits.min_interval_hours})


def _window_counts(schedule: Schedule, at: datetime,
                   limits: Limits) -> Iterator[tuple[str, int, int, int]]:
    for rule, days in WINDOWS:
        yield rule, days, limits.per_window(days), schedule.most_in_window(at, days, limits)


def violation_at(schedule: Schedule, at: datetime, limits: Limits) -> Violation | None:
    """Return the first rule that the dose at `at` breaks in `schedule` (which holds it)."""
    index = bisect_left(schedule.times, at)
    for neighbour in (schedule.times[index - 1] if index else None,
                      schedule.times[index + 1] if index + 1 < len(schedule.times) else None):
        if neighbour is not None and (found := _interval_violation(at, neighbour, limits)):
            return found
    for rule, days, limit, count in _window_counts(schedule, at, limits):
        if count > limit:
            return Violation(rule, at, {"count": count, "days": days, "limit": limit})
    return None


def check_schedule(existing: Sequence[datetime], proposed: datetime,
                   limits_at: Callable[[datetime], Limits],
                   zone: tzinfo = UTC) -> Violation | None:
    """Return the rule that adding `proposed` breaks, for it or for a dose already scheduled.

    A dose already scheduled counts only for what `proposed` makes worse, so that an earlier
    prescriber override does not block every later visit near it.
    """
    before = Schedule.of(existing, zone)
    after = Schedule.of([*existing, proposed], zone)
    if found := violation_at(after, proposed, limits_at(proposed)):
        return found
    for at in before.times:
        # Beyond the longest window (28 local days, plus one for where days start) they
        # share no window, so `proposed` cannot change this dose's counts.
        if abs(at - proposed) >= timedelta(days=max(days for _, days in WINDOWS) + 1):
            continue
        limits = limits_at(at)
        if found := _interval_violation(at, proposed, limits):
            return found
        for rule, days, limit, count in _window_counts(after, at, limits):
            if count > limit and count > before.most_in_window(at, days, limits):
                return Violation(rule, at, {"count": count, "days": days, "limit": limit})
    return None


@dataclass(frozen=True)
class Standing:
    """Where one dose stands against its phase's limits: the gap before it, its busiest windows."""

    at: datetime
    limits: Limits
    hours_since_previous: float | None
    most_in_7_days: int
    most_in_28_days: int
    violation: Violation | None


def standings(times: Sequence[datetime], limits_at: Callable[[datetime], Limits],
              zone: tzinfo = UTC) -> list[Standing]:
    """Return each dose of `times`, in order, with where it stands in their schedule."""
    schedule = Schedule.of(times, zone)
    found = []
    for index, at in enumerate(schedule.times):
        limits = limits_at(at)
        gap = (round((at - schedule.times[index - 1]).total_seconds() / 3600, 1)
               if index else None)
        found.append(Standing(at, limits, gap, schedule.most_in_window(at, 7, limits),
                              schedule.most_in_window(at, 28, limits),
                              violation_at(schedule, at, limits)))
    return found
