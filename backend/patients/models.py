"""Patients, their PHI stored only as ciphertext, and the nurses assigned to them."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns


class Patient(Base):
    """A patient; every PHI field is AES-GCM ciphertext, the MRN found through a blind index."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("organisation_id", "mrn_index"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    mrn_index: Mapped[str] = mapped_column(String(64))
    mrn_enc: Mapped[str] = mapped_column(Text)
    name_enc: Mapped[str] = mapped_column(Text)
    date_of_birth_enc: Mapped[str] = mapped_column(Text)
    address_enc: Mapped[str | None] = mapped_column(Text)
    phone_enc: Mapped[str | None] = mapped_column(Text)
    emergency_contact_enc: Mapped[str | None] = mapped_column(Text)
    notes_enc: Mapped[str | None] = mapped_column(Text)
    # Administrative sex as FHIR names it (female, male, other, unknown): the REMS form asks it.
    sex_enc: Mapped[str | None] = mapped_column(Text)
    # Kept in clear for visit verification: check-in coordinates reveal it anyway.
    home_latitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    home_longitude: Mapped[Decimal | None] = mapped_column(Numeric(9, 6))
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    updated_at: Mapped[datetime | None]


PATIENT_PHI = EncryptedColumns(Patient, ("mrn", "name", "date_of_birth", "address", "phone",
                                         "emergency_contact", "notes", "sex"))


class PatientNurse(Base):
    """A nurse's assignment to a patient; ended rather than deleted, so history stays."""

    __tablename__ = "patient_nurse"
    __table_args__ = (
        Index("ix_patient_nurse_nurse_patient", "nurse_id", "patient_id"),
        # One open assignment per nurse and patient, even under concurrent assign requests.
        Index("uq_patient_nurse_open", "patient_id", "nurse_id", unique=True,
              sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    nurse_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    assigned_at: Mapped[datetime]
    assigned_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    ended_at: Mapped[datetime | None]


class PatientWeight(Base):
    """A weighing: doses in mg/kg are computed from the latest one."""

    __tablename__ = "patient_weight"
    __table_args__ = (Index("ix_patient_weight_patient_at", "patient_id", "measured_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    weight_g: Mapped[int]
    measured_at: Mapped[datetime]
    recorded_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime]
