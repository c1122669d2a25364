"""A nurse's shift ends with her last visit of the day, whatever its outcome, and her bag's
deadline runs from there: a doorstep cancellation ends it too."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.custody.shifts import Shift, VisitOutcome, shift_of
from backend.flags.models import Flag
from backend.jobs import service as jobs
from backend.scan import service as scan
from backend.visits.models import VisitStatus
from tests.backend.custody.test_custody_workflows import VISIT_END, _shift
from tests.factories import Pharmacy, World

CHICAGO = ZoneInfo("America/Chicago")
DAY = date(2026, 11, 2)
NURSE = uuid.uuid4()
DEADLINE = timedelta(hours=2)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """Return an instant in UTC (Chicago is UTC-6 in November)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def visit(status: VisitStatus, start: datetime, end: datetime, *,
          checked_in: datetime | None = None, checked_out: datetime | None = None,
          changed: datetime | None = None) -> VisitOutcome:
    return VisitOutcome(status, start, end, checked_in, checked_out,
                        changed or checked_out or checked_in or start)


# The morning's visit, 10:00-11:00 in Chicago, checked out at 11:05.
MORNING = visit(VisitStatus.COMPLETED, at(2, 16), at(2, 17), checked_in=at(2, 16),
                checked_out=at(2, 17, 5))
# The day's last visit: 14:00-15:00 in Chicago.
START, END = at(2, 20), at(2, 21)
NEXT_MIDNIGHT = at(3, 6)
# Crossing midnight: 23:30-00:30 in Chicago.
LATE_START, LATE_END = at(3, 5, 30), at(3, 6, 30)


@pytest.mark.parametrize(("last", "ended_at", "closes_at"), [
    pytest.param(visit(VisitStatus.COMPLETED, START, END, checked_in=at(2, 20, 2),
                       checked_out=at(2, 20, 50)), at(2, 20, 50), at(2, 20, 50),
                 id="completed: at its check-out"),
    pytest.param(visit(VisitStatus.MISSED, START, END, changed=at(2, 21, 30)), END, END,
                 id="missed (no-show): at its scheduled end, not when it was marked"),
    pytest.param(visit(VisitStatus.CANCELLED, START, END, changed=at(2, 20, 10)),
                 at(2, 20, 10), at(2, 20, 10), id="called off on the doorstep: when cancelled"),
    pytest.param(visit(VisitStatus.CANCELLED, START, END, changed=at(2, 21, 20)),
                 at(2, 21, 20), at(2, 21, 20), id="called off on the doorstep, arrived late"),
    pytest.param(visit(VisitStatus.CANCELLED, START, END, checked_in=at(2, 20, 5),
                       changed=at(2, 20, 30)), at(2, 20, 30), at(2, 20, 30),
                 id="checked in, then cancelled: when cancelled"),
    pytest.param(visit(VisitStatus.CANCELLED, START, END, changed=at(2, 14)),
                 at(2, 17, 5), at(2, 17, 5), id="phoned in that morning: the morning's visit"),
    pytest.param(visit(VisitStatus.CANCELLED, START, END, changed=at(1, 20)),
                 at(2, 17, 5), at(2, 17, 5), id="cancelled the day before: no part of the day"),
    pytest.param(visit(VisitStatus.CANCELLED, START, END, changed=at(3, 15)),
                 NEXT_MIDNIGHT, NEXT_MIDNIGHT, id="cancelled the next day: at most midnight"),
    pytest.param(visit(VisitStatus.SCHEDULED, START, END), None, NEXT_MIDNIGHT,
                 id="still to come: not over, closes at midnight"),
    pytest.param(visit(VisitStatus.CHECKED_IN, START, END, checked_in=at(2, 20, 2)), None,
                 NEXT_MIDNIGHT, id="checked in, never out: not over, closes at midnight"),
    pytest.param(visit(VisitStatus.COMPLETED, LATE_START, LATE_END, checked_in=LATE_START,
                       checked_out=at(3, 6, 40)), at(3, 6, 40), at(3, 6, 40),
                 id="across midnight, completed: the day it started"),
    pytest.param(visit(VisitStatus.CANCELLED, LATE_START, LATE_END, changed=at(3, 6, 20)),
                 at(3, 6, 20), at(3, 6, 20), id="across midnight, called off after midnight"),
    pytest.param(visit(VisitStatus.CANCELLED, LATE_START, LATE_END, changed=at(3, 9)),
                 LATE_END, LATE_END, id="across midnight, cancelled later: its scheduled end"),
    pytest.param(visit(VisitStatus.MISSED, LATE_START, LATE_END, changed=at(3, 7)),
                 LATE_END, LATE_END, id="across midnight, missed"),
    pytest.param(visit(VisitStatus.CHECKED_IN, LATE_START, LATE_END, checked_in=LATE_START),
                 None, LATE_END, id="across midnight, never checked out"),
])
def test_the_days_last_visit_ends_the_shift_whatever_its_outcome(last, ended_at, closes_at):
    shift = shift_of(NURSE, DAY, [MORNING, last], CHICAGO)
    assert shift == Shift(NURSE, DAY, ended_at, closes_at)
    assert shift.deadline_at(DEADLINE) == closes_at + DEADLINE


def test_a_day_of_called_off_visits_is_a_shift_unless_called_off_before_it():
    doorstep = visit(VisitStatus.CANCELLED, START, END, changed=at(2, 20, 10))
    assert shift_of(NURSE, DAY, [doorstep], CHICAGO) == Shift(NURSE, DAY, at(2, 20, 10),
                                                              at(2, 20, 10))
    before = visit(VisitStatus.CANCELLED, START, END, changed=at(1, 20))
    assert shift_of(NURSE, DAY, [before], CHICAGO) is None


# Through the API: the morning's visit checked out at 13:00 in Chicago (VISIT_END) with
# 50,000 µg of the kit left for the afternoon's visit, whose patient is not home.
AFTERNOON = VISIT_END + timedelta(hours=1)  # 14:00 in Chicago
CALLED_OFF = AFTERNOON + timedelta(minutes=10)


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    return pharmacy


def _not_home(pharmacy: Pharmacy, clock) -> None:
    second = pharmacy.patient([pharmacy.nurse])
    pharmacy.plan(patient_id=second)
    afternoon = pharmacy.client.post("/api/v1/visits", headers=pharmacy.as_(Role.ADMIN), json={
        "patient_id": second, "nurse_id": str(pharmacy.nurse.id),
        "scheduled_start": AFTERNOON.isoformat()})
    assert afternoon.status_code == 201, afternoon.json
    _shift(pharmacy, clock)
    clock.set(CALLED_OFF)
    cancelled = pharmacy.client.post(f"/api/v1/visits/{afternoon.json['id']}/cancel",
                                     headers=pharmacy.as_(Role.NURSE),
                                     json={"reason": "Patient not home"})
    assert cancelled.status_code == 200, cancelled.json


def _judged(world: World, pharmacy: Pharmacy) -> dict[str, int]:
    assert jobs.reconcile_bags(world.session, world.rt) is not None
    world.commit()
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    world.commit()
    world.session.expire_all()
    flags = world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id,
        Flag.rule_id.in_(("custody.bag_unbalanced", "custody.unreturned_stock"))))
    found: dict[str, int] = {}
    for flag in flags:
        found[flag.rule_id] = found.get(flag.rule_id, 0) + 1
    return found


def test_a_doorstep_cancel_with_the_kit_back_within_the_deadline_raises_nothing(
        world: World, pharmacy: Pharmacy, clock):
    _not_home(pharmacy, clock)
    # Back at the pharmacy 80 min after the doorstep: later than 2 h after the morning's visit.
    clock.set(CALLED_OFF + timedelta(minutes=80))
    returned = pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 50_000,
                                          "details": {"seal_id": "S-1"}})
    assert returned.status_code == 201, returned.json
    for later in (timedelta(hours=2), timedelta(days=1)):
        clock.set(CALLED_OFF + later)
        assert _judged(world, pharmacy) == {}


def test_a_vial_kept_after_a_doorstep_cancel_is_flagged_at_the_deadline(
        world: World, pharmacy: Pharmacy, clock):
    _not_home(pharmacy, clock)
    clock.set(CALLED_OFF + DEADLINE - timedelta(minutes=1))
    assert _judged(world, pharmacy) == {}
    clock.set(CALLED_OFF + DEADLINE + timedelta(minutes=1))
    assert _judged(world, pharmacy) == {"custody.bag_unbalanced": 1,
                                        "custody.unreturned_stock": 1}
    [flag] = world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id == "custody.bag_unbalanced"))
    assert (flag.evidence["remaining_ug"], flag.evidence["day"]) == (50_000, "2026-11-02")
