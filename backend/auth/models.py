"""Sessions (refresh-token families), refresh tokens and failed-password records."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class TokenFamily(Base):
    """One sign-in: every refresh token rotated from it shares its fate."""

    __tablename__ = "token_family"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"), index=True)
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("device.id"), index=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    # The last second factor this session's user proved (at sign-in, or a step-up): a
    # sensitive action asks again when it is older than the organisation's window.
    factor_at: Mapped[datetime | None]
    factor_method: Mapped[str | None] = mapped_column(String(20))
    factor_id: Mapped[uuid.UUID | None]


class RefreshToken(Base):
    """A refresh token, kept only as its SHA-256 hash."""

    __tablename__ = "refresh_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    family_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("token_family.id"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]


class LoginFailure(Base):
    """A failed password (a login's or a witness's), counted per account and per address."""

    __tablename__ = "login_failure"
    __table_args__ = (Index("ix_login_failure_scope_key_at", "scope", "key", "occurred_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    scope: Mapped[str] = mapped_column(String(10))
    key: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[datetime]
