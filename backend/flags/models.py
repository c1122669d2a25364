"""Flags: safeguard findings stored for compliance review, and each flag's history."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db import Base, new_id
from backend.phi.registry import EncryptedColumns
from backend.phi.sealed import Sealed


class FlagStatus(StrEnum):
    """Where a flag is in review: open, then in review once assigned, then resolved."""

    OPEN = "open"
    IN_REVIEW = "in_review"
    RESOLVED = "resolved"


class Resolution(StrEnum):
    """A reviewer's verdict on a flag."""

    # The rule saw a real event that needed a look, and it had a clinical or practical reason.
    JUSTIFIED = "justified"
    CONFIRMED_MISUSE = "confirmed_misuse"
    CONFIRMED_DIVERSION = "confirmed_diversion"
    # The rule was wrong: nothing happened that it should have flagged.
    FALSE_POSITIVE = "false_positive"


class FlagAction(StrEnum):
    """What happened to a flag, as its history records it."""

    RAISED = "raised"
    RE_RAISED = "re_raised"
    ASSIGNED = "assigned"
    NOTE = "note"
    STATUS_CHANGED = "status_changed"
    RESOLVED = "resolved"
    REOPENED = "reopened"


class Flag(Base):
    """One finding per dedup key: a repeat updates its evidence instead of duplicating it."""

    __tablename__ = "flag"
    __table_args__ = (
        UniqueConstraint("organisation_id", "dedup_key"),
        # The review queue: an organisation's flags by status and severity, oldest first.
        Index("ix_flag_queue", "organisation_id", "status", "severity", "first_seen_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    rule_id: Mapped[str] = mapped_column(String(80))
    rule_version: Mapped[int]
    severity: Mapped[str] = mapped_column(String(10))
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(64))
    # The nurse and patient the finding concerns, when it names them, so the queue can filter.
    nurse_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patient.id"), index=True)
    # A finding quotes what it found (a nurse's reason, a count's explanation): PHI ciphertext.
    summary_enc: Mapped[str] = mapped_column(Text)
    evidence_enc: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(64))
    shadow: Mapped[bool]
    status: Mapped[str] = mapped_column(String(30))
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    resolution: Mapped[str | None] = mapped_column(String(30))
    resolved_at: Mapped[datetime | None]
    resolved_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"))
    # Distinct events of the case (doses, check-ins, refusals): a re-check of one counts nothing.
    occurrences: Mapped[int]
    # The occurrence whose evidence the flag shows: the latest event of the case.
    occurrence_key: Mapped[str | None] = mapped_column(String(64))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    events: Mapped[list[FlagEvent]] = relationship(order_by="FlagEvent.seq")
    # Only the flag's page reads these; the queue reads the count.
    occurrence_rows: Mapped[list[FlagOccurrence]] = relationship(
        order_by="FlagOccurrence.first_seen_at", lazy="select",
        viewonly=True)

    summary = Sealed()
    evidence = Sealed(as_json=True)


class FlagEvent(Base):
    """One step in a flag's history; never updated or deleted."""

    __tablename__ = "flag_event"
    __table_args__ = (UniqueConstraint("flag_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    flag_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flag.id"))
    # Events of one request share a timestamp; the sequence number keeps their order.
    seq: Mapped[int]
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    at: Mapped[datetime]
    # None when the system acted: a rule raised or re-raised the flag.
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"))
    action: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(30))
    to_status: Mapped[str | None] = mapped_column(String(30))
    # A reviewer's note, and the findings a step recorded: PHI ciphertext.
    note_enc: Mapped[str | None] = mapped_column(Text)
    detail_enc: Mapped[str] = mapped_column(Text)

    note = Sealed()
    detail = Sealed(as_json=True)


class FlagOccurrence(Base):
    """One distinct event of a flag's case, counted once however often it is found again."""

    __tablename__ = "flag_occurrence"
    __table_args__ = (UniqueConstraint("flag_id", "occurrence_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    flag_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flag.id"))
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    # The event's own id as the rule names it (a dose, a check-in), or its digest when longer.
    occurrence_key: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(10))
    first_seen_at: Mapped[datetime]


FLAG_PHI = EncryptedColumns(Flag, ("summary", "evidence"))
FLAG_EVENT_PHI = EncryptedColumns(FlagEvent, ("note", "detail"))
