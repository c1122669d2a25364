"""The scheduler's lease, its idempotent job runs, and the notification outbox."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class SchedulerLease(Base):
    """Who runs the scheduler now; a lease that lapses unless renewed (the SQLite lock)."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]


class JobRun(Base):
    """One run of one job for one slot; the unique key makes every slot run at most once."""

    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("job", "slot"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    job: Mapped[str] = mapped_column(String(60))
    slot: Mapped[str] = mapped_column(String(40))
    holder: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[dict] = mapped_column(JSON, default=dict)


class Notification(Base):
    """A message waiting in the outbox for a delivery service (delivery is out of scope)."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("dedup_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    recipient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict] = mapped_column(JSON)
    dedup_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
