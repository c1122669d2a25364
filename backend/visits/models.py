"""Home visits and their visit-verification (EVV) events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns
from backend.phi.sealed import Sealed


class VisitStatus(StrEnum):
    """Where a visit is in its life."""

    SCHEDULED = "scheduled"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"
    MISSED = "missed"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"


# Visits that hold a dose slot: counted against the plan's frequency limits.
DOSE_HOLDING = (VisitStatus.SCHEDULED, VisitStatus.CHECKED_IN, VisitStatus.COMPLETED)


class Visit(Base):
    """A nurse's visit to a patient's home to give one dose under one plan version."""

    __tablename__ = "visit"
    __table_args__ = (
        Index("ix_visit_nurse_start", "nurse_id", "scheduled_start"),
        Index("ix_visit_patient_start", "patient_id", "scheduled_start"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    nurse_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    plan_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plan_version.id"))
    phase_ordinal: Mapped[int]
    scheduled_start: Mapped[datetime]
    scheduled_end: Mapped[datetime]
    status: Mapped[VisitStatus] = mapped_column(String(12))
    series_id: Mapped[uuid.UUID | None]
    rescheduled_from_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visit.id"))
    # Free text (a cancellation's reason, a prescriber's override), kept as PHI ciphertext.
    status_reason_enc: Mapped[str | None] = mapped_column(Text)
    override_reason_enc: Mapped[str | None] = mapped_column(Text)
    override_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"))
    checked_in_at: Mapped[datetime | None]
    checked_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    updated_at: Mapped[datetime]

    status_reason = Sealed()
    override_reason = Sealed()


VISIT_PHI = EncryptedColumns(Visit, ("status_reason", "override_reason"))


class EvvEvent(Base):
    """A check-in or check-out: where the phone was, its clock, and the server's verdict."""

    __tablename__ = "evv_event"
    # A nurse's check-ins in a window: a flag's timeline.
    __table_args__ = (Index("ix_evv_event_org_nurse_received", "organisation_id", "nurse_id",
                            "received_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visit.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    nurse_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("device.id"))
    latitude: Mapped[Decimal] = mapped_column(Numeric(9, 6))
    longitude: Mapped[Decimal] = mapped_column(Numeric(9, 6))
    accuracy_m: Mapped[int]
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    distance_m: Mapped[int | None]
    radius_m: Mapped[int]
    within_radius: Mapped[bool]
    reason_enc: Mapped[str | None] = mapped_column(Text)
    # Set when the event came signed through sync: what the phone signed (as ciphertext, with
    # the digest of its canonical bytes), and its signature.
    signed_body_enc: Mapped[str | None] = mapped_column(Text)
    signed_body_sha256: Mapped[str | None] = mapped_column(String(64))
    device_signature: Mapped[str | None] = mapped_column(String(100))

    reason = Sealed()
    signed_body = Sealed(as_json=True, digested=True)


EVV_PHI = EncryptedColumns(EvvEvent, ("reason", "signed_body"))
