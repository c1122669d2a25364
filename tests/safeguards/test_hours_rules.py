"""Time rules: repeated work outside the service hours, and a nurse's hours shifting late."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeguards.facts import WorkEvent
from safeguards.findings import Severity
from safeguards.rules.hours import HOURS, _LocalMinutes, occasions
from tests.safeguards.factories import facts, found

ZONE = "America/New_York"
# AS_OF (2026-12-01 06:00 UTC) is 01:00 on 30 November in New York.
DAY = timedelta(days=1)


def local(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """Return a New York time in 2026."""
    return datetime(2026, month, day, hour, minute, tzinfo=ZoneInfo(ZONE))


def work(number: int, at: datetime, kind: str = "dose", **fields) -> WorkEvent:
    """Return work event `number` of nurse-1 at patient-1, at its own visit."""
    defaults = dict(id=f"work-{number}", kind=kind, nurse_id="nurse-1", occurred_at=at,
                    patient_id="patient-1", visit_id=f"visit-{number}")
    return WorkEvent(**{**defaults, **fields})


def nights(count: int, hour: int = 23, minute: int = 0, first_day: int = 20,
           **fields) -> list[WorkEvent]:
    """Return `count` doses on successive days at `hour`:`minute` local."""
    return [work(n, local(first_day + n, hour, minute), **fields) for n in range(count)]


def returns(count: int, hour: int, minute: int = 0) -> list[WorkEvent]:
    """Return `count` bag returns to the vault, outside any visit."""
    return [work(100 + n, local(20 + n, hour, minute), kind="return", visit_id=None,
                 patient_id=None) for n in range(count)]


def outside(events: list[WorkEvent], overrides: dict | None = None,
            timezone: str = ZONE) -> list:
    """Return hours.outside_service_hours' findings over `events`."""
    given = facts(work_events=tuple(events), timezone=timezone)
    return [f for f in found(HOURS, given, overrides) if f.rule_id == "hours.outside_service_hours"]


def subjects(findings: list) -> list[str]:
    """Return each finding's subject as kind:id, sorted."""
    return sorted(f"{f.subject.kind}:{f.subject.id}" for f in findings)


BOTH = ["nurse:nurse-1", "patient:patient-1"]


@pytest.mark.parametrize(("case", "events", "overrides", "expected"), [
    # off_hours_min_events 3 in off_hours_window_days 28.
    ("none", [], None, []),
    ("one at night", nights(1), None, []),
    ("two at night", nights(2), None, []),
    ("three at night", nights(3), None, BOTH),
    ("three, one with a reason", [*nights(2), work(9, local(28, 23), has_reason=True)], None,
     BOTH),
    ("one with a reason", nights(1, has_reason=True), None, []),
    ("two a case by policy", nights(2), {"off_hours_min_events": 2}, BOTH),
    # service_hours_end 21: 21:00 is outside, 20:59 within.
    ("three at 20:59", nights(3, 20, 59), None, []),
    ("three at 21:00", nights(3, 21, 0), None, BOTH),
    # service_hours_start 7: 06:59 is outside, 07:00 within.
    ("three at 06:59", nights(3, 6, 59), None, BOTH),
    ("three at 07:00", nights(3, 7, 0), None, []),
    ("three at 22:00, hours to 23:00", nights(3, 22), {"service_hours_end": 23}, []),
    ("three overnight hours 22-06 at 23:00", nights(3, 23),
     {"service_hours_start": 22, "service_hours_end": 6}, []),
    ("three overnight hours 22-06 at 12:00", nights(3, 12),
     {"service_hours_start": 22, "service_hours_end": 6}, BOTH),
    # A visit's check-in, dose and waste at night are one occasion.
    ("one visit, three events", [work(1, local(25, 23), "check_in"),
                                 work(2, local(25, 23, 10), visit_id="visit-1"),
                                 work(3, local(25, 23, 15), "waste", visit_id="visit-1")],
     None, []),
    # off_hours_window_days 28: the third is 29 days old.
    ("third outside the window", [*nights(2), work(9, local(1, 23))], None, []),
    ("third inside the window", [*nights(2), work(9, local(3, 23))], None, BOTH),
])
def test_outside_service_hours_thresholds(case, events, overrides, expected):
    assert subjects(outside(events, overrides)) == expected


@pytest.mark.parametrize(("case", "events", "overrides", "expected"), [
    # service_hours_vault_grace_minutes 120: the hours widen to 05:00-23:00 for the vault.
    ("returns at 21:00", returns(3, 21, 0), None, []),
    ("returns at 22:59", returns(3, 22, 59), None, []),
    ("returns at 23:00", returns(3, 23, 0), None, ["nurse:nurse-1"]),
    ("filled at 05:00", returns(3, 5, 0), None, []),
    ("filled at 04:59", returns(3, 4, 59), None, ["nurse:nurse-1"]),
    ("returns at 21:00, no grace", returns(3, 21, 0),
     {"service_hours_vault_grace_minutes": 0}, ["nurse:nurse-1"]),
])
def test_bag_movements_have_the_grace_of_a_bag_return(case, events, overrides, expected):
    assert subjects(outside(events, overrides)) == expected


def test_bag_movements_name_no_patient():
    finding, = outside([*nights(2), *returns(1, 3)])
    assert "2 visits or doses, 1 bag movements" in finding.summary
    assert "1 patient)" in finding.summary


def test_the_organisation_s_timezone_decides():
    # 20:00 in New York is 01:00 UTC the next day.
    evenings = nights(3, 20)
    assert outside(evenings) == []
    assert subjects(outside(evenings, timezone="UTC")) == BOTH


def test_severity_rises_with_repetition():
    assert {f.severity for f in outside(nights(5))} == {Severity.MEDIUM}
    assert {f.severity for f in outside(nights(6))} == {Severity.HIGH}
    assert len({f.dedup_key for f in outside(nights(3))} | {
        f.dedup_key for f in outside(nights(6))}) == 2


def test_a_patient_seen_at_night_by_several_nurses_is_one_case():
    events = [work(n, local(20 + n, 23), nurse_id=f"nurse-{n}") for n in range(4)]
    findings = outside(events)
    assert subjects(findings) == ["patient:patient-1"]
    assert "4 times" in findings[0].summary and "4 nurses" in findings[0].summary


def test_the_summary_says_what_against_what_and_what_to_check():
    finding = next(f for f in outside(nights(3)) if f.subject.kind == "nurse")
    assert "3 times outside the organisation's service hours (07:00-21:00" in finding.summary
    assert "Check" in finding.summary
    assert finding.evidence["occasions"] == 3
    assert finding.evidence["patient_id"] == "patient-1"


def history(days: int = 20, hour: int = 10, late: int = 0) -> list[WorkEvent]:
    """Return `days` visits on days before the recent window, the first `late` at 19:30."""
    start = local(15, 12) - days * DAY
    return [work(200 + n, start + n * DAY + timedelta(hours=(19.5 if n < late else hour) - 12))
            for n in range(days)]


def recent(count: int = 8, late: int = 8, hour: int = 19, minute: int = 30) -> list[WorkEvent]:
    """Return `count` recent visits, the first `late` at `hour`:`minute`, the rest at 10:00."""
    return [work(300 + n, local(17 + n, hour if n < late else 10, minute if n < late else 0))
            for n in range(count)]


def many(count: int, late: int) -> list[WorkEvent]:
    """Return `count` recent visits, eight a day from 09:00, the first `late` at 19:30."""
    return [work(500 + n, local(17 + n // 8, 19, 30) if n < late
                 else local(17 + n // 8, 9 + n % 8)) for n in range(count)]


def shifted(events: list[WorkEvent], overrides: dict | None = None) -> list:
    """Return hours.pattern_shift's findings over `events`."""
    given = facts(work_events=tuple(events), timezone=ZONE)
    return [f for f in found(HOURS, given, overrides) if f.rule_id == "hours.pattern_shift"]


@pytest.mark.parametrize(("case", "events", "overrides", "flagged"), [
    ("no visits", [], None, False),
    ("her usual hours", history() + recent(late=0), None, False),
    ("all recent late", history() + recent(), None, True),
    # hours_shift_max_p_value 0.001, history 0 of 20 late.
    ("2 of 8 late: p 0.05", history() + recent(late=2), None, False),
    ("3 of 8 late: p 0.005", history() + recent(late=3), None, False),
    ("4 of 8 late: p 0.0003", history() + recent(late=4), None, True),
    ("3 of 8 late, p allowed 0.01", history() + recent(late=3),
     {"hours_shift_max_p_value": Decimal("0.01")}, True),
    ("half late before, 6 of 8 now: p 0.15", history(late=10) + recent(late=6), None, False),
    # hours_shift_min_rise 0.15: many visits make any rise significant, not any rise large.
    ("14 of 104 late after 0 of 200", history(200) + many(104, 14), None, False),
    ("16 of 104 late after 0 of 200", history(200) + many(104, 16), None, True),
    ("16 of 104 late, a rise of 0.20 asked", history(200) + many(104, 16),
     {"hours_shift_min_rise": Decimal("0.20")}, False),
    # hours_shift_min_recent 6, hours_shift_min_history 15.
    ("5 recent", history() + recent(5, 5), None, False),
    ("6 recent", history() + recent(6, 6), None, True),
    ("14 before", history(14) + recent(), None, False),
    ("15 before", history(15) + recent(), None, True),
    # hours_late_margin_minutes 180: from 18:00 a visit is late.
    ("recent at 17:59", history() + recent(hour=17, minute=59), None, False),
    ("recent at 18:00", history() + recent(hour=18, minute=0), None, True),
    ("recent at night", history() + recent(hour=23, minute=0), None, True),
    ("bag returns late are not visits", history() + returns(8, 23, 30), None, False),
])
def test_pattern_shift_thresholds(case, events, overrides, flagged):
    assert bool(shifted(events, overrides)) is flagged


def test_a_shift_is_one_case_about_the_nurse_against_her_history():
    finding, = shifted(history() + recent())
    assert (finding.subject.kind, finding.subject.id) == ("nurse", "nurse-1")
    assert (finding.evidence["recent_late"], finding.evidence["history_late"]) == (8, 0)
    assert "against 0 of her 20 before" in finding.summary and "Check" in finding.summary


# Zones whose offsets change on the hour, on the half hour (Lord Howe), at :45 (Chatham), or
# never (Kathmandu's +5:45), and one far from UTC.
ZONES = ("America/Chicago", "Europe/London", "Australia/Lord_Howe", "Pacific/Chatham",
         "Asia/Kathmandu", "Pacific/Kiritimati")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(zone=st.sampled_from(ZONES),
       moments=st.lists(st.integers(1_577_836_800_000_000, 1_893_456_000_000_000).map(
           lambda micros: datetime.fromtimestamp(micros / 1_000_000, UTC)),
           min_size=1, max_size=20))
def test_local_minutes_match_the_zones_own_conversion(zone, moments):
    local_minute = _LocalMinutes(ZoneInfo(zone))
    for moment in moments:
        local = moment.astimezone(ZoneInfo(zone))
        assert local_minute(moment) == local.hour * 60 + local.minute


@pytest.mark.parametrize("zone", ZONES)
def test_local_minutes_around_each_offset_change(zone):
    local_minute, tz = _LocalMinutes(ZoneInfo(zone)), ZoneInfo(zone)
    moment, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    while moment < end:
        local = moment.astimezone(tz)
        assert local_minute(moment) == local.hour * 60 + local.minute, moment
        moment += timedelta(minutes=7)


def test_both_hours_rules_read_the_same_occasions_once():
    shared = facts(work_events=(WorkEvent(id="w1", kind="dose", nurse_id="n1",
                                          occurred_at=datetime(2026, 11, 3, 23, tzinfo=UTC),
                                          patient_id="p1", visit_id="v1", has_reason=False),))
    assert occasions(shared) is occasions(shared)
    assert occasions(replace(shared)) is not occasions(shared)
    assert occasions(replace(shared)) == occasions(shared)
