"""Flags: safeguard findings stored for compliance review."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class Flag(Base):
    """One finding per dedup key: a repeat updates its evidence instead of duplicating it."""

    __tablename__ = "flag"
    __table_args__ = (
        UniqueConstraint("organisation_id", "dedup_key"),
        Index("ix_flag_org_status", "organisation_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    rule_id: Mapped[str] = mapped_column(String(80))
    rule_version: Mapped[int]
    severity: Mapped[str] = mapped_column(String(10))
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict] = mapped_column(JSON)
    dedup_key: Mapped[str] = mapped_column(String(64))
    shadow: Mapped[bool]
    status: Mapped[str] = mapped_column(String(30))
    occurrences: Mapped[int]
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
