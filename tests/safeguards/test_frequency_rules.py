"""Intervals, 7- and 28-day windows in local days, doses without visits, extra-visit clusters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from safeguards import Phase
from safeguards.rules.frequency import FREQUENCY
from tests.safeguards.factories import INDUCTION, T0, dose, doses_every, facts, found, ids, visit

MAINTENANCE = Phase("maintenance", min_interval_hours=48, max_per_7_days=1, max_per_28_days=4)


def two_doses(apart: timedelta, **fields) -> tuple:
    """Return two doses of patient-1 `apart`, each with its visit."""
    return (dose(1, T0, **fields), dose(2, T0 + apart, **fields))


def rule_ids(doses, overrides=None, **fields) -> list[str]:
    return ids(found(FREQUENCY, facts(doses=tuple(doses), visits=tuple(
        visit(int(d.id.split("-")[1]), d.given_at) for d in doses), **fields), overrides))


INTERVAL_CASES = [
    # the phase's min_interval_hours 48, in real hours, less interval_tolerance_minutes 60
    ("48 h apart", two_doses(timedelta(hours=48)), {}, False),
    ("47 h 30 min apart: within the tolerance", two_doses(timedelta(hours=47, minutes=30)), {},
     False),
    ("47 h apart: at the tolerance", two_doses(timedelta(hours=47)), {}, False),
    ("a second under 47 h", two_doses(timedelta(hours=47) - timedelta(seconds=1)), {}, True),
    ("46 h apart", two_doses(timedelta(hours=46)), {}, True),
    ("no tolerance: a second under 48 h", two_doses(timedelta(hours=48, seconds=-1)),
     {"interval_tolerance_minutes": 0}, True),
    ("no phase: the policy's 48 h", two_doses(timedelta(hours=46), phase=None), {}, True),
    ("no phase, policy lowered", two_doses(timedelta(hours=46), phase=None),
     {"min_interval_hours": 36}, False),
    ("the phase wins over the policy", two_doses(timedelta(hours=46)),
     {"min_interval_hours": 36}, True),
]


@pytest.mark.parametrize(("doses", "overrides", "expected"),
                         [case[1:] for case in INTERVAL_CASES], ids=[c[0] for c in INTERVAL_CASES])
def test_interval_below_min_thresholds(doses, overrides, expected):
    assert ("frequency.interval_below_min" in rule_ids(doses, overrides)) is expected


def test_interval_names_both_doses_and_the_hours():
    doses = two_doses(timedelta(hours=30))
    [finding] = found(FREQUENCY, facts(doses=doses, visits=(visit(1), visit(2, doses[1].given_at))))
    assert finding.evidence["dose_id"] == "dose-2"
    assert finding.evidence["previous_dose_id"] == "dose-1"
    assert str(finding.evidence["hours_apart"]) == "30.0"
    assert finding.evidence["patient_id"] == "patient-1"
    assert finding.evidence["nurse_id"] == "nurse-1"


def test_a_prescriber_override_is_not_a_frequency_finding():
    doses = two_doses(timedelta(hours=30))
    visits = (visit(1), visit(2, doses[1].given_at, override=True, series=False))
    assert found(FREQUENCY, facts(doses=doses, visits=visits)) == []


def test_a_plan_override_applies_to_its_own_doses_only():
    doses = two_doses(timedelta(hours=46), phase=None)
    plans = {"plan-1": {"min_interval_hours": 24}}
    assert "frequency.interval_below_min" not in rule_ids(doses, plan_overrides=plans)
    other = [replace(d, plan_version_id="plan-2") for d in doses]
    assert "frequency.interval_below_min" in rule_ids(other, plan_overrides=plans)


WINDOW_CASES = [
    # induction: at most 2 in any 7 local days, 8 in 28
    ("2 in 7 days", doses_every(3.5, 2), 7, False),
    ("3 in 7 days", doses_every(3, 3), 7, True),
    ("3 across 8 days", doses_every(3.5, 3), 7, False),
    ("8 in 28 days", doses_every(3.5, 8), 28, False),
    ("9 in 28 days", doses_every(3.3, 9), 28, True),
    ("9 across 29 days", doses_every(3.5, 9), 28, False),
]


@pytest.mark.parametrize(("doses", "days", "expected"),
                         [case[1:] for case in WINDOW_CASES], ids=[c[0] for c in WINDOW_CASES])
def test_window_exceeded_thresholds(doses, days, expected):
    findings = found(FREQUENCY, facts(doses=tuple(doses), visits=tuple(
        visit(int(d.id.split("-")[1]), d.given_at) for d in doses)))
    windows = {f.evidence["days"] for f in findings if f.rule_id == "frequency.window_exceeded"}
    assert (days in windows) is expected


def test_window_counts_local_days_so_a_weekly_dose_stays_weekly_across_dst():
    # 10:00 in New York each Sunday across the 2026-03-08 change: 167 h, less than 7 x 24 h.
    new_york = ZoneInfo("America/New_York")
    doses = tuple(dose(n, datetime(2026, 3, 7 * n - 6, 10, 0, tzinfo=new_york).astimezone(UTC),
                       phase=MAINTENANCE) for n in range(1, 5))
    assert doses[1].given_at - doses[0].given_at == timedelta(hours=167)
    assert found(FREQUENCY, facts(doses=doses, visits=tuple(
        visit(n, d.given_at) for n, d in enumerate(doses, 1)), timezone="America/New_York")) == []


def test_window_counts_the_organisation_s_days_not_utc_days():
    # 20:00 on 1 February and 09:00 on 8 February in Los Angeles: 8 local days, 7 UTC days.
    first = datetime(2026, 2, 2, 4, 0, tzinfo=UTC)
    doses = (dose(1, first, phase=MAINTENANCE),
             dose(2, datetime(2026, 2, 8, 17, 0, tzinfo=UTC), phase=MAINTENANCE))
    assert found(FREQUENCY, facts(doses=doses, timezone="America/Los_Angeles")) == []
    assert ids(found(FREQUENCY, facts(doses=doses, timezone="UTC"))) == [
        "frequency.window_exceeded"]


def test_window_finding_is_keyed_by_the_dose_that_went_over():
    doses = doses_every(3, 3)
    first = found(FREQUENCY, facts(doses=tuple(doses[:3])))
    later = found(FREQUENCY, facts(doses=tuple(doses_every(3, 3) + doses_every(
        3, 1, start=T0 + timedelta(days=60)))))
    window = [f for f in first if f.rule_id == "frequency.window_exceeded"]
    assert window[0].evidence["dose_ids"] == "dose-1,dose-2,dose-3"
    assert window[0].evidence["nurse_id"] == "nurse-1"
    assert window[0].dedup_key in {f.dedup_key for f in later}


SCHEDULED = visit(1)  # 14:50 to 17:50 for a dose at 15:00
WITHOUT_VISIT_CASES = [
    ("at its visit", dose(), (SCHEDULED,), False),
    ("no visit", dose(visit_id=None), (), True),
    ("visit not loaded", dose(visit_id="visit-elsewhere"), (), False),
    ("visit cancelled", dose(), (replace(SCHEDULED, status="cancelled"),), True),
    ("visit missed", dose(), (replace(SCHEDULED, status="missed"),), True),
    ("visit rescheduled", dose(), (replace(SCHEDULED, status="rescheduled"),), True),
    # dose_outside_visit_minutes 60 either side of the scheduled window
    ("60 min before the start", dose(at=SCHEDULED.scheduled_start - timedelta(minutes=60)),
     (SCHEDULED,), False),
    ("61 min before the start", dose(at=SCHEDULED.scheduled_start - timedelta(minutes=61)),
     (SCHEDULED,), True),
    ("60 min after the end", dose(at=SCHEDULED.scheduled_end + timedelta(minutes=60)),
     (SCHEDULED,), False),
    ("61 min after the end", dose(at=SCHEDULED.scheduled_end + timedelta(minutes=61)),
     (SCHEDULED,), True),
]


@pytest.mark.parametrize(("given", "visits", "expected"),
                         [case[1:] for case in WITHOUT_VISIT_CASES],
                         ids=[c[0] for c in WITHOUT_VISIT_CASES])
def test_dose_without_visit_cases(given, visits, expected):
    findings = found(FREQUENCY, facts(doses=(given,), visits=visits))
    assert ("frequency.dose_without_visit" in ids(findings)) is expected


def test_dose_without_visit_says_how_far_outside():
    late = dose(at=SCHEDULED.scheduled_end + timedelta(minutes=90))
    [finding] = found(FREQUENCY, facts(doses=(late,), visits=(SCHEDULED,)))
    assert str(finding.evidence["minutes_outside"]) == "90.0"
    assert finding.evidence["visit_status"] == "completed"
    assert finding.subject.id == "nurse-1"
    assert finding.evidence["patient_id"] == "patient-1"


def extras(days_apart: list[float], **fields) -> tuple:
    """Return out-of-series visits of patient-1 at T0 plus each of `days_apart`."""
    return tuple(visit(n, T0 + timedelta(days=d), **{"series": False, **fields})
                 for n, d in enumerate(days_apart, 1))


CLUSTER_CASES = [
    # extra_visit_cluster_count 3 within extra_visit_cluster_days 28
    ("2 extras", extras([0, 5]), {}, False),
    ("3 extras in 27 days", extras([0, 10, 27]), {}, True),
    ("3 extras a second under 28 days", extras([0, 10, 28 - 1 / 86400]), {}, True),
    ("3 extras 28 days apart", extras([0, 10, 28]), {}, False),
    ("series visits are not extras", extras([0, 1, 2], series=True), {}, False),
    ("overrides in a series are extras", extras([0, 1, 2], series=True, override=True), {},
     True),
    ("cancelled extras held no slot", extras([0, 1, 2], status="cancelled"), {}, False),
    ("cluster size raised", extras([0, 1, 2]), {"extra_visit_cluster_count": 4}, False),
]


@pytest.mark.parametrize(("visits", "overrides", "expected"),
                         [case[1:] for case in CLUSTER_CASES], ids=[c[0] for c in CLUSTER_CASES])
def test_extra_visit_cluster_thresholds(visits, overrides, expected):
    findings = found(FREQUENCY, facts(visits=visits), overrides)
    assert ("frequency.extra_visit_cluster" in ids(findings)) is expected


def test_extra_visit_cluster_is_one_finding_per_patient():
    [first] = found(FREQUENCY, facts(visits=extras([0, 1, 2])))
    [later] = found(FREQUENCY, facts(visits=extras([0, 1, 2, 3, 60, 61, 62])))
    assert first.dedup_key == later.dedup_key
    assert later.evidence["visits"] == 4
    assert first.evidence["patient_id"] == "patient-1"
    assert first.evidence["nurse_id"] == "nurse-1"


# The default plan from Monday 2 November 2026: induction 4 weeks, maintenance 4, then taper;
# a later phase's 7- and 28-day limits count from its own first day.
PHASES = ((date(2026, 11, 2), INDUCTION),
          (date(2026, 11, 30), replace(MAINTENANCE, counts_from=date(2026, 11, 30))),
          (date(2026, 12, 28), Phase("taper", min_interval_hours=48, max_per_7_days=1,
                                     max_per_28_days=2, counts_from=date(2026, 12, 28))))


def on(month: int, day: int, hour: int = 15) -> datetime:
    return datetime(2026 + (month < 11), month, day, hour, tzinfo=UTC)


def course(*times: datetime) -> list:
    """Return doses at `times`, each in the phase whose dates hold it."""
    return [dose(n, at, phase=[phase for starts_on, phase in PHASES
                               if starts_on <= at.date()][-1])
            for n, at in enumerate(times, 1)]


PROTOCOL = (*(on(11, d) for d in (2, 5, 9, 12, 16, 19, 23, 26)),
            on(11, 30), on(12, 7), on(12, 14), on(12, 21), on(12, 28), on(1, 11), on(1, 25))
BOUNDARY_CASES = [
    ("the default course: twice weekly, weekly, every two weeks", course(*PROTOCOL), []),
    ("induction's last day does not count toward maintenance's week",
     course(on(11, 26), on(11, 29), on(12, 1)), []),
    ("but counts toward the minimum interval: 24 h", course(on(11, 29), on(11, 30)),
     ["frequency.interval_below_min"]),
    ("a second maintenance dose in 7 days", course(on(11, 30), on(12, 3)),
     ["frequency.window_exceeded"]),
    ("maintenance doses do not count toward the taper's 28 days",
     course(on(12, 14), on(12, 21), on(12, 28), on(1, 11)), []),
    ("three taper doses in 28 days", course(on(12, 28), on(1, 11), on(1, 18)),
     ["frequency.window_exceeded"]),
    ("the first phase reaches back before the plan",
     [dose(1, T0 - timedelta(days=3), phase=MAINTENANCE), dose(2, T0), dose(3, on(11, 4))],
     ["frequency.window_exceeded"]),
]


@pytest.mark.parametrize(("doses", "expected"), [case[1:] for case in BOUNDARY_CASES],
                         ids=[case[0] for case in BOUNDARY_CASES])
def test_a_phase_s_windows_count_its_own_doses_and_the_interval_every_dose(doses, expected):
    assert rule_ids(doses, as_of=on(2, 1)) == expected
