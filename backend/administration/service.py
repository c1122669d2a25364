"""Record a home session from the nurse's phone: verify, validate, store, and never lose it."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import changes
from backend.administration import instruments
from backend.administration.models import (
    Discharge,
    DoseRecord,
    Observation,
    OutcomeScore,
    PreDose,
    QuarantinedEvent,
    SignedRecord,
)
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.client_ids import stored_twin
from backend.custody import service as custody
from backend.custody.doses import administered
from backend.custody.ledger import Attestation, InsufficientStock, append
from backend.custody.models import CustodyEntry, Kind
from backend.devices.signatures import live_device, verify_all
from backend.errors import Conflict, InvalidField, SignatureInvalid, VigilError
from backend.phi.sealed import digest
from backend.products import service as products
from backend.runtime import Runtime
from backend.visits import service as visits
from backend.visits.models import Visit


class Untrusted(Exception):
    """A record that must not be applied: why, and what the phone sent."""

    def __init__(self, code: str, message: str, record_type: str, raw: dict[str, Any],
                 reason: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.record_type, self.raw, self.reason = record_type, raw, reason

    @property
    def record_id(self) -> str | None:
        """Return the id the phone gave the record, as far as it can be stored."""
        return str(self.raw.get("id"))[:64] if self.raw.get("id") else None


class Quarantined(VigilError):
    """A record could not be trusted; it is kept in quarantine, flagged, and not applied."""

    status = 422

    def __init__(self, untrusted: Untrusted, held_id: uuid.UUID) -> None:
        super().__init__(untrusted.message, {"quarantine_id": str(held_id),
                                             "record_id": untrusted.record_id,
                                             "reason": untrusted.reason})
        self.code, self.status = untrusted.code, untrusted.status


@dataclass(frozen=True)
class Received:
    """One record as the phone sent it (`raw`, which it signed) and as validated (`data`)."""

    raw: dict[str, Any]
    data: dict[str, Any]

    @property
    def signed_body(self) -> dict[str, Any]:
        """Return what the phone signed: the record as sent, without its signature."""
        return {k: v for k, v in self.raw.items() if k != "signature"}


def quarantine(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID | None,
               untrusted: Untrusted, held_id: uuid.UUID | None = None) -> QuarantinedEvent:
    """Keep an untrusted record with its payload and the reason, and flag it for review.

    `visit_id` must be a visit the caller may record on: a refusal never writes elsewhere.
    """
    record_type, raw, reason = untrusted.record_type, untrusted.raw, untrusted.reason
    held = QuarantinedEvent(
        id=held_id or uuid.uuid4(), organisation_id=caller.organisation_id,
        record_type=record_type, record_id=untrusted.record_id,
        visit_id=visit_id, user_id=caller.user_id,
        device_id=caller.device_id, payload=raw, reason=reason, received_at=rt.clock.now())
    session.add(held)
    session.flush()
    changes.quarantined(session, caller.organisation_id, held.id)
    return held


def verify_record(session: Session, caller: Caller, record_type: str,
                  raw: dict[str, Any]) -> dict[str, Any]:
    """Return what the caller's phone signed of `raw`; raise `Untrusted` if it did not."""
    checked = verify_records(session, caller, record_type, [raw])[0]
    if isinstance(checked, Untrusted):
        raise checked
    return checked


def verify_records(session: Session, caller: Caller, record_type: str,
                   raws: Sequence[dict[str, Any]]) -> list[dict[str, Any] | Untrusted]:
    """Return what the caller's phone signed of each record, or why it cannot be trusted."""
    payloads = [{k: v for k, v in raw.items() if k != "signature"} for raw in raws]
    try:
        if caller.device_id is None:
            raise SignatureInvalid("Records come signed from a registered phone.",
                                   {"reason": "no_device"})
        device = live_device(session, organisation_id=caller.organisation_id,
                             user_id=caller.user_id, device_id=caller.device_id)
        refusals = verify_all(device.public_key, [
            (payload, raw.get("signature") or "") for payload, raw in zip(payloads, raws,
                                                                         strict=True)])
    except SignatureInvalid as exc:
        refusals = [exc] * len(raws)
    return [payload if refused is None else Untrusted(
        "signature_invalid", refused.message, record_type, raw,
        f"signature_invalid: {refused.details.get('reason', refused.message)}")
        for payload, raw, refused in zip(payloads, raws, refusals, strict=True)]


def _trust(session: Session, caller: Caller, visit: Visit, model: type,
           received: Received) -> SignedRecord | None:
    """Return the stored twin of an identical retry, or None; quarantine what fails trust."""
    record_type = model.__tablename__
    payload = verify_record(session, caller, record_type, received.raw)
    # Compared by digest: a retry is recognised without decrypting the stored body.
    return stored_twin(session.get(model, received.data["id"]), (digest(payload), visit.id),
                       content=lambda stored: (stored.signed_body_sha256, stored.visit_id),
                       conflict=id_taken(record_type, received.raw))


def id_taken(record_type: str, raw: dict[str, Any]) -> Untrusted:
    """Return the refusal of a record whose id already holds a different record."""
    # 409, as the ledger answers a different entry under a stored id.
    return Untrusted("append_only", "A different record already has this id.", record_type, raw,
                     "conflicting_duplicate: another record already has this id", status=409)


def signed_columns(caller: Caller, visit_id: uuid.UUID, received: Received,
                   rt: Runtime) -> dict[str, Any]:
    """Return the columns every record from a phone carries: ids, signature, both clocks."""
    return {"id": received.data["id"], "organisation_id": caller.organisation_id,
            "visit_id": visit_id, "nurse_id": caller.user_id, "device_id": caller.device_id,
            "device_signature": received.raw["signature"],
            "signed_body": received.signed_body,
            "occurred_at": received.data["occurred_at"], "received_at": rt.clock.now()}


def _vitals(data: dict[str, Any]) -> dict[str, Any]:
    cadss = data.get("cadss_items")
    return {"systolic": data.get("systolic"), "diastolic": data.get("diastolic"),
            "heart_rate": data.get("heart_rate"), "spo2": data.get("spo2"),
            "respiratory_rate": data.get("respiratory_rate"), "moaas": data.get("moaas"),
            "cadss_items": cadss,
            "cadss_total": instruments.CADSS.total("cadss_items", cadss) if cadss else None}


def _store(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID, model: type,
           received: Received, build) -> SignedRecord:
    visit = visits.own_visit(session, caller, visit_id)
    if (stored := _trust(session, caller, visit, model, received)) is not None:
        return stored
    record = model(**signed_columns(caller, visit.id, received, rt), **build(visit))
    session.add(record)
    session.flush()
    audit.record(session, record.received_at, caller, f"session.{model.__tablename__}",
                 model.__tablename__, record.id, detail={"visit_id": str(visit.id)})
    return record


def record_pre_dose(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                    received: Received) -> PreDose:
    """Store the pre-dose assessment, with the patient's latest weight as the weight used."""
    from backend.patients.service import latest_weight

    def build(visit: Visit) -> dict[str, Any]:
        if session.scalar(select(PreDose.id).where(PreDose.visit_id == visit.id)):
            raise Conflict("This visit already has a pre-dose record.", {"rule": "once"})
        weight = latest_weight(session, visit.patient_id)
        data = received.data
        return {**_vitals(data), "co_medications": data["co_medications"],
                "weight_g": weight.weight_g if weight else None,
                "weight_measured_at": weight.measured_at if weight else None,
                "decision": data["decision"], "decision_reason": data["decision_reason"],
                "bp_justification": data["bp_justification"]}

    return _store(session, rt, caller, visit_id, PreDose, received, build)


def ug_per_kg(quantity_ug: int, weight_g: int | None) -> Decimal | None:
    """Return the dose in µg per kg of body weight, to 0.001, or None without a weight."""
    if not weight_g:
        return None
    return (Decimal(quantity_ug) * 1000 / weight_g).quantize(Decimal("0.001"), ROUND_HALF_UP)


def record_dose(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                received: Received) -> DoseRecord:
    """Store the dose and its custody `administer` entry; a bag without the lot is flagged."""
    data = received.data

    def build(visit: Visit) -> dict[str, Any]:
        if session.scalar(select(DoseRecord.id).where(DoseRecord.visit_id == visit.id)):
            raise Conflict("This visit already has a dose record.", {"rule": "once"})
        pre = session.scalar(select(PreDose).where(PreDose.visit_id == visit.id))
        weight_g = pre.weight_g if pre else None
        product = products.get(session, caller, data["product_id"])
        return {"plan_version_id": visit.plan_version_id, "product_id": product.id,
                "lot": data["lot"], "expiry": data["expiry"],
                "quantity_ug": data["quantity_ug"], "route": data["route"],
                "infusion_started_at": data["infusion_started_at"],
                "infusion_ended_at": data["infusion_ended_at"], "weight_g": weight_g,
                "ug_per_kg": ug_per_kg(data["quantity_ug"], weight_g),
                "custody_entry_id": _administer(session, rt, caller, visit, received)}

    return _store(session, rt, caller, visit_id, DoseRecord, received, build)


def _administer(session: Session, rt: Runtime, caller: Caller, visit: Visit,
                received: Received) -> uuid.UUID | None:
    """Move the dose out of the nurse's bag; return the custody entry, or None if short.

    The entry carries the phone's signature of the dose and the body it covers, so that the
    movement stays bound to what the nurse signed.
    """
    movement = administered(received.signed_body, caller.user_id, visit.patient_id, visit.id)
    attestation = Attestation(actor_id=caller.user_id, device_id=caller.device_id,
                              device_signature=received.raw["signature"],
                              signed_record=received.signed_body)
    try:
        # A savepoint: a refused withdrawal leaves the ledger untouched, and the dose is kept.
        with session.begin_nested():
            return append(session, caller.organisation_id, movement, attestation,
                          rt.clock.now(), keys=rt.keys).id
    except InsufficientStock:
        # The dose is kept without moving custody; custody.administer_discrepancy flags it.
        return None


def observation_columns(data: dict[str, Any]) -> dict[str, Any]:
    """Return an observation's columns: scale totals are Vigil's, a disagreeing claim noted."""
    vitals = _vitals(data)
    bprs = data.get("bprs_items")
    bprs_total = instruments.BPRS_POSITIVE.total("bprs_items", bprs) if bprs else None
    claimed = {name: data[name] for name, ours in
               (("cadss_total", vitals["cadss_total"]), ("bprs_total", bprs_total))
               if data.get(name) is not None and data[name] != ours}
    return {**vitals, "bprs_items": bprs, "bprs_total": bprs_total, "client_totals": claimed}


def record_observation(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                       received: Received) -> Observation:
    """Store one observation; scale totals are Vigil's, and a disagreeing client total noted."""
    return _store(session, rt, caller, visit_id, Observation, received,
                  lambda _visit: observation_columns(received.data))


def record_discharge(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                     received: Received) -> Discharge:
    """Store the discharge; adverse-event free text is encrypted as PHI."""
    data = received.data

    def build(visit: Visit) -> dict[str, Any]:
        if session.scalar(select(Discharge.id).where(Discharge.visit_id == visit.id)):
            raise Conflict("This visit already has a discharge record.", {"rule": "once"})
        _ready_after_dose(session, visit, data.get("ready_to_leave_at"))
        return {**_vitals(data), "state": data["state"],
                "adverse_event_category": data["adverse_event_category"],
                "adverse_events": data.get("adverse_events") or None,
                "ready_to_leave_at": data.get("ready_to_leave_at"),
                "respiratory_depression": data.get("respiratory_depression")}

    return _store(session, rt, caller, visit_id, Discharge, received, build)


def _ready_after_dose(session: Session, visit: Visit, ready: datetime | None) -> None:
    """Refuse a time ready to leave before the visit's dose began."""
    # Without a dose stored (a no-go, or a dose still to come) there is nothing to compare.
    started = session.scalar(select(DoseRecord.infusion_started_at)
                             .where(DoseRecord.visit_id == visit.id))
    if ready is not None and started is not None and ready < started:
        raise InvalidField("ready_to_leave_at",
                           f"must not be before the dose began ({started.isoformat()})")


def outcome_columns(data: dict[str, Any]) -> dict[str, Any]:
    """Return a PHQ-9 or MADRS score's columns, totalled by Vigil."""
    if data["items"] is None:
        raise InvalidField("items", "required")
    scale = instruments.OUTCOMES[data["instrument"]]
    return {"instrument": data["instrument"], "items": data["items"],
            "total": scale.total("items", data["items"])}


def record_outcome(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                   received: Received) -> OutcomeScore:
    """Store a PHQ-9 or MADRS, totalled by Vigil."""
    return _store(session, rt, caller, visit_id, OutcomeScore, received,
                  lambda _visit: outcome_columns(received.data))


RECORDERS = {"pre_dose": record_pre_dose, "dose": record_dose,
             "observations": record_observation, "discharge": record_discharge,
             "outcomes": record_outcome}


def record_one(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID, name: str,
               received: Received) -> SignedRecord:
    """Store one record; an untrusted one is quarantined and refused with `Quarantined`."""
    visits.own_visit(session, caller, visit_id)
    try:
        record = RECORDERS[name](session, rt, caller, visit_id, received)
    except Untrusted as untrusted:
        held_id = uuid.uuid4()
        # The refusal rolls the request back; the record and its flag are kept after it.
        changes.keep(session, partial(quarantine, rt=rt, caller=caller, visit_id=visit_id,
                                      untrusted=untrusted, held_id=held_id))
        raise Quarantined(untrusted, held_id) from untrusted
    changes.visit_session(session, caller.organisation_id, visit_id)
    return record


def record_session(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                   parts: dict[str, list[Received]]) -> list[QuarantinedEvent]:
    """Store a whole session in one transaction; untrusted parts are quarantined, not lost."""
    visits.own_visit(session, caller, visit_id)
    held = []
    for name in RECORDERS:
        for received in parts.get(name, []):
            try:
                # A savepoint per part: an untrusted part leaves no trace but its quarantine.
                with session.begin_nested():
                    RECORDERS[name](session, rt, caller, visit_id, received)
            except Untrusted as untrusted:
                held.append(_hold(session, rt, caller, visit_id, untrusted))
    for received in parts.get("waste", []):
        try:
            with session.begin_nested():
                record_waste(session, rt, caller, visit_id, received.data)
        except VigilError as refused:
            # Recorded offline, so it happened: keep it, with why the ledger refused it.
            held.append(_hold(session, rt, caller, visit_id, Untrusted(
                refused.code, refused.message, "custody_waste", received.raw,
                f"{refused.code}: {refused.message}")))
    changes.visit_session(session, caller.organisation_id, visit_id)
    return held


def _hold(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
          untrusted: Untrusted) -> QuarantinedEvent:
    """Quarantine a part of a session, and keep it even if a later part refuses the whole."""
    held = quarantine(session, rt, caller, visit_id, untrusted)
    changes.keep(session, partial(_held_still, rt=rt, caller=caller, visit_id=visit_id,
                                  untrusted=untrusted, held_id=held.id))
    return held


def _held_still(session: Session, *, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                untrusted: Untrusted, held_id: uuid.UUID) -> None:
    # Kept writers run at the end of the unit either way: write it again only if rolled back.
    if session.get(QuarantinedEvent, held_id) is None:
        quarantine(session, rt, caller, visit_id, untrusted, held_id)


def record_waste(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
                 data: dict[str, Any]) -> CustodyEntry:
    """Record the remainder of a visit's dose as a witnessed custody `waste` entry."""
    visits.own_visit(session, caller, visit_id)
    fields = dict(data)
    witnesses = [custody.Witness(**w) for w in fields.pop("witnesses")]
    return custody.record(session, rt, caller, custody.EntryRequest(
        kind=Kind.WASTE, visit_id=visit_id, witnesses=witnesses, **fields))


@dataclass(frozen=True)
class SessionRecord:
    """A visit's session as stored."""

    pre_dose: PreDose | None
    dose: DoseRecord | None
    observations: list[Observation]
    discharge: Discharge | None
    outcomes: list[OutcomeScore]
    quarantined: list[dict[str, Any]]


def read_session(session: Session, caller: Caller, visit_id: uuid.UUID) -> SessionRecord:
    """Return everything recorded for a visit (a nurse: her own visits)."""
    return read_sessions(session, caller, [visit_id])[visit_id]


def read_sessions(session: Session, caller: Caller,
                  visit_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, SessionRecord]:
    """Return everything recorded for each of several visits, in one read per kind of record."""
    shown = [visits.get(session, caller, visit_id).id for visit_id in dict.fromkeys(visit_ids)]
    if not shown:
        return {}
    pre, given, observed, ended, scored, held = (_by_visit(session, model, shown) for model in (
        PreDose, DoseRecord, Observation, Discharge, OutcomeScore, QuarantinedEvent))
    return {visit_id: SessionRecord(
        pre_dose=next(iter(pre[visit_id]), None), dose=next(iter(given[visit_id]), None),
        observations=observed[visit_id], discharge=next(iter(ended[visit_id]), None),
        outcomes=scored[visit_id],
        quarantined=[{"id": str(q.id), "record_type": q.record_type, "reason": q.reason,
                      "received_at": q.received_at.isoformat()} for q in held[visit_id]])
        for visit_id in shown}


def _by_visit(session: Session, model: type, visit_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    """Return the rows of `model` recorded for each visit, in the order they happened."""
    # A quarantined record has only the server's clock; the id keeps equal times in order.
    order = ((QuarantinedEvent.received_at, QuarantinedEvent.id) if model is QuarantinedEvent
             else (model.occurred_at,))
    found: dict[uuid.UUID, list] = {visit_id: [] for visit_id in visit_ids}
    for row in session.scalars(select(model).where(model.visit_id.in_(visit_ids))
                               .order_by(*order)):
        found[row.visit_id].append(row)
    return found


def view_session(session: Session, rt: Runtime, caller: Caller,
                 visit_id: uuid.UUID) -> SessionRecord:
    """Return a visit's session record for a reader, auditing the read of clinical data."""
    return view_sessions(session, rt, caller, [visit_id])[visit_id]


def view_sessions(session: Session, rt: Runtime, caller: Caller,
                  visit_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, SessionRecord]:
    """Return several visits' session records for a reader, auditing each read as one visit's."""
    records = read_sessions(session, caller, visit_ids)
    now = rt.clock.now()
    for visit_id in records:
        audit.record(session, now, caller, "session.read", "visit", visit_id)
    return records
