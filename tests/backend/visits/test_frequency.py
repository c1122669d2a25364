"""Property tests: no sequence of schedule, cancel and reschedule breaks a phase's limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.visits.frequency import (
    Limits,
    Schedule,
    check_schedule,
    standings,
    violation_at,
)

EPOCH = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
INDUCTION = Limits(min_interval_hours=48, max_per_7_days=2, max_per_28_days=8)
MAINTENANCE = Limits(min_interval_hours=48, max_per_7_days=1, max_per_28_days=4)
TAPER = Limits(min_interval_hours=72, max_per_7_days=1, max_per_28_days=2)


def limits_at(at: datetime) -> Limits:
    """Phase limits by date: induction 4 weeks, maintenance 4 weeks, then taper."""
    weeks = (at - EPOCH) // timedelta(weeks=1)
    return INDUCTION if weeks < 4 else MAINTENANCE if weeks < 8 else TAPER


# Times on a six-hour grid over twelve weeks, so that collisions and boundaries are common.
times = st.integers(min_value=0, max_value=12 * 28).map(lambda k: EPOCH + timedelta(hours=6 * k))
operations = st.lists(st.one_of(
    st.tuples(st.just("schedule"), times),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=40)),
    st.tuples(st.just("reschedule"), st.integers(min_value=0, max_value=40), times),
), max_size=60)


def broken(times: list[datetime], zone=UTC) -> list[datetime]:
    """Return the doses at which the schedule breaks its phase's limits."""
    schedule = Schedule.of(times, zone)
    return [at for at in schedule.times if violation_at(schedule, at, limits_at(at))]


@settings(max_examples=300, deadline=None)
@given(operations)
def test_no_sequence_of_operations_breaks_the_limits(ops):
    schedule: list[datetime] = []
    for op in ops:
        if op[0] == "schedule" and check_schedule(schedule, op[1], limits_at) is None:
            schedule.append(op[1])
        elif op[0] == "cancel" and schedule:
            schedule.pop(op[1] % len(schedule))
        elif op[0] == "reschedule" and schedule:
            rest = schedule[:op[1] % len(schedule)] + schedule[op[1] % len(schedule) + 1:]
            if check_schedule(rest, op[2], limits_at) is None:
                schedule = [*rest, op[2]]
        assert broken(schedule) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(times, max_size=30), times)
def test_a_refusal_names_a_rule_the_schedule_would_break(existing, proposed):
    """check_schedule refuses exactly when adding the dose creates a new break."""
    schedule: list[datetime] = []
    for at in existing:
        if check_schedule(schedule, at, limits_at) is None:
            schedule.append(at)
    refusal = check_schedule(schedule, proposed, limits_at)
    new_breaks = broken([*schedule, proposed])
    assert (refusal is None) == (new_breaks == [])
    if refusal is not None:
        assert refusal.rule in {"min_interval", "weekly_limit", "monthly_limit"}


def test_an_earlier_override_does_not_block_a_visit_it_does_not_touch():
    forced = [EPOCH, EPOCH + timedelta(hours=24)]
    assert broken(forced) != []
    assert check_schedule(forced, EPOCH + timedelta(days=8), limits_at) is None
    assert check_schedule(forced, EPOCH + timedelta(days=6), limits_at).rule == "weekly_limit"
    assert check_schedule(forced, EPOCH + timedelta(days=2), limits_at).rule == "min_interval"


@pytest.mark.parametrize(("first", "second"), [
    # Spring forward in Chicago: 10:00 to 10:00 a week later is 167 hours.
    (datetime(2027, 3, 8, 15, tzinfo=UTC), datetime(2027, 3, 15, 14, tzinfo=UTC)),
    # Fall back: 169 hours.
    (datetime(2026, 10, 26, 15, tzinfo=UTC), datetime(2026, 11, 2, 16, tzinfo=UTC)),
])
def test_weekly_doses_at_the_same_local_time_stay_weekly_across_dst(first, second):
    weekly = Limits(min_interval_hours=48, max_per_7_days=1, max_per_28_days=4)
    chicago = ZoneInfo("America/Chicago")
    assert check_schedule([first], second, lambda _: weekly, chicago) is None
    same_day_earlier = second - timedelta(hours=2)
    assert check_schedule([first], same_day_earlier, lambda _: weekly, chicago) is None
    day_before = second - timedelta(days=1)
    assert check_schedule([first], day_before, lambda _: weekly, chicago).rule == "weekly_limit"


@pytest.mark.parametrize(("hours", "gaps", "in_7_days", "rules"), [
    ((0, 72), [None, 72.0], [2, 2], [None, None]),
    ((0, 24), [None, 24.0], [2, 2], ["min_interval", "min_interval"]),
    ((0, 48, 96), [None, 48.0, 48.0], [3, 3, 3], ["weekly_limit"] * 3),
    ((0, 7 * 24), [None, 168.0], [1, 1], [None, None]),
])
def test_each_dose_stands_against_its_phase_limits(hours, gaps, in_7_days, rules):
    found = standings([EPOCH + timedelta(hours=h) for h in reversed(hours)], limits_at)
    assert [s.at for s in found] == [EPOCH + timedelta(hours=h) for h in hours]
    assert [s.hours_since_previous for s in found] == gaps
    assert [s.most_in_7_days for s in found] == in_7_days
    assert [s.violation.rule if s.violation else None for s in found] == rules
    assert {s.limits for s in found} == {INDUCTION}


# The default plan from Monday 2 November 2026 (policy: induction 4 weeks, maintenance 4, then
# taper), each phase's 7- and 28-day limits counting the doses on its own dates.
MAINTENANCE_FROM, TAPER_FROM = date(2026, 11, 30), date(2026, 12, 28)
PHASED = ((MAINTENANCE_FROM, replace(MAINTENANCE, counts_from=MAINTENANCE_FROM,
                                     counts_before=TAPER_FROM)),
          (TAPER_FROM, replace(TAPER, counts_from=TAPER_FROM)))


def phased_limits_at(at: datetime) -> Limits:
    """Return the limits of the phase whose dates hold `at`."""
    later = [limits for starts_on, limits in PHASED if starts_on <= at.date()]
    return later[-1] if later else replace(INDUCTION, counts_before=MAINTENANCE_FROM)


def on(month: int, day: int, hour: int = 15) -> datetime:
    return datetime(2026 + (month < 11), month, day, hour, tzinfo=UTC)


INDUCTION_DOSES = [on(11, d) for d in (2, 5, 9, 12, 16, 19, 23, 26)]  # Mondays and Thursdays
MAINTENANCE_DOSES = [on(11, 30), on(12, 7), on(12, 14), on(12, 21)]
BOUNDARY_CASES = [
    # (existing, proposed, the rule refused with, counted over every dose as before)
    ("weekly maintenance straight after twice-weekly induction",
     INDUCTION_DOSES, on(11, 30), None, "weekly_limit"),
    ("the whole maintenance month after induction",
     INDUCTION_DOSES + MAINTENANCE_DOSES[:3], on(12, 21), None, "monthly_limit"),
    ("a second maintenance dose in 7 days", MAINTENANCE_DOSES, on(12, 27), "weekly_limit",
     "weekly_limit"),
    ("the taper's first dose a week after maintenance's last", MAINTENANCE_DOSES, on(12, 28),
     None, "monthly_limit"),
    ("induction's last day does not count toward maintenance's week",
     [on(11, 26), on(11, 29)], on(12, 1), None, "weekly_limit"),
    ("but counts toward the minimum interval: 47 h", [on(11, 26), on(11, 29)], on(12, 1, 14),
     "min_interval", "min_interval"),
    ("the minimum interval across the boundary: 24 h", [on(11, 29)], on(11, 30),
     "min_interval", "min_interval"),
    ("maintenance's first dose does not count back into induction's week",
     [on(11, 23), on(12, 1)], on(11, 27), None, "weekly_limit"),
    ("two taper doses in 28 days", [on(12, 28), on(1, 11)], on(1, 25), None, None),
    ("three taper doses in 28 days", [on(12, 28), on(1, 11)], on(1, 18), "monthly_limit",
     "monthly_limit"),
    ("maintenance doses do not count toward the taper's 28 days",
     [*MAINTENANCE_DOSES[2:], on(12, 28)], on(1, 11), None, "monthly_limit"),
]


@pytest.mark.parametrize(("existing", "proposed", "refused", "counted_over_all"),
                         [case[1:] for case in BOUNDARY_CASES],
                         ids=[case[0] for case in BOUNDARY_CASES])
def test_a_phase_s_limits_count_its_own_doses_and_the_interval_counts_every_dose(
        existing, proposed, refused, counted_over_all):
    found = check_schedule(existing, proposed, phased_limits_at)
    assert (found.rule if found else None) == refused
    unbounded = check_schedule(existing, proposed, lambda at: replace(
        phased_limits_at(at), counts_from=None, counts_before=None))
    assert (unbounded.rule if unbounded else None) == counted_over_all


def test_standings_count_the_phase_s_own_doses():
    found = standings([*INDUCTION_DOSES, *MAINTENANCE_DOSES, on(12, 28)], phased_limits_at)
    assert [s.violation for s in found] == [None] * 13
    assert [s.most_in_28_days for s in found[7:10]] == [8, 4, 4]
    assert found[-1].most_in_7_days == 1
