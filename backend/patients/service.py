"""Register and change patients with encrypted PHI, weigh them, assign nurses; audit every read."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from backend.accounts.models import Role, User
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Conflict, InvalidField, NotFound
from backend.patients.models import PATIENT_PHI, Patient, PatientNurse, PatientWeight
from backend.phi.cipher import PhiCipher, blind_index
from backend.runtime import Runtime
from backend.tenancy import assigned, assigned_patient_ids, owned

HOME = ("home_latitude", "home_longitude")
# Plausible adult weights; outside this range the entry is almost surely a typo (lb, g).
MIN_WEIGHT_G, MAX_WEIGHT_G = 20_000, 400_000
WEIGHT_PLACES = 3


@dataclass(frozen=True)
class PatientView:
    """A patient with PHI decrypted for one authorised caller."""

    id: uuid.UUID
    mrn: str
    name: str
    date_of_birth: date
    address: str | None
    phone: str | None
    emergency_contact: str | None
    notes: str | None
    sex: str | None
    home_latitude: Decimal | None
    home_longitude: Decimal | None
    nurse_ids: list[uuid.UUID]
    latest_weight: PatientWeight | None


def _nurses(session: Session, caller: Caller, nurse_ids: list[uuid.UUID],
            field: str) -> list[User]:
    nurses = list(session.scalars(select(User).where(
        User.id.in_(nurse_ids), User.organisation_id == caller.organisation_id,
        User.role == Role.NURSE, User.active.is_(True))))
    if len(nurses) != len(set(nurse_ids)):
        raise InvalidField(field, "every id must be an active nurse of this organisation")
    return nurses


def _check_home(values: Mapping[str, object]) -> None:
    given = [name for name in HOME if name in values]
    if given and (len(given) == 1 or (values[HOME[0]] is None) != (values[HOME[1]] is None)):
        missing = next(name for name in HOME if values.get(name) is None)
        raise InvalidField(missing, "give home_latitude and home_longitude together")


def _seal(box: PhiCipher, patient: Patient, values: Mapping[str, object]) -> list[str]:
    """Encrypt into `patient` each PHI value that differs from the stored one; name them."""
    changed = []
    for name, value in values.items():
        plain = value.isoformat() if isinstance(value, date) else value
        place, attribute = PATIENT_PHI.place(patient, name), PATIENT_PHI.attribute(name)
        stored = getattr(patient, attribute)
        if plain != (None if stored is None else box.decrypt(stored, place)):
            setattr(patient, attribute, None if plain is None else box.encrypt(plain, place))
            changed.append(name)
    return changed


def register(session: Session, rt: Runtime, caller: Caller, *, mrn: str, name: str,
             date_of_birth: date, nurse_ids: list[uuid.UUID], patient_id: uuid.UUID | None,
             address: str | None = None, phone: str | None = None,
             emergency_contact: str | None = None, notes: str | None = None,
             sex: str | None = None, home_latitude: Decimal | None = None,
             home_longitude: Decimal | None = None) -> PatientView:
    """Register a patient, encrypting each PHI field bound to its row and column."""
    index = blind_index(rt.keys.blind_index_key, caller.organisation_id, mrn)
    if session.scalar(select(Patient.id).where(Patient.organisation_id == caller.organisation_id,
                                               Patient.mrn_index == index)):
        raise Conflict("A patient with this MRN already exists.")
    nurses = _nurses(session, caller, nurse_ids, "nurse_ids")
    _check_home({"home_latitude": home_latitude, "home_longitude": home_longitude})
    now = rt.clock.now()
    patient = Patient(id=patient_id or uuid.uuid4(), organisation_id=caller.organisation_id,
                      mrn_index=index, home_latitude=home_latitude,
                      home_longitude=home_longitude, created_at=now,
                      created_by_id=caller.user_id)
    _seal(PhiCipher.from_keyring(rt.keys), patient, {
        "mrn": mrn, "name": name, "date_of_birth": date_of_birth, "address": address,
        "phone": phone, "emergency_contact": emergency_contact, "notes": notes, "sex": sex})
    session.add(patient)
    session.add_all(PatientNurse(patient_id=patient.id, nurse_id=nurse.id, assigned_at=now,
                                 assigned_by_id=caller.user_id) for nurse in nurses)
    session.flush()
    audit.record(session, now, caller, "patient.create", "patient", patient.id)
    return _view(session, rt, patient)


def update(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID,
           changes: Mapping[str, object]) -> PatientView:
    """Change any of a patient's details, re-encrypting only the PHI fields that changed."""
    patient = visible_patient(session, caller, patient_id)
    _check_home(changes)
    changed = _seal(PhiCipher.from_keyring(rt.keys), patient, {
        name: value for name, value in changes.items() if name in PATIENT_PHI.names})
    for name in HOME:
        if name in changes and changes[name] != getattr(patient, name):
            setattr(patient, name, changes[name])
            changed.append(name)
    now = rt.clock.now()
    if changed:
        patient.updated_at = now
    # Names only: the audit trail must not become a second copy of the PHI.
    audit.record(session, now, caller, "patient.update", "patient", patient.id,
                 detail={"fields": sorted(changed)})
    session.flush()
    return _view(session, rt, patient)


def _visible(caller: Caller) -> Select[tuple[Patient]]:
    query = select(Patient).where(Patient.organisation_id == caller.organisation_id)
    if caller.role == Role.NURSE:
        query = query.where(Patient.id.in_(assigned_patient_ids(caller.user_id)))
    return query


def _view(session: Session, rt: Runtime, patient: Patient) -> PatientView:
    box = PhiCipher.from_keyring(rt.keys)
    plain: dict[str, object] = {}
    for name in PATIENT_PHI.names:
        stored = getattr(patient, PATIENT_PHI.attribute(name))
        plain[name] = None if stored is None else box.decrypt(
            stored, PATIENT_PHI.place(patient, name))
    plain["date_of_birth"] = date.fromisoformat(str(plain["date_of_birth"]))
    return PatientView(id=patient.id, **plain, home_latitude=patient.home_latitude,
                       home_longitude=patient.home_longitude,
                       nurse_ids=_assigned_nurse_ids(session, patient.id),
                       latest_weight=latest_weight(session, patient.id))


def read(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID) -> PatientView:
    """Return one patient the caller may see, and audit the read."""
    patient = visible_patient(session, caller, patient_id)
    audit.record(session, rt.clock.now(), caller, "patient.read", "patient", patient.id)
    return _view(session, rt, patient)


def read_for_record(session: Session, rt: Runtime, caller: Caller,
                    patient_id: uuid.UUID) -> PatientView | None:
    """Return a patient decrypted if the caller may see them, else None; not audited here.

    For a record that shows the patient's details among its own (the REMS monitoring form):
    that record's read is audited once, naming the PHI fields it shows.
    """
    try:
        patient = visible_patient(session, caller, patient_id)
    except NotFound:
        # A nurse's own visit to a patient no longer assigned to her: the visit is hers, the
        # patient's details no longer are.
        return None
    return _view(session, rt, patient)


def search(session: Session, rt: Runtime, caller: Caller, mrn: str | None, *,
           limit: int | None = None, offset: int = 0) -> list[PatientView]:
    """Return the patients the caller may see (one MRN, a page), auditing each one returned."""
    query = _visible(caller)
    if mrn is not None:
        query = query.where(Patient.mrn_index == blind_index(
            rt.keys.blind_index_key, caller.organisation_id, mrn))
    patients = list(session.scalars(query.order_by(Patient.created_at, Patient.id)
                                    .limit(limit).offset(offset)))
    now = rt.clock.now()
    for patient in patients:
        audit.record(session, now, caller, "patient.read", "patient", patient.id,
                     detail={"via": "list"})
    return [_view(session, rt, patient) for patient in patients]


def visible_patient(session: Session, caller: Caller, patient_id: uuid.UUID) -> Patient:
    """Return a patient the caller may see (a nurse: hers), or raise NotFound; no audit row."""
    return owned(session, caller, Patient, patient_id, what="patient", nurse_sees=assigned("id"))


def record_weight(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID, *,
                  weight_kg: Decimal, measured_at: datetime) -> PatientWeight:
    """Record a weighing in whole grams; refuse implausible weights and future times."""
    patient = visible_patient(session, caller, patient_id)
    exponent = weight_kg.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -WEIGHT_PLACES:
        raise InvalidField("weight_kg", f"at most {WEIGHT_PLACES} decimal places (whole grams)")
    weight_g = int(weight_kg.scaleb(WEIGHT_PLACES))
    if not MIN_WEIGHT_G <= weight_g <= MAX_WEIGHT_G:
        raise InvalidField("weight_kg", f"must be between {MIN_WEIGHT_G // 1000} and "
                                        f"{MAX_WEIGHT_G // 1000} kg")
    now = rt.clock.now()
    if measured_at > now:
        raise InvalidField("measured_at", "must not be in the future")
    weight = PatientWeight(patient_id=patient.id, weight_g=weight_g, measured_at=measured_at,
                           recorded_by_id=caller.user_id, recorded_at=now)
    session.add(weight)
    session.flush()
    audit.record(session, now, caller, "patient.weight_record", "patient", patient.id,
                 detail={"weight_id": str(weight.id)})
    return weight


def _newest_first(patient_id: uuid.UUID) -> Select[tuple[PatientWeight]]:
    return select(PatientWeight).where(PatientWeight.patient_id == patient_id).order_by(
        PatientWeight.measured_at.desc(), PatientWeight.recorded_at.desc())


def latest_weight(session: Session, patient_id: uuid.UUID) -> PatientWeight | None:
    """Return the patient's most recently measured weight, if any (no access check, no audit)."""
    return session.scalar(_newest_first(patient_id).limit(1))


def weights(session: Session, rt: Runtime, caller: Caller,
            patient_id: uuid.UUID) -> list[PatientWeight]:
    """Return a patient's weighings, newest first, and audit the read."""
    patient = visible_patient(session, caller, patient_id)
    audit.record(session, rt.clock.now(), caller, "patient.weights_read", "patient", patient.id)
    return list(session.scalars(_newest_first(patient.id)))


def _assigned_nurse_ids(session: Session, patient_id: uuid.UUID) -> list[uuid.UUID]:
    # Distinct: two concurrent assignments of one nurse may both have been written.
    return list(session.scalars(select(PatientNurse.nurse_id).distinct().where(
        PatientNurse.patient_id == patient_id, PatientNurse.ended_at.is_(None))))


def _assignments(session: Session, patient_id: uuid.UUID,
                 nurse_id: uuid.UUID) -> list[PatientNurse]:
    return list(session.scalars(select(PatientNurse).where(
        PatientNurse.patient_id == patient_id, PatientNurse.nurse_id == nurse_id,
        PatientNurse.ended_at.is_(None)).order_by(PatientNurse.assigned_at)))


def assign_nurse(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID,
                 nurse_id: uuid.UUID) -> PatientNurse:
    """Assign an active nurse of the organisation; an existing assignment is returned as is."""
    patient = visible_patient(session, caller, patient_id)
    (nurse,) = _nurses(session, caller, [nurse_id], "nurse_id")
    current = _assignments(session, patient.id, nurse.id)
    if current:
        return current[0]
    now = rt.clock.now()
    assignment = PatientNurse(patient_id=patient.id, nurse_id=nurse.id, assigned_at=now,
                              assigned_by_id=caller.user_id)
    session.add(assignment)
    session.flush()
    audit.record(session, now, caller, "patient.nurse_assign", "patient", patient.id,
                 detail={"nurse_id": str(nurse.id)})
    return assignment


def end_assignment(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID,
                   nurse_id: uuid.UUID) -> None:
    """End a nurse's assignment to a patient; the assignment row stays as history."""
    patient = visible_patient(session, caller, patient_id)
    current = _assignments(session, patient.id, nurse_id)
    if not current:
        raise NotFound("The nurse is not assigned to this patient.")
    now = rt.clock.now()
    for assignment in current:
        assignment.ended_at = now
    audit.record(session, now, caller, "patient.nurse_unassign", "patient", patient.id,
                 detail={"nurse_id": str(nurse_id)})
    session.flush()
