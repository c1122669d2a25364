"""An organisation's choice of how each safeguard rule runs."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base


class SafeguardRuleMode(Base):
    """An organisation's mode for one rule (enabled, shadow, disabled), over the rule's own."""

    __tablename__ = "safeguard_rule_mode"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"),
                                                       primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    mode: Mapped[str] = mapped_column(String(10))
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id"))
