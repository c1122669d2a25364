"""Plan each patient's course as visit series that the scheduling service accepts.

A nurse works three slots a day (08:00, 12:00, 16:00 local): a 3 h visit and an hour to drive
to the next home. A course is induction twice weekly, maintenance weekly, then a taper every
two weeks (CLINICAL.md Frequency). A phase's 7- and 28-day limits count only its own doses,
so each phase's series is accepted at its natural date; when the scheduler refuses one (the
minimum interval counts every dose, and a nurse's slots fill up), the simulated admin does
what a real one would, and moves it a week later until the service accepts it (without an
override).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from dateutil.rrule import rrulestr
from sqlalchemy.orm import Session

from backend.errors import VigilError
from backend.plans import service as plans
from backend.policy.service import policy_for
from backend.simulate.world import Patient, World
from backend.visits import service as visits

SLOT_HOURS = (8, 12, 16)
INDUCTION_PAIRS = ("MO,TH", "TU,FR")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
INDUCTION_DOSES, TAPER_DOSES = 8, 6
# The refusals a later start can cure; any other refusal is a bug in the simulation.
FREQUENCY_RULES = ("min_interval", "weekly_limit", "monthly_limit")
MAX_SHIFTS = 8
PLAN_FIELDS = {spec.name for spec in dataclasses.fields(plans.PlanSpec)}


@dataclass
class Booking:
    """A visit the simulation scheduled: who, when, and what became of it."""

    visit_id: uuid.UUID
    patient: int
    nurse: int
    day: int
    slot: int
    start: datetime
    status: str = "scheduled"


class Calendar:
    """Which slots each nurse has booked on each day, and the bookings of each day."""

    def __init__(self) -> None:
        self.slots: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.days: dict[int, list[Booking]] = defaultdict(list)

    def free_slot(self, nurse: int, days: list[int]) -> int | None:
        """Return a slot the nurse has free on every one of `days`, if any."""
        for slot in range(len(SLOT_HOURS)):
            if all(slot not in self.slots[nurse, day] for day in days):
                return slot
        return None

    def book(self, booking: Booking) -> None:
        """Hold the booking's slot and list it on its day."""
        self.slots[booking.nurse, booking.day].add(booking.slot)
        self.days[booking.day].append(booking)

    def release(self, booking: Booking, status: str) -> None:
        """Free the booking's slot, marking it cancelled or rescheduled."""
        booking.status = status
        self.slots[booking.nurse, booking.day].discard(booking.slot)

    def on(self, day: int) -> list[Booking]:
        """Return the day's bookings still to happen, in time order."""
        return sorted((b for b in self.days[day] if b.status == "scheduled"),
                      key=lambda booking: (booking.start, booking.nurse))


def _dates(world: World, first: date, rule: str) -> list[date]:
    start = datetime.combine(first, time(SLOT_HOURS[0]))
    last = world.start + timedelta(days=world.days - 1)
    return [when.date() for when in rrulestr(rule, dtstart=start, cache=False)
            if when.date() <= last]


def _try_series(session: Session, world: World, calendar: Calendar, patient: Patient,
                first: date, rule: str) -> list[Booking] | None:
    """Schedule one series; return its bookings, or None when the scheduler refuses it."""
    days = [(when - world.start).days for when in _dates(world, first, rule)]
    slot = calendar.free_slot(patient.nurse, days) if days else None
    if slot is None:
        return None
    counted = f"{rule.rsplit(';COUNT=', 1)[0]};COUNT={len(days)}"
    try:
        # A savepoint: a refused series leaves no visit behind, as the API's rollback would.
        with session.begin_nested():
            made = visits.schedule_series(
                session, world.rt, world.admin.caller, patient.plan_id,
                nurse_id=world.nurses[patient.nurse].user_id,
                first_start=world.at(days[0], SLOT_HOURS[slot]), rule=counted,
                duration_minutes=None, override_reason=None)
    except visits.SchedulingRefused as refused:
        if refused.code in FREQUENCY_RULES:
            return None
        raise
    bookings = [Booking(visit.id, patient.index, patient.nurse, day, slot,
                        visit.scheduled_start) for visit, day in zip(made, days, strict=True)]
    for booking in bookings:
        calendar.book(booking)
    return bookings


def _fit(session: Session, world: World, calendar: Calendar, patient: Patient,
         candidates: list[tuple[date, str]]) -> list[Booking]:
    for first, rule in candidates:
        if bookings := _try_series(session, world, calendar, patient, first, rule):
            return bookings
    return []


def _weekly_from(first: date, shifts: int = MAX_SHIFTS) -> list[date]:
    return [first + timedelta(weeks=week) for week in range(shifts)]


def write_plan(session: Session, world: World, patient: Patient, starts_on: date,
               justification: str | None = None) -> list:
    """Write the patient's plan, `patient.ug_per_kg` (the protocol's 0.5 mg/kg unless her
    prescriber chose otherwise) IV over 40 min with policy phases; return the phases.

    A dose above the protocol's carries the prescriber's `justification`.
    """
    policy = policy_for(session, world.organisation_id)
    phases = plans.default_phases(policy, starts_on)
    # A ceiling 20% over the planned dose, rounded up to the milligram.
    max_dose_ug = -(-patient.weight_g * patient.ug_per_kg * 6 // 5 // 1000 // 1000) * 1000
    # The plan's justification field is optional, and older services do not take one.
    extra = ({"dose_justification": justification}
             if justification and "dose_justification" in PLAN_FIELDS else {})
    plan = plans.create(
        session, world.rt, world.prescribers[patient.prescriber].caller, patient.id,
        plans.PlanSpec(product_id=world.products[patient.product].id, route="IV",
                       max_dose_ug=max_dose_ug, infusion_minutes=40, starts_on=starts_on,
                       phases=phases, dose_ug_per_kg=patient.ug_per_kg, **extra),
        plan_id=world.new_id())
    patient.plan_id = plan.id
    return phases


def _induction(first: date) -> list[tuple[date, str]]:
    """Return where an induction series may start: each pair's next days, then a week on."""
    candidates = []
    for pair in INDUCTION_PAIRS:
        for code in pair.split(","):
            day = first + timedelta(days=(WEEKDAYS.index(code) - first.weekday()) % 7)
            candidates.append((day, f"FREQ=WEEKLY;BYDAY={pair};COUNT={INDUCTION_DOSES}"))
    candidates.sort()
    return candidates + [(day + timedelta(weeks=1), rule) for day, rule in candidates]


def plan_course(session: Session, world: World, calendar: Calendar, patient: Patient,
                first: date, *, phases_kept: int,
                justification: str | None = None) -> list[Booking]:
    """Write the plan and schedule up to `phases_kept` phases of the course as series."""
    candidates = _induction(first)
    phases = write_plan(session, world, patient, candidates[0][0], justification)
    booked = _fit(session, world, calendar, patient, candidates)
    if booked and phases_kept > 1:
        booked += _maintenance(session, world, calendar, patient, booked, phases)
    if booked and phases_kept > 2:
        start = max(_last(world, booked) + timedelta(weeks=2), phases[2].starts_on)
        booked += _fit(session, world, calendar, patient, [
            (first, f"FREQ=WEEKLY;INTERVAL=2;COUNT={TAPER_DOSES}")
            for first in _weekly_from(start)])
    return booked


def _last(world: World, booked: list[Booking]) -> date:
    return world.start + timedelta(days=max(booking.day for booking in booked))


def _maintenance(session: Session, world: World, calendar: Calendar, patient: Patient,
                 booked: list[Booking], phases: list) -> list[Booking]:
    taper = phases[2].starts_on
    for first in _weekly_from(_last(world, booked) + timedelta(weeks=1)):
        weeks = (taper - first).days // 7 + ((taper - first).days % 7 > 0)
        if weeks < 1:
            return []
        if made := _try_series(session, world, calendar, patient, first,
                               f"FREQ=WEEKLY;COUNT={weeks}"):
            return made
    return []


def book_extra(session: Session, world: World, calendar: Calendar, patient: Patient,
               day: int, reason: str) -> Booking | None:
    """Have the prescriber add one visit on `day`, overriding the frequency limits if needed."""
    slot = calendar.free_slot(patient.nurse, [day])
    if slot is None:
        return None
    prescriber = world.prescribers[patient.prescriber]
    visit = visits.schedule(session, world.rt, prescriber.caller, visits.VisitRequest(
        patient.id, world.nurses[patient.nurse].user_id, world.at(day, SLOT_HOURS[slot]),
        override_reason=reason, visit_id=world.new_id()))
    booking = Booking(visit.id, patient.index, patient.nurse, day, slot, visit.scheduled_start)
    calendar.book(booking)
    return booking


def cancel(session: Session, world: World, calendar: Calendar, booking: Booking,
           reason: str) -> None:
    """Cancel a booked visit with the reason an admin would give."""
    visits.cancel(session, world.rt, world.admin.caller, booking.visit_id, reason)
    calendar.release(booking, "cancelled")


def reschedule(session: Session, world: World, calendar: Calendar, booking: Booking,
               day: int) -> Booking | None:
    """Move a booked visit to `day` in a free slot; None (and nothing changed) if refused."""
    slot = calendar.free_slot(booking.nurse, [day])
    if slot is None:
        return None
    try:
        with session.begin_nested():
            visit = visits.reschedule(
                session, world.rt, world.admin.caller, booking.visit_id,
                scheduled_start=world.at(day, SLOT_HOURS[slot]), scheduled_end=None,
                nurse_id=None, override_reason=None)
    except VigilError:
        return None
    calendar.release(booking, "rescheduled")
    moved = Booking(visit.id, booking.patient, booking.nurse, day, slot, visit.scheduled_start)
    calendar.book(moved)
    return moved
