"""Register patients with encrypted PHI, assign nurses, and read them with an audit row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from backend.accounts.models import Role, User
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Conflict, InvalidField, NotFound
from backend.patients.models import Patient, PatientNurse
from backend.phi.cipher import PhiCipher, Place, blind_index
from backend.runtime import Runtime

ENCRYPTED_COLUMNS = ("mrn", "name", "date_of_birth")


@dataclass(frozen=True)
class PatientView:
    """A patient with PHI decrypted for one authorised caller."""

    id: uuid.UUID
    mrn: str
    name: str
    date_of_birth: date
    nurse_ids: list[uuid.UUID]


def cipher(rt: Runtime) -> PhiCipher:
    """Return the PHI cipher over the runtime's keys."""
    return PhiCipher(rt.keys.phi_keys, rt.keys.phi_active)


def _place(patient: Patient, column: str) -> Place:
    return Place(patient.organisation_id, "patient", column, patient.id)


def _nurses(session: Session, caller: Caller, nurse_ids: list[uuid.UUID]) -> list[User]:
    nurses = list(session.scalars(select(User).where(
        User.id.in_(nurse_ids), User.organisation_id == caller.organisation_id,
        User.role == Role.NURSE, User.active.is_(True))))
    if len(nurses) != len(set(nurse_ids)):
        raise InvalidField("nurse_ids", "every id must be an active nurse of this organisation")
    return nurses


def register(session: Session, rt: Runtime, caller: Caller, *, mrn: str, name: str,
             date_of_birth: date, nurse_ids: list[uuid.UUID],
             patient_id: uuid.UUID | None) -> PatientView:
    """Register a patient, encrypting each PHI field bound to its row and column."""
    index = blind_index(rt.keys.blind_index_key, caller.organisation_id, mrn)
    if session.scalar(select(Patient.id).where(Patient.organisation_id == caller.organisation_id,
                                               Patient.mrn_index == index)):
        raise Conflict("A patient with this MRN already exists.")
    nurses = _nurses(session, caller, nurse_ids)
    now = rt.clock.now()
    patient = Patient(id=patient_id or uuid.uuid4(), organisation_id=caller.organisation_id,
                      mrn_index=index, created_at=now, created_by_id=caller.user_id)
    box = cipher(rt)
    plain = {"mrn": mrn, "name": name, "date_of_birth": date_of_birth.isoformat()}
    for column in ENCRYPTED_COLUMNS:
        setattr(patient, f"{column}_enc", box.encrypt(plain[column], _place(patient, column)))
    session.add(patient)
    session.add_all(PatientNurse(patient_id=patient.id, nurse_id=nurse.id, assigned_at=now,
                                 assigned_by_id=caller.user_id) for nurse in nurses)
    session.flush()
    audit.record(session, now, caller, "patient.create", "patient", patient.id)
    return PatientView(patient.id, mrn, name, date_of_birth, [n.id for n in nurses])


def _visible(caller: Caller) -> Select[tuple[Patient]]:
    query = select(Patient).where(Patient.organisation_id == caller.organisation_id)
    if caller.role == Role.NURSE:
        query = query.where(Patient.id.in_(select(PatientNurse.patient_id).where(
            PatientNurse.nurse_id == caller.user_id, PatientNurse.ended_at.is_(None))))
    return query


def _view(session: Session, rt: Runtime, patient: Patient) -> PatientView:
    box = cipher(rt)
    plain = {c: box.decrypt(getattr(patient, f"{c}_enc"), _place(patient, c))
             for c in ENCRYPTED_COLUMNS}
    nurse_ids = list(session.scalars(select(PatientNurse.nurse_id).where(
        PatientNurse.patient_id == patient.id, PatientNurse.ended_at.is_(None))))
    return PatientView(patient.id, plain["mrn"], plain["name"],
                       date.fromisoformat(plain["date_of_birth"]), nurse_ids)


def read(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID) -> PatientView:
    """Return one patient the caller may see, and audit the read."""
    patient = session.scalar(_visible(caller).where(Patient.id == patient_id))
    if patient is None:
        raise NotFound("No such patient.")
    audit.record(session, rt.clock.now(), caller, "patient.read", "patient", patient.id)
    return _view(session, rt, patient)


def search(session: Session, rt: Runtime, caller: Caller, mrn: str | None) -> list[PatientView]:
    """Return the patients the caller may see (optionally one MRN), auditing each read."""
    query = _visible(caller)
    if mrn is not None:
        query = query.where(Patient.mrn_index == blind_index(
            rt.keys.blind_index_key, caller.organisation_id, mrn))
    patients = list(session.scalars(query.order_by(Patient.created_at)))
    now = rt.clock.now()
    for patient in patients:
        audit.record(session, now, caller, "patient.read", "patient", patient.id,
                     detail={"via": "list"})
    return [_view(session, rt, patient) for patient in patients]
