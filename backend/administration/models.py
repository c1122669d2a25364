"""The clinical record of a home session: pre-dose, dose, observations, discharge, outcomes.

Every record is append-only, carries the phone's Ed25519 signature over the exact body it sent
(`signed_body`, stored encrypted as PHI beside the SHA-256 of its canonical bytes), and both the
phone's clock (`occurred_at`) and the server's (`received_at`).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import JSON, ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns
from backend.phi.sealed import Sealed


class SignedRecord:
    """Columns every record from a phone carries."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    nurse_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("device.id"))
    device_signature: Mapped[str] = mapped_column(String(100))
    # What the phone signed, free text and all: PHI, kept as ciphertext; the digest answers
    # whether a retried record is the same one without decrypting it.
    signed_body_enc: Mapped[str] = mapped_column(Text)
    signed_body_sha256: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]

    signed_body = Sealed(as_json=True, digested=True)

    @declared_attr
    def organisation_id(cls) -> Mapped[uuid.UUID]:  # noqa: N805
        return mapped_column(ForeignKey("organisation.id"), index=True)

    @declared_attr
    def visit_id(cls) -> Mapped[uuid.UUID]:  # noqa: N805
        return mapped_column(ForeignKey("visit.id"), index=True)


class Vitals:
    """Vital signs; each may be missing from a given observation."""

    systolic: Mapped[int | None]
    diastolic: Mapped[int | None]
    heart_rate: Mapped[int | None]
    spo2: Mapped[int | None]
    respiratory_rate: Mapped[int | None]
    moaas: Mapped[int | None]
    cadss_items: Mapped[dict | None] = mapped_column(JSON)
    cadss_total: Mapped[int | None]


class PreDose(SignedRecord, Vitals, Base):
    """Vitals, baselines, co-medications, the weight used, and the go/no-go decision."""

    __tablename__ = "pre_dose"
    __table_args__ = (UniqueConstraint("visit_id"),)

    co_medications: Mapped[list] = mapped_column(JSON)
    weight_g: Mapped[int | None]
    weight_measured_at: Mapped[datetime | None]
    decision: Mapped[str] = mapped_column(String(8))
    decision_reason_enc: Mapped[str | None] = mapped_column(Text)
    bp_justification_enc: Mapped[str | None] = mapped_column(Text)

    decision_reason = Sealed()
    bp_justification = Sealed()


PRE_DOSE_PHI = EncryptedColumns(PreDose, ("signed_body", "decision_reason", "bp_justification"))


class DoseRecord(SignedRecord, Base):
    """The dose given, its mg/kg against the plan version, and its custody entry."""

    __tablename__ = "dose_administration"
    __table_args__ = (
        UniqueConstraint("visit_id"),
        # A nurse's doses in a window: a flag's timeline and the peer pages.
        Index("ix_dose_administration_org_nurse_started", "organisation_id", "nurse_id",
              "infusion_started_at"),
    )

    plan_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plan_version.id"))
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drug_product.id"))
    lot: Mapped[str] = mapped_column(String(40))
    expiry: Mapped[date]
    quantity_ug: Mapped[int]
    route: Mapped[str] = mapped_column(String(20))
    infusion_started_at: Mapped[datetime]
    infusion_ended_at: Mapped[datetime]
    weight_g: Mapped[int | None]
    ug_per_kg: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    custody_entry_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("custody_entry.id"))


DOSE_PHI = EncryptedColumns(DoseRecord, ("signed_body",))


class Observation(SignedRecord, Vitals, Base):
    """One timed observation after the dose; instrument totals are Vigil's own sums."""

    __tablename__ = "monitoring_observation"

    bprs_items: Mapped[dict | None] = mapped_column(JSON)
    bprs_total: Mapped[int | None]
    # What the phone claimed the totals were, when that differed from Vigil's sums.
    client_totals: Mapped[dict] = mapped_column(JSON)


OBSERVATION_PHI = EncryptedColumns(Observation, ("signed_body",))


class Discharge(SignedRecord, Vitals, Base):
    """The end of monitoring: state, last vitals, adverse events (free text as ciphertext)."""

    __tablename__ = "discharge"
    __table_args__ = (UniqueConstraint("visit_id"),)

    state: Mapped[str] = mapped_column(String(40))
    adverse_event_category: Mapped[str] = mapped_column(String(40))
    adverse_events_enc: Mapped[str | None] = mapped_column(Text)
    # The REMS form's own lines; null from phones that predate them.
    ready_to_leave_at: Mapped[datetime | None]
    respiratory_depression: Mapped[bool | None]

    adverse_events = Sealed()


DISCHARGE_PHI = EncryptedColumns(Discharge, ("adverse_events", "signed_body"))


class OutcomeScore(SignedRecord, Base):
    """A depression scale score at a session (PHQ-9 or MADRS), totalled by Vigil."""

    __tablename__ = "outcome_score"

    instrument: Mapped[str] = mapped_column(String(10))
    items: Mapped[dict] = mapped_column(JSON)
    total: Mapped[int]


OUTCOME_PHI = EncryptedColumns(OutcomeScore, ("signed_body",))


class QuarantinedEvent(Base):
    """A record from a phone that could not be trusted: kept with its payload and the reason."""

    __tablename__ = "quarantined_event"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       index=True)
    record_type: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str | None] = mapped_column(String(64))
    visit_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("visit.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("device.id"))
    # Whatever the phone sent, PHI included, as ciphertext. The reason is the server's own
    # sentence (an error code and message), which never quotes the record.
    payload_enc: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]

    payload = Sealed(as_json=True)


QUARANTINE_PHI = EncryptedColumns(QuarantinedEvent, ("payload",))
