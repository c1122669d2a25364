"""Work at night, driven through the API, is a case for the nurse and the patient in the scan."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from backend.accounts.models import Role
from backend.flags.models import Flag
from backend.scan import service as scan
from tests.backend.administration.test_sessions import PRE, dose
from tests.factories import Pharmacy, World

# The test organisation's timezone (tests.factories.World.org).
CHICAGO = ZoneInfo("America/Chicago")
# Four days apart, so the induction phase's two doses in any 7 days allow every one.
DAYS = (3, 7, 11)
HOURS_RULES = {"hours.outside_service_hours", "hours.pattern_shift"}


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=CHICAGO)


def _iso(at: datetime) -> str:
    return at.isoformat()


def _record(pharmacy: Pharmacy, visit_id: str, start: datetime) -> None:
    """Check in at `start`, then record pre-dose vitals and a 35 mg dose from the phone."""
    world = pharmacy.world
    world.rt.clock.set(start + timedelta(hours=1))
    phone = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    checked_in = pharmacy.client.post(f"/api/v1/visits/{visit_id}/check-in", headers=phone,
                                      json={"latitude": "41.878300", "longitude": "-87.629800",
                                            "accuracy_m": 12, "occurred_at": _iso(start)})
    assert checked_in.status_code == 200, checked_in.json
    given = dict(dose(pharmacy.product_id),
                 infusion_started_at=_iso(start + timedelta(minutes=10)),
                 infusion_ended_at=_iso(start + timedelta(minutes=50)))
    for part, body, at in (("pre-dose", PRE, start + timedelta(minutes=5)),
                           ("dose", given, start + timedelta(minutes=10))):
        body = {"id": str(uuid.uuid4()), "occurred_at": _iso(at), **body}
        signed = {**body, "signature": pharmacy.phone.sign(body)}
        response = pharmacy.client.post(f"/api/v1/visits/{visit_id}/{part}", headers=phone,
                                        json=signed)
        assert response.status_code == 201, (part, response.json)


def _visits_at(world: World, hour: int, minute: int = 0) -> Pharmacy:
    """Return a pharmacy whose nurse saw her patient on each of DAYS at `hour` local."""
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    pharmacy.receive(1_000_000)
    pharmacy.dispense(500_000)
    pharmacy.client.post(f"/api/v1/patients/{pharmacy.patient_id}/weights",
                         headers=pharmacy.as_(Role.NURSE),
                         json={"weight_kg": "70", "measured_at": "2026-11-01T10:00:00Z"})
    visits = []
    for day in DAYS:
        booked = pharmacy.schedule(_iso(_at(day, hour, minute)))
        assert booked.status_code == 201, booked.json
        visits.append((booked.json["id"], _at(day, hour, minute)))
    for visit_id, start in visits:
        _record(pharmacy, visit_id, start)
    return pharmacy


def _scanned(world: World, pharmacy: Pharmacy) -> list[Flag]:
    world.rt.clock.set(_at(12, 9))
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id,
                           since=world.rt.clock.now() - timedelta(days=30))
    return list(world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id.in_(HOURS_RULES))))


def test_three_night_visits_are_one_case_for_the_nurse_and_one_for_the_patient(world: World):
    pharmacy = _visits_at(world, 22, 30)
    flags = _scanned(world, pharmacy)
    assert sorted((flag.rule_id, flag.subject_kind, flag.subject_id) for flag in flags) == [
        ("hours.outside_service_hours", "nurse", str(pharmacy.nurse.id)),
        ("hours.outside_service_hours", "patient", pharmacy.patient_id)]
    nurse_flag = next(flag for flag in flags if flag.subject_kind == "nurse")
    # A check-in and a dose at each visit, one occasion each; the bag was filled by day.
    assert (nurse_flag.evidence["occasions"], nurse_flag.evidence["visits"]) == (3, 3)
    assert "07:00-21:00 America/Chicago" in nurse_flag.summary
    assert nurse_flag.patient_id == uuid.UUID(pharmacy.patient_id)


def test_the_same_visits_in_the_afternoon_raise_no_hours_flag(world: World):
    pharmacy = _visits_at(world, 14)
    assert _scanned(world, pharmacy) == []
