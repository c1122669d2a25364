"""Phones registered by nurses, each with an Ed25519 public key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class Device(Base):
    """A phone whose signatures Vigil trusts until it is revoked."""

    __tablename__ = "device"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    registered_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id"))
    # The phone's clock minus the server's, from its last sync's X-Device-Time header.
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)
    clock_reported_at: Mapped[datetime | None]
