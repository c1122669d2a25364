"""Visit verification (EVV): the nurse checks in and out at the home from her phone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import changes
from backend.accounts.service import organisation_zone
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Forbidden, InvalidField
from backend.patients.models import Patient
from backend.plans.models import PlanVersion
from backend.policy.service import policy_for
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.visits.models import EvvEvent, Visit, VisitStatus
from backend.visits.service import get, own_visit, require_status
from safeguards.rules.evv import distance_m


@dataclass(frozen=True)
class Position:
    """Where the phone says it is, how sure it is, and its own clock."""

    latitude: Decimal
    longitude: Decimal
    accuracy_m: int
    occurred_at: datetime
    reason: str | None = None
    # From sync: the phone's own id for the event, what it signed, and its signature.
    id: uuid.UUID | None = None
    signed_body: dict | None = None
    signature: str | None = None


def _record_evv(session: Session, rt: Runtime, caller: Caller, visit: Visit, kind: str,
                position: Position) -> EvvEvent:
    if caller.device_id is None:
        raise Forbidden("Check in and out from a registered phone (a device-bound session).",
                        {"rule": "device_required"})
    patient = session.get(Patient, visit.patient_id)
    radius = int(policy_for(session, caller.organisation_id).value("evv_radius_m"))
    distance = None
    if patient.home_latitude is not None and patient.home_longitude is not None:
        distance = distance_m(position.latitude, position.longitude, patient.home_latitude,
                              patient.home_longitude)
    within = distance is not None and distance <= radius
    if not within and not position.reason:
        problem = (f"{distance} m from the patient's home (policy radius {radius} m)"
                   if distance is not None else "the patient's home location is not recorded")
        raise InvalidField("reason", f"required: {problem}")
    event = EvvEvent(id=position.id or uuid.uuid4(), signed_body=position.signed_body,
                     device_signature=position.signature,
                     organisation_id=visit.organisation_id, visit_id=visit.id, kind=kind,
                     nurse_id=caller.user_id, device_id=caller.device_id,
                     latitude=position.latitude, longitude=position.longitude,
                     accuracy_m=position.accuracy_m, occurred_at=position.occurred_at,
                     received_at=rt.clock.now(), distance_m=distance, radius_m=radius,
                     within_radius=within, reason=position.reason)
    session.add(event)
    session.flush()
    return event


# Each EVV step: the status it needs, the status it leaves, and the visit's timestamp it sets.
EVV_STEPS = {"check_in": (VisitStatus.SCHEDULED, VisitStatus.CHECKED_IN, "checked_in_at"),
             "check_out": (VisitStatus.CHECKED_IN, VisitStatus.COMPLETED, "checked_out_at")}


def verify_presence(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                    kind: str, position: Position) -> Visit:
    """Check the nurse in or out at the home; out of range needs a reason and raises a flag."""
    needs, leaves, stamp = EVV_STEPS[kind]
    visit = own_visit(session, caller, visit_id)
    require_status(visit, needs)
    event = _record_evv(session, rt, caller, visit, kind, position)
    visit.status, visit.updated_at = leaves, event.received_at
    setattr(visit, stamp, event.received_at)
    audit.record(session, event.received_at, caller, f"visit.{kind}", "visit", visit.id)
    session.flush()
    # Travel between homes and the visit's length are judged as soon as the nurse moves.
    changes.nurse(session, visit.organisation_id, visit.nurse_id)
    return visit


@dataclass(frozen=True)
class EvvRecord:
    """The six EVV elements of one visit (21st Century Cures Act §12006)."""

    visit_id: uuid.UUID
    service: str
    patient_id: uuid.UUID
    date: str
    nurse_id: uuid.UUID
    check_in: EvvEvent | None
    check_out: EvvEvent | None


def evv_record(session: Session, caller: Caller, visit_id: uuid.UUID) -> EvvRecord:
    """Return the EVV elements of a visit: service, patient, date, location, nurse, start/end."""
    visit = get(session, caller, visit_id)
    version = session.get(PlanVersion, visit.plan_version_id)
    product = session.get(DrugProduct, version.product_id)
    events = {e.kind: e for e in session.scalars(select(EvvEvent).where(
        EvvEvent.visit_id == visit.id).order_by(EvvEvent.received_at))}
    timezone = organisation_zone(session, visit.organisation_id)
    return EvvRecord(visit.id, f"{product.name}, {version.route} administration and monitoring",
                     visit.patient_id, visit.scheduled_start.astimezone(timezone).date()
                     .isoformat(), visit.nurse_id, events.get("check_in"),
                     events.get("check_out"))
