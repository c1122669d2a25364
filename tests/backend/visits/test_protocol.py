"""The default plan from policy schedules end to end on the protocol's dates, with no override.

CLINICAL.md Frequency: twice weekly in induction, weekly in maintenance, then tapering (every
two weeks). Each phase's 7- and 28-day limits count its own doses; the minimum interval counts
every dose, across phase boundaries too.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from itertools import combinations
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.accounts.models import Role
from backend.auth.caller import Caller
from backend.plans import service as plans
from backend.policy.service import policy_for
from backend.visits import service as visits
from backend.visits.models import Visit
from safeguards import Dose, Facts, Phase, Policy, run
from safeguards import Visit as VisitFact
from safeguards.rules.frequency import FREQUENCY
from tests.factories import Clinic, World

CHICAGO = ZoneInfo("America/Chicago")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Twice weekly at one time of day: two weekdays 3 or 4 days apart (Monday and Thursday...).
# Two days apart would be 47 h across the spring daylight-saving change, under the 48 h
# minimum interval, which is in real hours.
PAIRS = [(a, b) for a, b in combinations(range(7), 2) if 3 <= b - a <= 4]
TAPER_DOSES = 6


@pytest.fixture
def clinic(world: World) -> Clinic:
    return Clinic(world)


@pytest.fixture
def signed_in(clinic: Clinic) -> tuple[dict, dict]:
    """Return the admin's and the prescriber's headers, signed in once for every example."""
    return clinic.as_(Role.ADMIN), clinic.as_(Role.PRESCRIBER)


def _series(clinic: Clinic, admin: dict, plan_id: str, first: date, hour: int,
            rule: str) -> list[dict]:
    """Schedule a series from `first` at `hour` local; fail on any refusal."""
    first_start = datetime.combine(first, time(hour), CHICAGO)
    response = clinic.client.post(f"/api/v1/plans/{plan_id}/visits", headers=admin,
                                  json={"nurse_id": str(clinic.nurse.id),
                                        "first_start": first_start.isoformat(), "rrule": rule})
    assert response.status_code == 201, (rule, first_start, response.json)
    return response.json


def _until(next_phase: date) -> str:
    return f"UNTIL={(next_phase - timedelta(days=1)).strftime('%Y%m%d')}T235959"


def _course(clinic: Clinic, admin: dict, plan: dict, pair: tuple[int, int], kept: int,
            hour: int) -> list[list[dict]]:
    """Schedule induction on the pair's days, then maintenance and taper on the kept day."""
    phases = plan["versions"][-1]["phases"]
    induction, maintenance, taper = (date.fromisoformat(p["starts_on"]) for p in phases)
    days, day = ",".join(WEEKDAYS[d] for d in pair), WEEKDAYS[pair[kept]]
    return [
        _series(clinic, admin, plan["id"], induction, hour,
                f"FREQ=WEEKLY;BYDAY={days};{_until(maintenance)}"),
        _series(clinic, admin, plan["id"], maintenance, hour,
                f"FREQ=WEEKLY;BYDAY={day};{_until(taper)}"),
        _series(clinic, admin, plan["id"], taper, hour,
                f"FREQ=WEEKLY;INTERVAL=2;BYDAY={day};COUNT={TAPER_DOSES}")]


def _as_doses(booked: list[Visit], clinic: Clinic) -> Facts:
    """Return the safeguards' facts of each booked visit's dose given at its start."""
    version = plans.active_version(clinic.world.session, booked[0].patient_id)
    phases = {p.ordinal: Phase(p.name, p.min_interval_hours, p.max_per_7_days, p.max_per_28_days,
                               plans.counted_from(p.ordinal, p.starts_on))
              for p in version.phases}
    doses = tuple(Dose(
        id=f"dose-{n}", patient_id=str(v.patient_id), nurse_id=str(v.nurse_id),
        visit_id=str(v.id), device_id=None, plan_version_id=str(v.plan_version_id),
        given_at=v.scheduled_start, received_at=v.scheduled_start, quantity_ug=35_000,
        phase=phases[v.phase_ordinal]) for n, v in enumerate(booked))
    facts = tuple(VisitFact(id=str(v.id), patient_id=str(v.patient_id), nurse_id=str(v.nurse_id),
                            scheduled_start=v.scheduled_start, scheduled_end=v.scheduled_end,
                            status="completed", series=True) for v in booked)
    return Facts(organisation_id=str(clinic.org.id), as_of=booked[-1].scheduled_end,
                 timezone="America/Chicago", doses=doses, visits=facts)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(starts_in=st.integers(min_value=1, max_value=200), pair=st.sampled_from(PAIRS),
       kept=st.integers(min_value=0, max_value=1), hour=st.integers(min_value=8, max_value=15))
def test_the_default_plan_schedules_on_the_protocol_s_dates_with_no_override(
        clinic: Clinic, signed_in, connection, starts_in, pair, kept, hour):
    admin, prescriber = signed_in
    example = connection.begin_nested()
    try:
        starts_on = date(2026, 11, 2) + timedelta(days=starts_in)
        patient = clinic.client.post("/api/v1/patients", headers=admin, json={
            "mrn": f"MRN-P{starts_in}", "name": "Pat Protocol", "date_of_birth": "1970-01-01",
            "nurse_ids": [str(clinic.nurse.id)]})
        assert patient.status_code == 201, patient.json
        plan = clinic.client.post(f"/api/v1/patients/{patient.json['id']}/plans",
                                  headers=prescriber, json={
                                      "product_id": clinic.product_id, "route": "IV",
                                      "dose_ug_per_kg": 500, "max_dose_ug": 70_000,
                                      "infusion_minutes": 40,
                                      "starts_on": starts_on.isoformat()}).json
        session = clinic.world.session
        expected = plans.default_phases(policy_for(session, clinic.org.id), starts_on)
        assert [(p["name"], p["starts_on"]) for p in plan["versions"][-1]["phases"]] == [
            (p.name, p.starts_on.isoformat()) for p in expected]
        induction, maintenance, taper = _course(clinic, admin, plan, pair, kept, hour)
        assert (len(induction), len(maintenance), len(taper)) == (8, 4, TAPER_DOSES)
        booked = [session.get(Visit, uuid.UUID(v["id"]))
                  for v in (*induction, *maintenance, *taper)]
        assert [v.override_reason for v in booked] == [None] * len(booked)
        assert [v.phase_ordinal for v in booked] == [0] * 8 + [1] * 4 + [2] * TAPER_DOSES
        admin = clinic.users[Role.ADMIN]
        standings = visits.frequency_standings(
            session, Caller(admin.id, clinic.org.id, Role.ADMIN, None, None, None), booked)
        assert [s.violation for s in standings.values()] == [None] * len(booked)
        # The safeguards judge the same doses as the scheduler did: nothing to flag.
        assert run(FREQUENCY, _as_doses(booked, clinic), Policy()) == []
    finally:
        # The test's session read inside the example: its savepoint goes with the example's.
        clinic.world.session.rollback()
        example.rollback()


def test_the_minimum_interval_spans_the_boundary_and_a_prescriber_may_override_it(
        clinic: Clinic):
    clinic.plan()
    # Induction ends on Sunday 29 November; maintenance starts on Monday the 30th.
    assert clinic.schedule("2026-11-29T15:00:00+00:00").status_code == 201
    refused = clinic.schedule("2026-11-30T15:00:00+00:00")
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "min_interval"
    overridden = clinic.schedule("2026-11-30T15:00:00+00:00", role=Role.PRESCRIBER,
                                 override_reason="family event on Tuesday; agreed")
    assert overridden.status_code == 201, overridden.json
    assert overridden.json["override_reason"] == "family event on Tuesday; agreed"


@pytest.mark.parametrize(("existing", "proposed", "refused"), [
    # Induction's Thursday and Sunday do not count toward maintenance's week.
    (["2026-11-26T15:00:00+00:00", "2026-11-29T15:00:00+00:00"], "2026-12-01T15:00:00+00:00",
     None),
    # They do toward the minimum interval: 47 h.
    (["2026-11-26T15:00:00+00:00", "2026-11-29T15:00:00+00:00"], "2026-12-01T14:00:00+00:00",
     "min_interval"),
    # Maintenance's own week: one dose.
    (["2026-11-30T15:00:00+00:00"], "2026-12-03T15:00:00+00:00", "weekly_limit"),
    # Maintenance's Tuesday does not count back into induction's week.
    (["2026-11-23T15:00:00+00:00", "2026-12-01T15:00:00+00:00"], "2026-11-27T15:00:00+00:00",
     None),
])
def test_a_visit_at_the_boundary_is_judged_by_its_phase_s_doses(clinic: Clinic, existing,
                                                                   proposed, refused):
    clinic.plan()
    for start in existing:
        assert clinic.schedule(start).status_code == 201
    response = clinic.schedule(proposed)
    assert (response.json["error"]["code"] if response.status_code == 409 else None) == refused
