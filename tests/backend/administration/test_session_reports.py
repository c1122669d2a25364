"""Records drawn from a session: the monitoring record's gaps and thresholds, the trajectory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.administration.reports import vitals_acceptable
from backend.audit.models import AuditEvent
from safeguards.policy import Policy
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.factories import World

CHECK_IN = {"latitude": "41.878300", "longitude": "-87.629800", "accuracy_m": 12,
            "occurred_at": "2026-11-03T15:02:00+00:00"}


def _at(clock_time: str) -> str:
    return f"2026-11-03T{clock_time}:00+00:00"


def _record_session(visit: Session) -> None:
    """Check in and record a full session: dose at 15:10, discharge at 17:20."""
    pharmacy = visit.pharmacy
    checked_in = pharmacy.client.post(f"/api/v1/visits/{visit.visit['id']}/check-in",
                                      headers=visit.phone_headers, json=CHECK_IN)
    assert checked_in.status_code == 200, checked_in.json
    parts = [
        ("pre-dose", {**PRE, "occurred_at": _at("15:05"), "co_medications": ["benzodiazepine"],
                      "cadss_items": {"1": 0, "2": 0, "6": 0, "7": 0, "15": 1, "22": 0}}),
        ("dose", {**dose(pharmacy.product_id), "occurred_at": _at("15:10")}),
        ("observations", {"occurred_at": _at("15:40"), "systolic": 160, "diastolic": 95,
                          "heart_rate": 88, "spo2": 97, "respiratory_rate": 16, "moaas": 3,
                          "cadss_items": {"1": 2, "2": 1, "6": 0, "7": 3, "15": 1, "22": 0}}),
        ("observations", {"occurred_at": _at("15:52"), "systolic": 148, "diastolic": 91}),
        ("observations", {"occurred_at": _at("16:30"), "systolic": 130, "diastolic": 84}),
        ("discharge", {"occurred_at": _at("17:20"), "systolic": 124, "diastolic": 80,
                       "spo2": 98, "moaas": 5, "state": "baseline",
                       "adverse_event_category": "nausea_vomiting",
                       "adverse_events": "mild nausea at 30 min"}),
        ("outcomes", {"occurred_at": _at("17:10"), "instrument": "phq9",
                      "items": {str(i): 1 for i in range(1, 10)}}),
    ]
    for part, body in parts:
        response = visit.post(part, visit.signed(body))
        assert response.status_code == 201, (part, response.json)


@pytest.fixture
def recorded(world: World) -> Session:
    visit = Session(world)
    _record_session(visit)
    return visit


def _get(visit: Session, path: str, role: Role = Role.COMPLIANCE, **query):
    return visit.pharmacy.client.get(path, headers=visit.pharmacy.as_(role), query_string=query)


def _audited(visit: Session, action: str) -> list[AuditEvent]:
    return list(visit.pharmacy.world.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action)))


def test_no_bp_within_ten_minutes_of_forty_leaves_it_empty(world: World):
    visit = Session(world)
    visit.post("dose", visit.signed(dose(visit.pharmacy.product_id)))
    visit.post("observations", visit.signed({"occurred_at": _at("16:05"), "systolic": 130,
                                             "diastolic": 80}))
    form = _get(visit, f"/api/v1/visits/{visit.visit['id']}/monitoring-record").json
    assert form["bp_40_min_systolic"] is None
    assert (form["sedation"], form["minutes_monitored"], form["adverse_events"]) == (
        None, None, None)


def test_another_nurse_cannot_read_the_record_or_the_export(recorded: Session, world: World):
    other = world.user(recorded.pharmacy.org, Role.NURSE)
    headers = world.headers(recorded.pharmacy.org, other)
    for path in ("monitoring-record", "fhir"):
        response = recorded.pharmacy.client.get(
            f"/api/v1/visits/{recorded.visit['id']}/{path}", headers=headers)
        assert response.status_code == 404
    trajectory = recorded.pharmacy.client.get(
        f"/api/v1/patients/{recorded.pharmacy.patient_id}/trajectory", headers=headers)
    assert trajectory.status_code == 404


@pytest.mark.parametrize(("vitals", "acceptable"), [
    ({"systolic": 140, "diastolic": 90, "spo2": 92}, True),
    ({"systolic": 141, "diastolic": 80, "spo2": 98}, False),
    ({"systolic": 120, "diastolic": 91, "spo2": 98}, False),
    ({"systolic": 120, "diastolic": 80, "spo2": 91}, False),
    ({"systolic": 120, "diastolic": 80, "spo2": None}, None),
])
def test_vitals_are_acceptable_within_the_hold_thresholds(vitals, acceptable):
    assert vitals_acceptable(Policy(), SimpleNamespace(**vitals)) is acceptable


def test_the_hold_thresholds_follow_the_policy():
    stricter = Policy().with_overrides({"bp_hold_systolic": 130})
    assert vitals_acceptable(stricter, SimpleNamespace(systolic=135, diastolic=80,
                                                       spo2=98)) is False


def test_the_trajectory_lists_scores_and_doses_by_date(recorded: Session):
    pharmacy = recorded.pharmacy
    later = pharmacy.schedule("2026-11-06T15:00:00+00:00").json
    # No pre-dose at the second visit, so no weight was used: its µg/kg is unknown.
    for part, body in [
        ("dose", {**dose(pharmacy.product_id, 42_000), "occurred_at": "2026-11-06T15:10:00Z",
                  "infusion_started_at": "2026-11-06T15:10:00Z",
                  "infusion_ended_at": "2026-11-06T15:50:00Z"}),
        ("outcomes", {"occurred_at": "2026-11-06T17:00:00Z", "instrument": "phq9",
                      "items": {str(i): 0 for i in range(1, 10)}})]:
        response = pharmacy.client.post(f"/api/v1/visits/{later['id']}/{part}",
                                         headers=recorded.phone_headers,
                                         json=recorded.signed(body))
        assert response.status_code == 201, response.json
    response = _get(recorded, f"/api/v1/patients/{pharmacy.patient_id}/trajectory",
                    role=Role.NURSE)
    assert response.status_code == 200, response.json
    assert [(s["instrument"], s["total"], s["date"]) for s in response.json["scores"]] == [
        ("phq9", 9, "2026-11-03"), ("phq9", 0, "2026-11-06")]
    assert [(d["quantity_ug"], d["ug_per_kg"], d["visit_id"])
            for d in response.json["doses"]] == [
        (35_000, "500.000", recorded.visit["id"]), (42_000, None, later["id"])]
    [read] = _audited(recorded, "patient.trajectory_read")
    assert read.object_id == pharmacy.patient_id
