"""Run the clinic day by day: enrolments, kits, visits, returns, the nightly jobs and scans.

Each day's events are put on an agenda and run in time order with the simulation's clock set
to each one, so every `received_at` the services stamp is the moment the server would have
received it, and nurses' days interleave as they would.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, User
from backend.custody import checkpoints
from backend.devices.models import Device
from backend.errors import VigilError
from backend.jobs import service as jobs
from backend.patients.models import Patient
from backend.plans.models import PlanVersion, TreatmentPlan
from backend.products.models import DrugProduct
from backend.scan.judge import settle
from backend.scan.service import scan_organisation
from backend.simulate import behaviour, schedule, sessions
from backend.simulate.behaviour import Injection, tamper_ledger
from backend.simulate.pharmacy import Pharmacy
from backend.simulate.schedule import Booking, Calendar
from backend.simulate.truth import ExpectedEvent
from backend.simulate.world import Nurse, Person, World, register_patient

ENROL_SHARE = 0.7
CANCEL_SHARE, RESCHEDULE_SHARE = 0.02, 0.015
CANCEL_REASONS = ("Patient unwell; asked to skip this session.", "Patient travelling.",
                  "Family emergency; patient will call to rebook.")
EXTRA_REASON = "Patient reports a relapse of low mood and asks for an extra session."
SPIKE_WHY = "a real blood-pressure rise of at least +40 mmHg systolic"
DROPPED_WHY = "a vial dropped and wasted whole before a witness: more waste than the remainder"
SUNDAY = 6


class Agenda:
    """A day's events, run in time order with the clock set to each."""

    def __init__(self) -> None:
        self._events: list[tuple[datetime, int, Callable[[], object]]] = []
        self._order = itertools.count()

    def add(self, at: datetime, action: Callable[[], object]) -> None:
        """Run `action` at `at` (ties keep the order they were added in)."""
        self._events.append((at.astimezone(UTC), next(self._order), action))

    def run(self, world: World, session: Session) -> None:
        """Run every event in time order, each judged as its own request's boundary would."""
        for at, _, action in sorted(self._events, key=lambda event: event[:2]):
            world.clock.set(at)
            action()
            settle(session, world.rt)


class Clinic:
    """The simulated organisation at work, and what it has done so far."""

    def __init__(self, world: World, injection: Injection) -> None:
        self.world, self.injection = world, injection
        self.pharmacy, self.calendar = Pharmacy(world, injection.pharmacy), Calendar()
        self.sessions: Counter[tuple[int, int]] = Counter()
        self.enrolments = self._enrolment_days()
        self.held: list[object] = []

    def _enrolment_days(self) -> dict[int, list[int]]:
        world, rng = self.world, self.world.rng
        weekdays = [day for day in range(max(1, int(world.days * ENROL_SHARE)))
                    if (world.start + timedelta(days=day)).weekday() < 5]
        days = sorted(rng.choice(weekdays) for _ in range(world.truth.patients - 1))
        enrolments = defaultdict(list)
        for index, day in enumerate([weekdays[0], *days]):
            enrolments[day].append(index)
        return enrolments

    def _hold(self, session: Session) -> list[object]:
        """Load the rows every event reads, and keep them referenced for the day.

        The session's identity map holds rows only while something references them; held
        here, the services' `session.get` of a device, user, product, patient or plan is
        answered from memory instead of by one query per record.
        """
        org = self.world.organisation_id
        plan_versions = select(PlanVersion).join(
            TreatmentPlan, PlanVersion.plan_id == TreatmentPlan.id).where(
            TreatmentPlan.organisation_id == org)
        return [session.get(Organisation, org),
                *session.scalars(select(User).where(User.organisation_id == org)),
                *session.scalars(select(Device).where(Device.organisation_id == org)),
                *session.scalars(select(DrugProduct).where(DrugProduct.organisation_id == org)),
                *session.scalars(select(Patient).where(Patient.organisation_id == org)),
                *session.scalars(plan_versions)]

    def day(self, session: Session, day: int) -> None:
        """Simulate one day, committing nothing: the caller commits each day."""
        world, agenda = self.world, Agenda()
        self.held = self._hold(session)
        agenda.add(world.at(day, 7), lambda: self.pharmacy.restock(session))
        for order, index in enumerate(self.enrolments.get(day, [])):
            agenda.add(world.at(day, 9) + timedelta(minutes=2 * order),
                       lambda index=index: self._enrol(session, day, index))
        if world.day_of(self.injection.starts["tampered_ledger"]) == day:
            agenda.add(world.at(day, 2, 13), lambda: self._tamper(session))
        if self.injection.escalation is not None:
            agenda.add(world.at(day, 10, 30), lambda: self._extra_visit(session, day))
        by_nurse = defaultdict(list)
        for booking in self.calendar.on(day):
            by_nurse[booking.nurse].append(booking)
        for index, bookings in sorted(by_nurse.items()):
            self._nurse_day(agenda, session, day, world.nurses[index], bookings)
        agenda.add(world.at(day, 18), lambda: self._noise(session, day + 1))
        agenda.add(world.at(day, 22, 30), lambda: self._night(session))
        agenda.add(world.at(day, 12, 30), lambda: self.pharmacy.midday(session))
        if (world.start + timedelta(days=day)).weekday() == SUNDAY:
            agenda.add(world.at(day, 18), lambda: self.pharmacy.count(session))
        agenda.run(world, session)

    def _enrol(self, session: Session, day: int, index: int) -> None:
        world, rng = self.world, self.world.rng
        # Intake goes to the nurse with the most room; the patient lives in her team's area.
        # The escalating patient goes to a nurse no other pattern involves.
        pool = [n for n in world.nurses if index or n.index not in self.injection.involved]
        load = Counter(patient.nurse for patient in world.patients)
        nurse = min(pool, key=lambda n: (load[n.index], n.index))
        # Her prescriber: any, but the escalating patient's is not the high-dose one.
        prescriber = rng.choice(self.injection.honest_prescribers if index == 0
                                else range(len(world.prescribers)))
        patient = register_patient(session, world, index, nurse, prescriber)
        world.patients.append(patient)
        kept = 3 if index == 0 else rng.choices((1, 2, 3), (0.2, 0.15, 0.65))[0]
        high = self.injection.prescribing
        justification = None
        if high is not None and prescriber == high.index:
            patient.ug_per_kg, justification = high.plan(rng, world.clock.now())
        schedule.plan_course(session, world, self.calendar, patient,
                             world.start + timedelta(days=day + rng.randint(2, 5)),
                             phases_kept=kept, justification=justification)
        if high is not None and prescriber == high.index:
            high.wrote(world.clock.now(), patient)
        if index == 0:
            self.injection.escalate(patient)

    def _witnesses(self, nurse: Nurse) -> list[Person]:
        colleagues = [other for other in self.world.nurses
                      if other.team == nurse.team and other is not nurse]
        return [*colleagues, *self.world.pharmacists]

    def _clock_of(self, person: Person, at: datetime) -> datetime:
        """Return what the person's phone clock reads at true time `at`."""
        if isinstance(person, Nurse):
            return self.injection.conducts[person.index].device_time(at)
        return at

    def _nurse_day(self, agenda: Agenda, session: Session, day: int, nurse: Nurse,
                   bookings: list[Booking]) -> None:
        world, rng = self.world, self.world.rng
        conduct = self.injection.conducts[nurse.index]
        visits = [sessions.HomeVisit(booking, nurse, world.patients[booking.patient], conduct,
                                 conduct.timeline(rng, conduct.arrival(
                                     rng, booking.start, n == len(bookings) - 1)),
                                 self._witnesses(nurse), self._clock_of)
                  for n, booking in enumerate(bookings)]
        # A patient not home: the nurse waits 10 min, calls, and the visit is called off.
        away = [conduct.not_home(rng, visit.timeline.arrive) for visit in visits]
        ends = [visit.timeline.arrive + timedelta(minutes=15) if gone else visit.timeline.leave
                for visit, gone in zip(visits, away, strict=True)]
        late_sync = max(ends) + timedelta(minutes=rng.randint(5, 15))
        # One vial a visit and a spare (more if she asks), all of the plans' product; the
        # pharmacy opens at 07:00 and has every kit out before the first visits at 08:00.
        kit = len(visits) + conduct.spares(len(visits), world.at(day, 7))

        def dispense() -> None:
            self.pharmacy.dispense(session, nurse, kit, "k10")
            nurse.due = len(visits)

        agenda.add(world.at(day, 7) + timedelta(seconds=50 * nurse.index), dispense)
        for visit, gone in zip(visits, away, strict=True):
            if gone:
                agenda.add(visit.timeline.arrive + timedelta(minutes=10),
                           lambda visit=visit: self._not_home(session, visit))
                continue
            self._visit(agenda, session, visit, late_sync)
        agenda.add(late_sync + timedelta(minutes=rng.randint(15, 50)),
                   lambda: self.pharmacy.take_return(session, nurse, conduct))

    def _not_home(self, session: Session, visit: sessions.HomeVisit) -> None:
        """Call off a visit whose patient is not home; the vial stays in the bag (or not)."""
        world, nurse, conduct = self.world, visit.nurse, visit.conduct
        schedule.cancel(session, world, self.calendar, visit.booking,
                        behaviour.NOT_HOME_REASON)
        nurse.due -= 1
        vial = next(v for v in nurse.bag if v.product == visit.patient.product)
        if conduct.keeps_cancelled(world.rng, vial, world.clock.now()):
            # Into her pocket: the ledger still has it in her bag.
            nurse.bag.remove(vial)
            conduct.called_off(world.clock.now(), str(visit.booking.visit_id))

    def _visit(self, agenda: Agenda, session: Session, visit: sessions.HomeVisit,
               late_sync: datetime) -> None:
        rng, timeline = self.world.rng, visit.timeline
        agenda.add(timeline.arrive + timedelta(seconds=rng.randint(2, 25)),
                   lambda: sessions.check(session, self.world, visit, "check_in"))
        agenda.add(late_sync if timeline.sync_late else timeline.leave - timedelta(minutes=1),
                   lambda: self._sync(session, visit))
        agenda.add(timeline.leave + timedelta(seconds=rng.randint(2, 25)),
                   lambda: sessions.check(session, self.world, visit, "check_out"))

    def _sync(self, session: Session, visit: sessions.HomeVisit) -> None:
        escalation = self.injection.escalation
        escalating = escalation is not None and escalation.patient is visit.patient
        ug_per_kg = (escalation.ug_per_kg(visit.timeline.arrive) if escalating
                     else visit.patient.ug_per_kg)
        recorded = sessions.sync(session, self.world, visit, ug_per_kg)
        visit.conduct.recorded(recorded)
        if escalating:
            escalation.recorded(recorded, visit.nurse.user_id)
        if recorded.dosed:
            self.sessions[visit.nurse.index, visit.patient.index] += 1
        if recorded.dosed and visit.timeline.spike:
            self.world.truth.expected.append(ExpectedEvent(
                recorded.visit_id, "monitoring.alarming_vitals", SPIKE_WHY))
        if recorded.spare_reason == behaviour.DROPPED_REASON:
            self.world.truth.expected.append(ExpectedEvent(
                recorded.visit_id, "waste.exceeds_remainder", DROPPED_WHY))

    def _noise(self, session: Session, day: int) -> None:
        """Cancel or move a few of tomorrow's visits, as patients call in."""
        world, rng = self.world, self.world.rng
        for booking in self.calendar.on(day):
            draw = rng.random()
            if draw < RESCHEDULE_SHARE and day + 2 < world.days and schedule.reschedule(
                    session, world, self.calendar, booking, self._next_weekday(day)):
                continue
            if draw < CANCEL_SHARE + RESCHEDULE_SHARE:
                schedule.cancel(session, world, self.calendar, booking,
                                rng.choice(CANCEL_REASONS))

    def _next_weekday(self, day: int) -> int:
        day += 1
        while (self.world.start + timedelta(days=day)).weekday() >= 5:
            day += 1
        return day

    def _extra_visit(self, session: Session, day: int) -> None:
        world, escalation = self.world, self.injection.escalation
        if not escalation.wants_extra(world.clock.now()):
            return
        target = self._next_weekday(self._next_weekday(day))
        if target >= world.days:
            return
        try:
            with session.begin_nested():
                booking = schedule.book_extra(session, world, self.calendar,
                                              escalation.patient, target, EXTRA_REASON)
        except VigilError:
            return
        if booking is not None:
            escalation.booked_extra(world.rng, world.clock.now(), str(booking.visit_id),
                                    world.prescribers[escalation.patient.prescriber].user_id)

    def _tamper(self, session: Session) -> None:
        container = self.world.products["k10"].container_ug
        # The fullest lot: a vial gone from it leaves every earlier balance of it positive.
        lot = max((lot for lot in self.pharmacy.lots if lot.product == "k10"),
                  key=lambda lot: (lot.vault_ug, lot.lot))
        tamper_ledger(session, self.world, self.injection.patterns["tampered_ledger"],
                      lot.lot, container)
        lot.vault_ug -= container

    def _night(self, session: Session) -> None:
        """Run the scheduler's jobs as it would overnight, the population scan among them."""
        world = self.world
        jobs.mark_missed_visits(session, world.rt)
        jobs.reconcile_bags(session, world.rt)
        checkpoints.sign_head(session, world.rt, world.organisation_id,
                              world.rt.checkpoint_dir)
        self.scan(session)

    def scan(self, session: Session) -> None:
        """Run the population scan over the whole organisation, as the nightly job does."""
        scan_organisation(session, self.world.rt, self.world.organisation_id, since=None)
        self.world.truth.scans += 1

    def finish(self, session: Session) -> None:
        """Cancel what was booked past the last day (its night's scan has run)."""
        world = self.world
        for day in sorted(self.calendar.days):
            if day >= world.days:
                for booking in self.calendar.on(day):
                    schedule.cancel(session, world, self.calendar, booking,
                                    "The simulation ended before this visit.")

    def honest_sessions(self) -> int:
        """Return the doses given by nurses to patients that no pattern touched."""
        injected = self.world.truth.injected_ids()
        return sum(count for (nurse, patient), count in self.sessions.items()
                   if str(self.world.nurses[nurse].user_id) not in injected
                   and str(self.world.patients[patient].id) not in injected)

