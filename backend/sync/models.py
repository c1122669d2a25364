"""The sync change sequence, the per-record change index, revocations, and the push log."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class SyncCounter(Base):
    """An organisation's change sequence; its row lock orders commits that change synced rows.

    `horizon` is the highest number whose tombstones have been pruned: a phone whose cursor is
    older cannot learn every deletion since, and must reset.
    """

    __tablename__ = "sync_counter"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    horizon: Mapped[int] = mapped_column(BigInteger)


class SyncRow(Base):
    """The last change number of one synced record, who may see it, and whether it is gone.

    `patient_id` scopes a row to the patient's assigned nurses; `nurse_id` and `peer_nurse_id`
    to a nurse's own stock; a row with neither is for the whole organisation. `origin_device_id`
    is the phone that pushed the record: it holds the record already, so its pulls leave it out
    until the server changes it, and then send it as updated.
    """

    __tablename__ = "sync_row"
    __table_args__ = (
        Index("ix_sync_row_org_seq", "organisation_id", "seq"),
        Index("ix_sync_row_patient", "patient_id"),
    )

    table_name: Mapped[str] = mapped_column(String(30), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    created_seq: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool]
    patient_id: Mapped[uuid.UUID | None]
    nurse_id: Mapped[uuid.UUID | None]
    peer_nurse_id: Mapped[uuid.UUID | None]
    changed_at: Mapped[datetime]
    # No foreign key, as for the scoping columns: the push inserts these rows by the hundred.
    origin_device_id: Mapped[uuid.UUID | None]


class SyncDevice(Base):
    """When a phone last pulled from zero: what it pushed before then, it no longer holds."""

    __tablename__ = "sync_device"

    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("device.id"), primary_key=True)
    first_pull_seq: Mapped[int] = mapped_column(BigInteger)


class SyncRevocation(Base):
    """A nurse lost access to a patient: her next pull deletes the patient's rows."""

    __tablename__ = "sync_revocation"
    __table_args__ = (Index("ix_sync_revocation_nurse_seq", "nurse_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    nurse_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patient.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime]


class SyncPush(Base):
    """One push: who sent it from which phone, its idempotency key, body hash and answer."""

    __tablename__ = "sync_push"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("device.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))
    last_pulled_at: Mapped[int] = mapped_column(BigInteger)
    schema_version: Mapped[int]
    state: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    response_status: Mapped[int | None]
    response_body: Mapped[dict | None] = mapped_column(JSON)
    summary: Mapped[dict | None] = mapped_column(JSON)


class PendingCheck(Base):
    """A visit whose session records came by sync and await the safeguards' judgement."""

    __tablename__ = "sync_pending_check"

    visit_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("visit.id"), primary_key=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"))
    queued_at: Mapped[datetime]
