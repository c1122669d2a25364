"""A weight raised by the dosing nurse just before her dose, driven through the API, is flagged
as the dose is recorded; an honest weighing raises nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.flags.models import Flag
from backend.scan import service as scan
from backend.scan.loaders import Scope, load_population
from tests.backend.administration.test_session_reports import _record_session
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.backend.scan.test_scan import AFTER
from tests.factories import Pharmacy, World

WEIGHT_RULES = ("plausibility.weight_change", "plausibility.weight_before_dose")


def _weigh(visit: Session, kilograms: str, measured_at: str, role: Role = Role.NURSE) -> None:
    response = visit.pharmacy.client.post(
        f"/api/v1/patients/{visit.pharmacy.patient_id}/weights",
        headers=visit.pharmacy.as_(role), json={"weight_kg": kilograms, "measured_at": measured_at})
    assert response.status_code == 201, response.json


def _dosed_after_weighing(world: World, kilograms: str) -> Session:
    """Weigh the patient at 70 kg for weeks, then at `kilograms` just before the nurse's dose."""
    visit = Session(world)
    for day in ("2026-10-18", "2026-10-25"):
        _weigh(visit, "70", f"{day}T10:00:00Z", Role.PRESCRIBER)
    world.rt.clock.set(AFTER)
    visit.phone_headers = visit.pharmacy.as_(Role.NURSE, visit.pharmacy.device_id)
    _weigh(visit, kilograms, "2026-11-03T14:55:00Z")
    assert visit.post("pre-dose", visit.signed(PRE)).status_code == 201
    # The plan's 0.5 mg/kg of the weight just recorded.
    quantity = int(float(kilograms) * 500)
    given = visit.post("dose", visit.signed(dose(visit.pharmacy.product_id, quantity)))
    assert given.status_code == 201, given.json
    return visit


def _flags(world: World, visit: Session) -> list[Flag]:
    return list(world.session.scalars(select(Flag).where(
        Flag.organisation_id == visit.pharmacy.org.id, Flag.rule_id.in_(WEIGHT_RULES))))


def test_a_weight_raised_just_before_the_dose_is_flagged_as_the_dose_is_recorded(world: World):
    visit = _dosed_after_weighing(world, "80")
    flags = {flag.rule_id: flag for flag in _flags(world, visit)}
    assert set(flags) == set(WEIGHT_RULES)
    raised = flags["plausibility.weight_before_dose"]
    assert (raised.subject_kind, raised.subject_id) == ("nurse", str(visit.pharmacy.nurse.id))
    assert (raised.evidence["weight_g"], raised.evidence["usual_weight_g"],
            raised.evidence["dose_ug"]) == (80_000, 70_000, 40_000)
    assert raised.patient_id == uuid.UUID(visit.pharmacy.patient_id)
    change = flags["plausibility.weight_change"]
    assert (change.subject_kind, change.evidence["change_g"]) == ("patient", 10_000)
    assert change.evidence["visit_id"] == visit.visit["id"]
    # The nightly scan finds the same cases again: still one flag each.
    scan.scan_organisation(world.session, world.rt, visit.pharmacy.org.id)
    assert len(_flags(world, visit)) == 2


@pytest.mark.parametrize("kilograms", ["70", "70.4", "71.2"])
def test_an_honest_weighing_before_the_dose_raises_no_weight_flag(world: World, kilograms):
    visit = _dosed_after_weighing(world, kilograms)
    scan.scan_organisation(world.session, world.rt, visit.pharmacy.org.id)
    assert _flags(world, visit) == []


def test_the_scan_reads_each_session_s_readings_work_by_the_hour_and_weighings(world: World):
    visit = Session(world)
    world.rt.clock.set(AFTER + timedelta(hours=2))
    visit.phone_headers = visit.pharmacy.as_(Role.NURSE, visit.pharmacy.device_id)
    _record_session(visit)
    now = world.rt.clock.now()
    facts = load_population(world.session, Scope(visit.pharmacy.org.id, now,
                                                 now - timedelta(days=30)), 2)
    nurse, patient, visit_id = (str(visit.pharmacy.nurse.id), visit.pharmacy.patient_id,
                                visit.visit["id"])
    readings, = facts.readings
    assert (readings.visit_id, readings.nurse_id, readings.patient_id) == (
        visit_id, nurse, patient)
    assert (readings.pre_dose.systolic, readings.pre_dose.cadss_total) == (122, 1)
    # The observations in their order, then the discharge.
    assert [v.systolic for v in readings.after_dose] == [160, 148, 130, 124]
    assert readings.after_dose[0].cadss_total == 7
    # The visit's first event (its check-in) stands for its dose and administer too: one
    # occasion either way (tests/backend/scan/test_work_events.py); the kit's dispense alone.
    kinds = sorted((event.kind, event.visit_id) for event in facts.work_events)
    assert kinds == sorted([("check_in", visit_id), ("dispense", None)])
    assert {event.nurse_id for event in facts.work_events} == {nurse}
    weighing, = facts.weighings
    assert (weighing.patient_id, weighing.weight_g, weighing.recorded_by_id,
            weighing.visit_id) == (patient, 70_000, nurse, None)


def _pre_doses(world: World, readings) -> Pharmacy:
    """Record pre-dose vitals at ten visits of one nurse to two patients, from her phone; the
    n-th visit's vitals are `readings(n)`."""
    pharmacy = Pharmacy(world)
    patients = [pharmacy.patient_id, pharmacy.patient([pharmacy.nurse])]
    booked = []
    for patient_id in patients:
        pharmacy.plan(patient_id=patient_id)
        for day in (3, 6, 10, 13, 17):
            hour = 9 if patient_id == patients[0] else 13
            start = f"2026-11-{day:02d}T{hour:02d}:00:00Z"
            response = pharmacy.client.post(
                "/api/v1/visits", headers=pharmacy.as_(Role.ADMIN),
                json={"patient_id": patient_id, "nurse_id": str(pharmacy.nurse.id),
                      "scheduled_start": start})
            assert response.status_code == 201, response.json
            booked.append((response.json["id"], f"2026-11-{day:02d}T{hour:02d}:05:00+00:00"))
    world.rt.clock.set(datetime(2026, 11, 18, 9, 0, tzinfo=UTC))
    phone = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    for n, (visit_id, at) in enumerate(booked):
        body = {"id": str(uuid.uuid4()), "occurred_at": at, **PRE, **readings(n)}
        response = pharmacy.client.post(f"/api/v1/visits/{visit_id}/pre-dose", headers=phone,
                                        json={**body, "signature": pharmacy.phone.sign(body)})
        assert response.status_code == 201, response.json
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    return pharmacy


def _flat_flags(world: World, pharmacy: Pharmacy) -> list[Flag]:
    return list(world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id == "plausibility.flat_readings")))


def test_the_same_pre_dose_vitals_at_every_session_are_a_case_for_the_nurse(world: World):
    pharmacy = _pre_doses(world, lambda n: {})
    flag, = _flat_flags(world, pharmacy)
    assert (flag.subject_kind, flag.subject_id) == ("nurse", str(pharmacy.nurse.id))
    assert (flag.evidence["identical_sessions"], flag.evidence["patients"]) == (10, 2)
    assert "122/78 mmHg, HR 70, SpO2 98%" in flag.summary


def test_pre_dose_vitals_that_vary_raise_no_flat_readings_flag(world: World):
    pharmacy = _pre_doses(world, lambda n: {"systolic": 112 + n, "heart_rate": 66 + n % 4})
    assert _flat_flags(world, pharmacy) == []


def _doses_by_weight(world: World, kilograms: list[str]) -> Pharmacy:
    """Give the patient a dose of 0.5 mg/kg twice a week, weighed at each visit beforehand by
    the prescriber at the `kilograms` in turn."""
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    pharmacy.receive(1_000_000)
    pharmacy.dispense(500_000)
    days = (3, 6, 10, 13, 17, 20)[:len(kilograms)]
    visits = [pharmacy.schedule(f"2026-11-{day:02d}T15:00:00Z").json["id"] for day in days]
    for day, visit_id, weight in zip(days, visits, kilograms, strict=True):
        world.rt.clock.set(datetime(2026, 11, day, 16, 0, tzinfo=UTC))
        measured = f"2026-11-{day:02d}T14:50:00+00:00"
        weighed = pharmacy.client.post(
            f"/api/v1/patients/{pharmacy.patient_id}/weights",
            headers=pharmacy.as_(Role.PRESCRIBER),
            json={"weight_kg": weight, "measured_at": measured})
        assert weighed.status_code == 201, weighed.json
        phone = pharmacy.as_(Role.NURSE, pharmacy.device_id)
        given = {**dose(pharmacy.product_id, int(float(weight) * 500)),
                 "infusion_started_at": f"2026-11-{day:02d}T15:10:00+00:00",
                 "infusion_ended_at": f"2026-11-{day:02d}T15:50:00+00:00"}
        for part, body in (("pre-dose", PRE), ("dose", given)):
            body = {"id": str(uuid.uuid4()), "occurred_at": f"2026-11-{day:02d}T15:05:00Z",
                    **body}
            response = pharmacy.client.post(f"/api/v1/visits/{visit_id}/{part}",
                                            headers=phone,
                                            json={**body, "signature": pharmacy.phone.sign(body)})
            assert response.status_code == 201, (part, response.json)
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    return pharmacy


def _rule_flags(world: World, pharmacy: Pharmacy, rule_id: str) -> list[Flag]:
    return list(world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id == rule_id)))


def test_doses_rising_in_mg_on_a_flat_mg_per_kg_are_a_case_for_the_patient(world: World):
    pharmacy = _doses_by_weight(world, ["70", "70", "70", "80", "80", "80"])
    flag, = _rule_flags(world, pharmacy, "plausibility.mg_rise_flat_per_kg")
    assert (flag.subject_kind, flag.subject_id) == ("patient", pharmacy.patient_id)
    assert (flag.evidence["earlier_median_ug"], flag.evidence["recent_median_ug"],
            flag.evidence["recent_weight_g"]) == ("35000", "40000", 80_000)


def test_steady_weights_raise_no_mg_rise_flag(world: World):
    pharmacy = _doses_by_weight(world, ["70", "70.2", "69.9", "70.1", "70.3", "70"])
    assert _rule_flags(world, pharmacy, "plausibility.mg_rise_flat_per_kg") == []
    assert _rule_flags(world, pharmacy, "plausibility.weight_change") == []
