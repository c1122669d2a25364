"""Treatment plans, their immutable versions, and each version's ordered phases."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.accounts.models import User
from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns
from backend.phi.sealed import Sealed


class TreatmentPlan(Base):
    """A patient's course of treatment; every change is a new `PlanVersion`."""

    __tablename__ = "treatment_plan"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"), index=True)
    status: Mapped[str] = mapped_column(String(10))
    current_version: Mapped[int]
    created_at: Mapped[datetime]
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    ended_at: Mapped[datetime | None]

    versions: Mapped[list[PlanVersion]] = relationship(
        order_by="PlanVersion.version", back_populates="plan")


class PlanVersion(Base):
    """One version of a plan as the prescriber wrote it; never changed after it is written."""

    __tablename__ = "plan_version"
    __table_args__ = (UniqueConstraint("plan_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("treatment_plan.id"), index=True)
    # The plan's organisation, which the change reason's ciphertext is bound to.
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    version: Mapped[int]
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drug_product.id"))
    route: Mapped[str] = mapped_column(String(20))
    dose_ug_per_kg: Mapped[int | None]
    dose_ug: Mapped[int | None]
    max_dose_ug: Mapped[int]
    infusion_minutes: Mapped[int]
    prescriber_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime]
    change_reason_enc: Mapped[str | None] = mapped_column(Text)
    # Why the dose is above the protocol dose (issue 17), required when it is; PHI.
    dose_justification_enc: Mapped[str | None] = mapped_column(Text)
    # Thresholds this plan sets for its patient, as decimal strings, over the organisation's.
    policy_overrides: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The prescriber's signature (21 CFR 1311.120/.140): when, with which second factor
    # (`totp`, `recovery_code`, `webauthn`), when that factor was proved, and the SHA-256 of
    # the order's canonical content (backend.plans.signing). None on versions written before
    # orders were signed.
    signed_at: Mapped[datetime | None]
    signature_method: Mapped[str | None] = mapped_column(String(20))
    signature_factor_id: Mapped[uuid.UUID | None]
    factor_proved_at: Mapped[datetime | None]
    content_hash: Mapped[str | None] = mapped_column(String(64))

    plan: Mapped[TreatmentPlan] = relationship(back_populates="versions")
    phases: Mapped[list[PlanPhase]] = relationship(order_by="PlanPhase.ordinal")
    prescriber: Mapped[User] = relationship(viewonly=True)

    @property
    def signature(self) -> PlanVersion | None:
        """Return this version as its signature record, or None if it predates signing."""
        return self if self.signed_at is not None else None

    change_reason = Sealed()
    dose_justification = Sealed()


PLAN_VERSION_PHI = EncryptedColumns(PlanVersion, ("change_reason", "dose_justification"))


class PlanPhase(Base):
    """A phase of a plan version (induction, maintenance, taper) and its frequency limits."""

    __tablename__ = "plan_phase"
    __table_args__ = (UniqueConstraint("version_id", "ordinal"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plan_version.id"), index=True)
    ordinal: Mapped[int]
    name: Mapped[str] = mapped_column(String(60))
    starts_on: Mapped[date]
    dose_ug_per_kg: Mapped[int | None]
    dose_ug: Mapped[int | None]
    min_interval_hours: Mapped[int]
    max_per_7_days: Mapped[int]
    max_per_28_days: Mapped[int]
