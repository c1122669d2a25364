"""Check-ins away from home, visits too short for a dose, and a nurse at two homes at once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards import Severity, Subject, SubjectKind, dedup_key
from safeguards.rules.evv import EVV, distance_m
from tests.safeguards.factories import (
    HOME,
    NORTH_1KM,
    T0,
    dose,
    evv,
    facts,
    found,
    ids,
    visit,
)

SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)

RANGE_CASES = [
    # the radius stored with the event (the policy's evv_radius_m when it was recorded)
    ("inside", "check_in", dict(distance_m=249), None),
    ("on the radius", "check_in", dict(distance_m=250), None),
    ("1 m out, a reason", "check_in", dict(distance_m=251, reason="Parked down the road"),
     Severity.LOW),
    ("1 m out, no reason", "check_in", dict(distance_m=251), Severity.MEDIUM),
    ("home not placed", "check_in", dict(distance_m=None, reason="New address"), Severity.LOW),
    ("check-out out", "check_out", dict(distance_m=2_000), Severity.MEDIUM),
]


@pytest.mark.parametrize(("kind", "fields", "severity"), [c[1:] for c in RANGE_CASES],
                         ids=[c[0] for c in RANGE_CASES])
def test_out_of_range_cases(kind, fields, severity):
    findings = found(EVV, facts(evv=(evv(kind, **fields),)))
    assert [f.severity for f in findings] == ([severity] if severity else [])
    assert all(f.rule_id == f"evv.{kind}_out_of_range" for f in findings)


def test_out_of_range_is_a_case_of_the_nurse_at_the_patients_home():
    [finding] = found(EVV, facts(evv=(evv(distance_m=400, reason="Gate code wrong"),)))
    subject = Subject(SubjectKind.NURSE, "nurse-1")
    assert finding.subject == subject
    assert finding.dedup_key == dedup_key("evv.check_in_out_of_range", subject, ("patient-1",))
    assert finding.occurrence == "evv-1-check_in"
    assert finding.summary == "Check-in 400 m from home (radius 250 m); nurse's reason: " \
                              "Gate code wrong. Check the home's recorded location and the " \
                              "nurse's other visits to this patient."
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["patient_id"] == "patient-1"
    assert finding.evidence["evv_event_id"] == "evv-1-check_in"


CASE_CASES = [
    # (who checked in where, one case per (nurse, patient), occurrences per case)
    ("one home, three visits", [("nurse-1", "patient-1", "v1"), ("nurse-1", "patient-1", "v2"),
                                ("nurse-1", "patient-1", "v3")], [3]),
    ("two homes", [("nurse-1", "patient-1", "v1"), ("nurse-1", "patient-2", "v2")], [1, 1]),
    ("two nurses, one home", [("nurse-1", "patient-1", "v1"), ("nurse-2", "patient-1", "v2")],
     [1, 1]),
]


@pytest.mark.parametrize(("visits", "occurrences"), [c[1:] for c in CASE_CASES],
                         ids=[c[0] for c in CASE_CASES])
def test_out_of_range_check_ins_gather_into_one_case_per_nurse_and_home(visits, occurrences):
    events = tuple(evv(nurse_id=nurse, patient_id=patient, visit_id=visit_id,
                       id=f"evv-{visit_id}", distance_m=3_000, reason="Parked far")
                   for nurse, patient, visit_id in visits)
    cases: dict[str, set[str]] = {}
    for finding in found(EVV, facts(evv=events)):
        cases.setdefault(finding.dedup_key, set()).add(finding.occurrence_key)
    assert sorted(len(keys) for keys in cases.values()) == sorted(occurrences)


def dosed_visit(stay: timedelta, infusion: int | None = 40, **fields) -> dict:
    """Return a dosed visit the nurse stayed at for `stay`."""
    start = T0 - timedelta(minutes=10)
    times = {"checked_in_at": start, "checked_out_at": start + stay,
             "plan_infusion_minutes": infusion}
    return {"doses": (dose(),), "visits": (visit(**{**times, **fields}),)}


def offline_visit(stay: timedelta) -> dict:
    """Return a dosed visit whose check-in and check-out reached the server together."""
    start = T0 - timedelta(minutes=10)
    synced = {"checked_in_at": T0 + 3 * HOUR, "checked_out_at": T0 + 3 * HOUR + SECOND}
    return {**dosed_visit(timedelta(0), **synced),
            "evv": (evv("check_in", start, 1), evv("check_out", start + stay, 1))}


SHORT_CASES = [
    # monitoring_window_minutes 120, from the dose; the 40 min infusion runs inside it
    ("120 min", dosed_visit(timedelta(minutes=120)), {}, False),
    ("a second under 120 min", dosed_visit(timedelta(minutes=120) - SECOND), {}, True),
    ("injection: 120 min", dosed_visit(timedelta(minutes=120), infusion=None), {}, False),
    ("injection: under 120 min", dosed_visit(timedelta(minutes=119), infusion=None), {}, True),
    ("window shortened", dosed_visit(timedelta(minutes=100)),
     {"monitoring_window_minutes": 60}, False),
    ("not dosed", {"visits": dosed_visit(timedelta(minutes=30))["visits"]}, {}, False),
    ("not checked out", dosed_visit(timedelta(minutes=30), checked_out_at=None), {}, False),
    # Synced later from offline: received together, but 120 min apart on the phone's clock.
    ("offline, 120 min on the phone", offline_visit(timedelta(minutes=120)), {}, False),
    ("offline, a second under on the phone",
     offline_visit(timedelta(minutes=120) - SECOND), {}, True),
]


@pytest.mark.parametrize(("visit_facts", "overrides", "expected"),
                         [c[1:] for c in SHORT_CASES], ids=[c[0] for c in SHORT_CASES])
def test_visit_too_short_cases(visit_facts, overrides, expected):
    findings = found(EVV, facts(**visit_facts), overrides)
    assert ("evv.visit_too_short" in ids(findings)) is expected


def test_visit_too_short_uses_the_plan_s_monitoring_window():
    visit_facts = dosed_visit(timedelta(minutes=110))
    plans = {"plan-1": {"monitoring_window_minutes": 90}}
    assert found(EVV, facts(**visit_facts, plan_overrides=plans)) == []
    [finding] = found(EVV, facts(**visit_facts))
    assert finding.evidence["required_minutes"] == 120
    assert finding.evidence["patient_id"] == "patient-1"


def test_visits_too_short_are_one_case_of_the_nurse_at_the_patient_s_home():
    [finding] = found(EVV, facts(**dosed_visit(timedelta(minutes=90))))
    subject = Subject(SubjectKind.NURSE, "nurse-1")
    assert finding.subject == subject
    assert finding.dedup_key == dedup_key("evv.visit_too_short", subject, ("patient-1",))
    assert finding.occurrence == "visit-1"
    assert "Check the session's monitoring record" in finding.summary


def stays(*visits: tuple[int, timedelta, timedelta, tuple[Decimal, Decimal]]) -> tuple:
    """Return check-ins and check-outs of nurse-1: (visit, in after T0, out after T0, where)."""
    events = []
    for number, arrived, left, where in visits:
        events.append(evv("check_in", T0 + arrived, number, where))
        if left is not None:
            events.append(evv("check_out", T0 + left, number, where))
    return tuple(events)


H = timedelta(hours=1)
# 1 km apart less 10 m accuracy at each end is 980 m: 100 km/h covers it in 35.28 s.
TRAVEL_CASES = [
    ("one after the other, time to drive", stays((1, 0 * H, 3 * H, HOME),
                                                 (2, 3.5 * H, 6 * H, NORTH_1KM)), {}, False),
    ("980 m in 35.28 s is 100 km/h", stays((1, 0 * H, 3 * H, HOME), (
        2, 3 * H + timedelta(seconds=35.28), 6 * H, NORTH_1KM)), {}, False),
    ("980 m in 35 s is faster", stays((1, 0 * H, 3 * H, HOME), (
        2, 3 * H + timedelta(seconds=35), 6 * H, NORTH_1KM)), {}, True),
    ("speed limit raised", stays((1, 0 * H, 3 * H, HOME), (
        2, 3 * H + timedelta(seconds=35), 6 * H, NORTH_1KM)), {"travel_max_kmh": 101}, False),
    ("overlapping at two homes", stays((1, 0 * H, 3 * H, HOME),
                                       (2, 2 * H, 5 * H, NORTH_1KM)), {}, True),
    ("overlapping in one home", stays((1, 0 * H, 3 * H, HOME), (2, 2 * H, 5 * H, HOME)), {},
     False),
    ("inside another visit", stays((1, 0 * H, 6 * H, HOME), (2, 1 * H, 2 * H, NORTH_1KM),
                                   (3, 3 * H, 4 * H, HOME)), {}, True),
    ("never checked out", stays((1, 0 * H, None, HOME), (2, 1 * H, 2 * H, NORTH_1KM)), {},
     False),
]


@pytest.mark.parametrize(("events", "overrides", "expected"), [c[1:] for c in TRAVEL_CASES],
                         ids=[c[0] for c in TRAVEL_CASES])
def test_impossible_travel_cases(events, overrides, expected):
    findings = found(EVV, facts(evv=events), overrides)
    assert ("evv.impossible_travel" in ids(findings)) is expected


def test_impossible_travel_is_keyed_by_the_pair_of_visits():
    events = stays((1, 0 * H, 3 * H, HOME), (2, 2 * H, 5 * H, NORTH_1KM))
    [finding] = found(EVV, facts(evv=events))
    assert finding.subject == Subject(SubjectKind.NURSE, "nurse-1")
    assert (finding.evidence["first_visit_id"], finding.evidence["second_visit_id"]) == (
        "visit-1", "visit-2")
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["distance_m"] == 1_000
    more = events + stays((3, 30 * H, 33 * H, HOME))
    assert [f.dedup_key for f in found(EVV, facts(evv=more))] == [finding.dedup_key]


def test_other_nurses_visits_are_not_hers():
    events = stays((1, 0 * H, 3 * H, HOME)) + tuple(
        evv(kind, T0 + at, 2, NORTH_1KM, nurse_id="nurse-2")
        for kind, at in (("check_in", 1 * H), ("check_out", 2 * H)))
    assert found(EVV, facts(evv=events)) == []


@pytest.mark.parametrize(("here", "there", "metres"), [
    (HOME, HOME, 0),
    (HOME, NORTH_1KM, 1_000),
    # A quarter of a meridian is pi/2 Earth radii (6,371,008.8 m).
    ((Decimal(0), Decimal(0)), (Decimal(90), Decimal(0)), 10_007_557),
    ((Decimal(0), Decimal(179)), (Decimal(0), Decimal(-91)), 10_007_557),
])
def test_distance_is_the_haversine_in_whole_metres(here, there, metres):
    assert distance_m(*here, *there) == metres
