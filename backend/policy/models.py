"""An organisation's overrides of the safeguards' default thresholds."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base


class PolicyOverride(Base):
    """An organisation's value for one threshold, replacing the literature's default."""

    __tablename__ = "policy_override"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       primary_key=True)
    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[str] = mapped_column(String(40))
    set_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
    set_at: Mapped[datetime]
