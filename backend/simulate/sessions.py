"""Carry out one visit as the nurse's phone records it: check-in, the signed session, check-out.

The phone signs each record over its canonical JSON, exactly as the app does; the records go
through the same marshmallow schemas as the API's, then to the administration service's
whole-session sync (`record_session`), which writes the dose's custody `administer` entry and
the witnessed `waste` entry in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from marshmallow import Schema
from sqlalchemy.orm import Session

from backend.administration import service as administration
from backend.administration.schemas import (
    DischargeSchema,
    DoseSchema,
    ObservationSchema,
    OutcomeSchema,
    PreDoseSchema,
)
from backend.custody.chain import plain_value, signed_payload
from backend.custody.ledger import bag
from backend.custody.schemas import VisitWasteSchema
from backend.simulate import vitals
from backend.simulate.behaviour import (
    HOLD_JUSTIFICATION,
    NO_GO_REASONS,
    Conduct,
    Recorded,
    Timeline,
)
from backend.simulate.schedule import Booking
from backend.simulate.world import Nurse, Patient, Person, Phone, Vial, World, near, weigh
from backend.visits import evv

SCHEMAS: dict[str, Schema] = {"pre_dose": PreDoseSchema(), "dose": DoseSchema(),
                              "observations": ObservationSchema(),
                              "discharge": DischargeSchema(), "outcomes": OutcomeSchema()}
WASTE_SCHEMA = VisitWasteSchema()
GPS_SIGMA_M = 12
WEIGH_EVERY = timedelta(days=21)
PHQ9_EVERY = 4


@dataclass
class HomeVisit:
    """One visit being carried out: who, where, when, and what the phone will record."""

    booking: Booking
    nurse: Nurse
    patient: Patient
    conduct: Conduct
    timeline: Timeline
    witnesses: list[Person]
    # A person's phone clock: what it reads at a true time (a nurse's conduct may skew it).
    clock_of: Callable[[Person, datetime], datetime]


def _iso(at: datetime) -> str:
    return at.isoformat()


def check(session: Session, world: World, visit: HomeVisit, kind: str) -> None:
    """Check the nurse in or out from her phone, with GPS noise (or from the car)."""
    timeline, rng = visit.timeline, world.rng
    true_time = timeline.arrive if kind == "check_in" else timeline.leave
    away = timeline.away_m if kind == "check_in" else 0
    latitude, longitude = near(visit.patient.home, rng, GPS_SIGMA_M, away)
    evv.verify_presence(session, world.rt, visit.nurse.caller, visit.booking.visit_id, kind,
                           evv.Position(latitude, longitude, rng.randint(4, 25),
                                           visit.conduct.device_time(true_time),
                                           "GPS poor; parked down the street" if away else None))


def _received(phone: Phone, name: str, body: dict[str, Any]) -> administration.Received:
    raw = {**body, "signature": phone.sign(body)}
    return administration.Received(raw, SCHEMAS[name].load(raw))


class Recorder:
    """Build one visit's signed records on the nurse's phone, by its own clock."""

    def __init__(self, world: World, visit: HomeVisit) -> None:
        self.world, self.visit, self.rng = world, visit, world.rng
        self.start = visit.timeline.arrive + timedelta(minutes=visit.timeline.setup)

    def record(self, name: str, at: datetime, **body: Any) -> administration.Received:
        """Return one signed record of kind `name` made at true time `at`."""
        occurred = self.visit.conduct.device_time(at)
        return _received(self.visit.nurse.phone, name, {
            "id": str(self.world.new_id()), "occurred_at": _iso(occurred), **body})

    def pre_dose(self) -> tuple[administration.Received, dict[str, Any]]:
        """Return the pre-dose record and its readings."""
        timeline = self.visit.timeline
        before = vitals.resting(self.rng, self.visit.patient.baseline, hold=timeline.hold)
        decision = {"decision": "go"} if timeline.go else {
            "decision": "no_go", "decision_reason": self.rng.choice(NO_GO_REASONS)}
        if timeline.hold and timeline.go:
            decision["bp_justification"] = HOLD_JUSTIFICATION
        at = timeline.arrive + timedelta(minutes=8)
        return self.record("pre_dose", at, **before, **decision), before

    def dose(self, vial: Vial, quantity_ug: int) -> administration.Received:
        """Return the dose record: the vial's product and lot, and the infusion's times."""
        end = self.start + timedelta(minutes=self.visit.timeline.infusion)
        conduct = self.visit.conduct
        return self.record(
            "dose", self.start, product_id=str(self.world.products[vial.product].id),
            lot=vial.lot, expiry=vial.expiry.isoformat(), quantity_ug=quantity_ug, route="IV",
            infusion_started_at=_iso(conduct.device_time(self.start)),
            infusion_ended_at=_iso(conduct.device_time(end)))

    def monitoring(self, before: dict[str, Any],
                   response: vitals.Response) -> list[administration.Received]:
        """Return the observations and the discharge, as the curve of the dose runs."""
        timeline, minutes = self.visit.timeline, timedelta(minutes=1)
        # A nurse who was not there copies the pre-dose readings into every later one.
        copied = before if timeline.copied_vitals else None
        parts = [self.record("observations", self.start + minute * minutes,
                             **(copied or response.at(self.rng, before, minute)))
                 for minute in timeline.observations]
        closing = copied or vitals.discharge(self.rng, before)
        return [*parts, self.record("discharge", self.start + timeline.discharge * minutes,
                                    **closing, state="baseline",
                                    adverse_event_category="none")]

    def outcome(self) -> administration.Received:
        """Return a PHQ-9, lower as a responder's sessions add up."""
        patient = self.visit.patient
        relief = min(patient.sessions, 10) if patient.responder else patient.sessions // 4
        total = max(patient.phq9 - relief + self.rng.randint(-2, 2), 0)
        return self.record("outcomes", self.visit.timeline.arrive + timedelta(minutes=12),
                           instrument="phq9", items=vitals.phq9(self.rng, total))

    def waste(self, vial: Vial, quantity_ug: int, visit_id: uuid.UUID,
              witness: Person, reason: str | None = None) -> administration.Received:
        """Return the remainder's waste (or, with a `reason`, a whole vial's), signed by the
        nurse's phone and the witness's, which times its confirmation."""
        wasted = self.start + timedelta(minutes=self.visit.timeline.infusion
                                        + self.rng.randint(2, 6))
        at = self.visit.conduct.device_time(wasted)
        entry_id = self.world.new_id()
        attested = self.visit.clock_of(witness, wasted + self.visit.conduct.confirms_after(
            self.world.confirming, witness, wasted))
        details = {"reason": reason} if reason else {}
        movement = signed_payload({
            "id": entry_id, "kind": "waste", "product_id": self.world.products[vial.product].id,
            "lot": vial.lot, "expiry": vial.expiry, "quantity_ug": quantity_ug,
            "from_holder": bag(self.visit.nurse.user_id), "to_holder": "waste",
            "visit_id": visit_id, "details": details, "occurred_at": at})
        raw = {"id": str(entry_id), "product_id": movement["product_id"], "lot": vial.lot,
               "expiry": movement["expiry"], "quantity_ug": quantity_ug, "details": details,
               "occurred_at": _iso(at), "signature": self.visit.nurse.phone.sign(movement),
               "witnesses": [{"user_id": str(witness.user_id),
                              "device_id": str(witness.device_id), "attested_at": _iso(attested),
                              "signature": witness.phone.sign(
                                  {**movement, "attested_at": plain_value(attested)})}]}
        return administration.Received(raw, WASTE_SCHEMA.load(raw))


def _spend_vial(nurse: Nurse, product: str) -> Vial:
    vial = next(vial for vial in nurse.bag if vial.product == product)
    nurse.bag.remove(vial)
    return vial


def _dosed(world: World, visit: HomeVisit, recorder: Recorder, before: dict[str, Any],
           ug_per_kg: int) -> tuple[dict[str, list], Person]:
    """Return a dosed visit's dose, monitoring and waste records, and the waste's witness."""
    rng, conduct, patient, at = world.rng, visit.conduct, visit.patient, visit.timeline.arrive
    vial = _spend_vial(visit.nurse, patient.product)
    # The dose follows the charted weight, which is the true one unless someone lied.
    dose_ug = conduct.dose_ug(rng, ug_per_kg * patient.charted_g // 1000, at)
    response = vitals.response(rng, patient.baseline, dose_ug * 1000 // patient.charted_g,
                               spike=visit.timeline.spike)
    dose = recorder.dose(vial, dose_ug)
    *observed, discharged = recorder.monitoring(before, response)
    witness = conduct.witness(rng, visit.witnesses, at)
    waste = recorder.waste(vial, conduct.waste_ug(rng, vial.content_ug - dose_ug, at),
                           visit.booking.visit_id, witness)
    wasted = [waste]
    # A spare vial wasted whole: dropped (honest, rarely) or claimed so (an over-waster).
    spare = sum(v.product == patient.product for v in visit.nurse.bag) > visit.nurse.due
    if spare and (reason := conduct.wastes_spare(rng, at)):
        whole = _spend_vial(visit.nurse, patient.product)
        wasted.append(recorder.waste(whole, whole.content_ug, visit.booking.visit_id,
                                     witness, reason))
    return {"dose": [dose], "observations": observed, "discharge": [discharged],
            "waste": wasted}, witness


def sync(session: Session, world: World, visit: HomeVisit, ug_per_kg: int) -> Recorded:
    """Send the visit's whole session from the phone, as it syncs after the visit."""
    nurse, patient, timeline = visit.nurse, visit.patient, visit.timeline
    recorder = Recorder(world, visit)
    nurse.due -= 1
    if (patient.weighed_at is None or timeline.arrive - patient.weighed_at > WEIGH_EVERY
            or visit.conduct.weighs_today(patient, timeline.arrive)):
        weigh(session, world, patient, nurse.caller, timeline.arrive + timedelta(minutes=4),
              visit.conduct.charted_weight(world.rng, patient, timeline.arrive))
    pre, before = recorder.pre_dose()
    parts = {"pre_dose": [pre]}
    if patient.sessions % PHQ9_EVERY == 0:
        parts["outcomes"] = [recorder.outcome()]
    witness = None
    if timeline.go:
        dosed, witness = _dosed(world, visit, recorder, before, ug_per_kg)
        parts |= dosed
        patient.sessions += 1
    held = administration.record_session(session, world.rt, nurse.caller,
                                         visit.booking.visit_id, parts)
    if held:
        raise RuntimeError(f"the simulation wrote records Vigil refused: "
                           f"{[record.reason for record in held]}")
    wastes = parts.get("waste", [])
    return Recorded(str(visit.booking.visit_id), timeline.arrive, timeline, timeline.go,
                    wastes[0].raw["id"] if wastes else None, witness and str(witness.user_id),
                    str(patient.id), wastes[1].raw["id"] if len(wastes) > 1 else None,
                    wastes[1].raw["details"].get("reason") if len(wastes) > 1 else None)
