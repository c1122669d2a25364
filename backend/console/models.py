"""A signed-in console session: the server side of the console's cookie."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class ConsoleSession(Base):
    """One browser's sign-in, kept by the SHA-256 of the random id its cookie carries."""

    __tablename__ = "console_session"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The token family the sign-in opened: revoking it (sign-out, idle, an admin's
    # deactivation) ends this session as it ends an API session.
    family_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("token_family.id"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
