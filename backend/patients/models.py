"""Patients, their PHI stored only as ciphertext, and the nurses assigned to them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class Patient(Base):
    """A patient; name and date of birth are AES-GCM ciphertext, the MRN only a blind index."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("organisation_id", "mrn_index"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    mrn_index: Mapped[str] = mapped_column(String(64))
    mrn_enc: Mapped[str] = mapped_column(Text)
    name_enc: Mapped[str] = mapped_column(Text)
    date_of_birth_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))


class PatientNurse(Base):
    """A nurse's assignment to a patient; ended rather than deleted, so history stays."""

    __tablename__ = "patient_nurse"
    __table_args__ = (Index("ix_patient_nurse_nurse_patient", "nurse_id", "patient_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    nurse_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    assigned_at: Mapped[datetime]
    assigned_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    ended_at: Mapped[datetime | None]
