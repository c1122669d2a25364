"""Scheduling refusals named by rule, overrides that raise flags, the visit lifecycle and EVV."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from backend.accounts.models import Role
from backend.flags.models import Flag
from backend.visits.frequency import Limits, Schedule, violation_at
from tests.factories import ESKETAMINE, Clinic, World

DAY1, DAY2, DAY3 = "2026-11-03T15:00:00+00:00", "2026-11-04T15:00:00+00:00", \
    "2026-11-05T15:00:00+00:00"
HOME = {"latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 12,
        "occurred_at": "2026-11-03T15:02:00+00:00"}
FAR = {**HOME, "latitude": "41.888100"}  # about 1.1 km north


@pytest.fixture
def clinic(world: World) -> Clinic:
    clinic = Clinic(world)
    clinic.plan()
    return clinic


def _flags(clinic: Clinic, rule_id: str) -> list[Flag]:
    return list(clinic.world.session.scalars(select(Flag).where(
        Flag.organisation_id == clinic.org.id, Flag.rule_id == rule_id)))


def _code(response) -> str:
    return response.json["error"]["code"]


def test_schedule_a_visit_with_the_policy_duration(clinic: Clinic):
    response = clinic.schedule(DAY1)
    assert response.status_code == 201, response.json
    assert response.json["status"] == "scheduled"
    assert response.json["scheduled_end"] == "2026-11-03T18:00:00+00:00"
    assert response.json["phase_ordinal"] == 0


def test_min_interval_is_refused_naming_the_rule(clinic: Clinic):
    assert clinic.schedule(DAY1).status_code == 201
    refused = clinic.schedule(DAY2)
    assert refused.status_code == 409
    assert _code(refused) == "min_interval"
    assert refused.json["error"]["details"]["min_interval_hours"] == 48


def test_weekly_limit_counts_scheduled_visits(clinic: Clinic):
    assert clinic.schedule(DAY1).status_code == 201
    assert clinic.schedule(DAY3).status_code == 201
    refused = clinic.schedule("2026-11-07T15:00:00+00:00")
    assert _code(refused) == "weekly_limit"
    assert refused.json["error"]["details"]["limit"] == 2


def test_maintenance_phase_allows_one_a_week(clinic: Clinic):
    assert clinic.schedule("2026-12-01T15:00:00+00:00").status_code == 201
    assert _code(clinic.schedule("2026-12-04T15:00:00+00:00")) == "weekly_limit"


def test_double_booked_nurse_including_travel_time(clinic: Clinic):
    other_patient = clinic.patient([clinic.nurse])
    clinic.plan(patient_id=other_patient)
    assert clinic.schedule(DAY1).status_code == 201
    refused = clinic.client.post("/api/v1/visits", headers=clinic.as_(Role.ADMIN), json={
        "patient_id": other_patient, "nurse_id": str(clinic.nurse.id),
        "scheduled_start": "2026-11-03T18:15:00+00:00"})
    assert _code(refused) == "nurse_double_booked"
    fine = clinic.client.post("/api/v1/visits", headers=clinic.as_(Role.ADMIN), json={
        "patient_id": other_patient, "nurse_id": str(clinic.nurse.id),
        "scheduled_start": "2026-11-03T18:30:00+00:00"})
    assert fine.status_code == 201


def test_product_that_forbids_home_use_is_refused(world: World):
    clinic = Clinic(world)
    clinic.plan(product_id=clinic.product(ESKETAMINE), route="intranasal")
    refused = clinic.schedule(DAY1)
    assert _code(refused) == "home_administration_forbidden"


def test_no_active_plan_is_refused(world: World):
    clinic = Clinic(world)
    assert _code(clinic.schedule(DAY1)) == "no_active_plan"


def test_nurse_must_be_assigned(clinic: Clinic, world: World):
    stranger = world.user(clinic.org, Role.NURSE)
    response = clinic.schedule(DAY1, nurse_id=str(stranger.id))
    assert response.status_code == 422
    assert "nurse_id" in response.json["error"]["details"]["fields"]


def test_prescriber_override_is_recorded_and_flagged(clinic: Clinic):
    clinic.schedule(DAY1)
    response = clinic.schedule(DAY2, role=Role.PRESCRIBER,
                               override_reason="patient travelling; agreed with psychiatry")
    assert response.status_code == 201, response.json
    assert response.json["override_reason"].startswith("patient travelling")
    [flag] = _flags(clinic, "scheduling.frequency_override")
    assert flag.subject_id == response.json["id"]
    assert flag.evidence["reason"].startswith("patient travelling")
    assert flag.evidence["prescriber_id"] == str(clinic.prescriber.id)
    assert flag.status == "open"


def test_only_a_prescriber_may_override(clinic: Clinic):
    clinic.schedule(DAY1)
    response = clinic.schedule(DAY2, role=Role.ADMIN, override_reason="please")
    assert response.status_code == 403
    assert _flags(clinic, "scheduling.frequency_override") == []


def test_series_from_rrule_keeps_local_time_across_dst(world: World, clock):
    clock.set(datetime(2026, 10, 20, tzinfo=UTC))
    clinic = Clinic(world)
    clinic.plan(starts_on="2026-10-26")
    response = clinic.client.post(f"/api/v1/plans/{_plan_id(clinic)}/visits",
                                  headers=clinic.as_(Role.ADMIN),
                                  json={"nurse_id": str(clinic.nurse.id),
                                        "first_start": "2026-10-26T10:00:00-05:00",
                                        "rrule": "FREQ=WEEKLY;BYDAY=MO,TH;COUNT=4"})
    assert response.status_code == 201, response.json
    starts = [v["scheduled_start"] for v in response.json]
    # Chicago leaves daylight time on 1 November: 10:00 local is 15:00 UTC, then 16:00 UTC.
    assert starts == ["2026-10-26T15:00:00+00:00", "2026-10-29T15:00:00+00:00",
                      "2026-11-02T16:00:00+00:00", "2026-11-05T16:00:00+00:00"]
    assert len({v["series_id"] for v in response.json}) == 1


def test_a_refused_occurrence_refuses_the_whole_series(clinic: Clinic):
    plan_id = _plan_id(clinic)
    response = clinic.client.post(f"/api/v1/plans/{plan_id}/visits",
                                  headers=clinic.as_(Role.ADMIN),
                                  json={"nurse_id": str(clinic.nurse.id),
                                        "first_start": DAY1,
                                        "rrule": "FREQ=DAILY;COUNT=3"})
    assert response.status_code == 409
    assert response.json["error"]["details"]["occurrence"] == 1
    listed = clinic.client.get("/api/v1/visits", headers=clinic.as_(Role.ADMIN)).json
    assert listed == []


def _plan_id(clinic: Clinic) -> str:
    from backend.plans.models import TreatmentPlan

    return str(clinic.world.session.scalar(select(TreatmentPlan.id).where(
        TreatmentPlan.organisation_id == clinic.org.id)))


def test_nurse_sees_only_her_schedule(clinic: Clinic, world: World):
    visit = clinic.schedule(DAY1).json
    mine = clinic.client.get("/api/v1/visits", headers=clinic.as_(Role.NURSE),
                             query_string={"nurse": "me", "from": "2026-11-01T00:00:00Z",
                                           "to": "2026-11-08T00:00:00Z"}).json
    assert [v["id"] for v in mine] == [visit["id"]]
    other = world.user(clinic.org, Role.NURSE)
    headers = world.headers(clinic.org, other)
    assert clinic.client.get("/api/v1/visits", headers=headers).json == []
    assert clinic.client.get(f"/api/v1/visits/{visit['id']}", headers=headers).status_code == 404
    device_id, _ = world.device(clinic.org, other)
    check_in = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in",
                                  headers=world.headers(clinic.org, other, device_id), json=HOME)
    assert check_in.status_code == 404


def test_cancel_needs_a_reason_and_frees_the_slot(clinic: Clinic):
    visit = clinic.schedule(DAY1).json
    assert clinic.client.post(f"/api/v1/visits/{visit['id']}/cancel",
                              headers=clinic.as_(Role.ADMIN), json={}).status_code == 422
    cancelled = clinic.client.post(f"/api/v1/visits/{visit['id']}/cancel",
                                   headers=clinic.as_(Role.ADMIN), json={"reason": "unwell"})
    assert cancelled.json["status"] == "cancelled"
    assert clinic.schedule(DAY2).status_code == 201


def test_reschedule_keeps_history_and_checks_the_rules(clinic: Clinic):
    first = clinic.schedule(DAY1).json
    second = clinic.schedule("2026-11-06T15:00:00+00:00").json
    too_close = clinic.client.post(f"/api/v1/visits/{first['id']}/reschedule",
                                   headers=clinic.as_(Role.ADMIN),
                                   json={"scheduled_start": "2026-11-05T15:00:00+00:00"})
    assert _code(too_close) == "min_interval"
    moved = clinic.client.post(f"/api/v1/visits/{first['id']}/reschedule",
                               headers=clinic.as_(Role.ADMIN),
                               json={"scheduled_start": "2026-11-04T15:00:00+00:00"})
    assert moved.status_code == 201, moved.json
    assert moved.json["rescheduled_from_id"] == first["id"]
    old = clinic.client.get(f"/api/v1/visits/{first['id']}", headers=clinic.as_(Role.ADMIN))
    assert old.json["status"] == "rescheduled"
    assert second["status"] == "scheduled"


def _nurse_phone(clinic: Clinic) -> dict:
    device_id, _ = clinic.world.device(clinic.org, clinic.nurse)
    return clinic.as_(Role.NURSE, device_id)


def test_check_in_and_out_at_home_completes_the_visit(clinic: Clinic, clock):
    visit = clinic.schedule(DAY1).json
    device_id, _ = clinic.world.device(clinic.org, clinic.nurse)
    clock.advance(hours=25)
    checked_in = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in",
                                    headers=clinic.as_(Role.NURSE, device_id), json=HOME)
    assert checked_in.status_code == 200, checked_in.json
    assert checked_in.json["status"] == "checked_in"
    clock.advance(hours=3)
    done = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-out",
                              headers=clinic.as_(Role.NURSE, device_id),
                              json={**HOME, "occurred_at": "2026-11-03T18:01:00+00:00"})
    assert done.json["status"] == "completed"
    evv = clinic.client.get(f"/api/v1/visits/{visit['id']}/evv",
                            headers=clinic.as_(Role.COMPLIANCE)).json
    assert evv["patient_id"] == clinic.patient_id
    assert evv["nurse_id"] == str(clinic.nurse.id)
    assert evv["date"] == "2026-11-03"
    assert evv["service"].startswith("Ketamine")
    assert evv["check_in"]["within_radius"] is True
    assert evv["check_in"]["distance_m"] == 0
    assert evv["check_in"]["occurred_at"] == "2026-11-03T15:02:00+00:00"
    assert evv["check_in"]["received_at"] == "2026-11-03T15:00:00+00:00"
    assert evv["check_out"]["received_at"] == "2026-11-03T18:00:00+00:00"


def test_out_of_range_check_in_needs_a_reason_and_is_flagged(clinic: Clinic):
    visit = clinic.schedule(DAY1).json
    phone = _nurse_phone(clinic)
    refused = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in", headers=phone,
                                 json=FAR)
    assert refused.status_code == 422
    assert "1112 m" in refused.json["error"]["details"]["fields"]["reason"][0]
    accepted = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in", headers=phone,
                                  json={**FAR, "reason": "patient staying with her sister"})
    assert accepted.status_code == 200
    [flag] = _flags(clinic, "evv.check_in_out_of_range")
    assert flag.evidence["distance_m"] == 1112
    assert flag.evidence["radius_m"] == 250


def test_policy_radius_is_used(clinic: Clinic):
    clinic.client.put("/api/v1/policy/evv_radius_m", headers=clinic.as_(Role.ADMIN),
                      json={"value": "1500"})
    visit = clinic.schedule(DAY1).json
    response = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in",
                                  headers=_nurse_phone(clinic), json=FAR)
    assert response.status_code == 200


def test_check_in_requires_a_registered_phone(clinic: Clinic):
    visit = clinic.schedule(DAY1).json
    response = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in",
                                  headers=clinic.as_(Role.NURSE), json=HOME)
    assert response.status_code == 403
    assert response.json["error"]["details"]["rule"] == "device_required"


def test_check_out_before_check_in_is_refused(clinic: Clinic):
    visit = clinic.schedule(DAY1).json
    response = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-out",
                                  headers=_nurse_phone(clinic), json=HOME)
    assert response.status_code == 409
    assert response.json["error"]["details"]["rule"] == "visit_state"


@pytest.mark.parametrize(("field", "value"), [("latitude", "91"), ("longitude", "-181"),
                                              ("accuracy_m", -1)])
def test_impossible_positions_are_refused(clinic: Clinic, field, value):
    visit = clinic.schedule(DAY1).json
    response = clinic.client.post(f"/api/v1/visits/{visit['id']}/check-in",
                                  headers=_nurse_phone(clinic), json={**HOME, field: value})
    assert response.status_code == 422
    assert field in response.json["error"]["details"]["fields"]


CHICAGO = ZoneInfo("America/Chicago")
SLOTS = st.integers(min_value=0, max_value=4 * 70).map(
    lambda k: datetime(2026, 11, 2, 15, tzinfo=UTC) + timedelta(hours=6 * k))
# Each phase's 7- and 28-day limits count the doses on its own (Chicago) dates.
PHASES = [(datetime(2026, 11, 2, 6, tzinfo=UTC), Limits(48, 2, 8, None, date(2026, 11, 30))),
          (datetime(2026, 11, 30, 6, tzinfo=UTC),
           Limits(48, 1, 4, date(2026, 11, 30), date(2026, 12, 28))),
          (datetime(2026, 12, 28, 6, tzinfo=UTC), Limits(48, 1, 2, date(2026, 12, 28)))]


def _policy_limits(at: datetime) -> Limits:
    return [limits for start, limits in PHASES if start <= at][-1]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(st.just("schedule"), SLOTS),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("reschedule"), st.integers(0, 20), SLOTS)), min_size=1, max_size=12))
def test_the_service_never_stores_a_schedule_that_breaks_the_plan(clinic: Clinic, connection,
                                                                  ops):
    headers = clinic.as_(Role.ADMIN)
    example = connection.begin_nested()
    try:
        for op in ops:
            held = [v for v in clinic.client.get("/api/v1/visits", headers=headers).json
                    if v["status"] == "scheduled"]
            if op[0] == "schedule":
                clinic.client.post("/api/v1/visits", headers=headers, json={
                    "patient_id": clinic.patient_id, "nurse_id": str(clinic.nurse.id),
                    "scheduled_start": op[1].isoformat()})
            elif held and op[0] == "cancel":
                clinic.client.post(f"/api/v1/visits/{held[op[1] % len(held)]['id']}/cancel",
                                   headers=headers, json={"reason": "test"})
            elif held:
                clinic.client.post(f"/api/v1/visits/{held[op[1] % len(held)]['id']}/reschedule",
                                   headers=headers, json={"scheduled_start": op[2].isoformat()})
            starts = Schedule.of([datetime.fromisoformat(v["scheduled_start"]) for v in
                                  clinic.client.get("/api/v1/visits", headers=headers).json
                                  if v["status"] == "scheduled"], CHICAGO)
            assert [t for t in starts.times
                    if violation_at(starts, t, _policy_limits(t))] == []
    finally:
        example.rollback()


def test_a_visit_cannot_be_scheduled_in_the_past(clinic: Clinic):
    response = clinic.schedule("2026-11-01T15:00:00+00:00")
    assert response.status_code == 422
    assert "scheduled_start" in response.json["error"]["details"]["fields"]
