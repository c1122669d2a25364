"""Organisations and their users."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, new_id


class Role(StrEnum):
    """The one role each user holds."""

    ADMIN = "admin"
    PRESCRIBER = "prescriber"
    PHARMACIST = "pharmacist"
    NURSE = "nurse"
    COMPLIANCE = "compliance"


# The roles that work at a desk (the console, the API from a browser); a nurse's is her phone.
DESK_ROLES = frozenset({Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER})


class Organisation(Base):
    """A registrant: the home-infusion pharmacy whose DEA registration covers the stock."""

    __tablename__ = "organisation"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    dea_registration: Mapped[str] = mapped_column(String(9))
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    # The second-factor policy (backend.mfa.policy): desk roles always need a factor; nurses
    # too when `mfa_nurses`. A user has `mfa_grace_days` from sign-up, or from the policy's
    # last change, to enrol; a sensitive action needs a factor proved within `step_up_seconds`.
    # Defaults kept by the database, as migration 0015 wrote them.
    mfa_nurses: Mapped[bool] = mapped_column(server_default=false())
    mfa_grace_days: Mapped[int] = mapped_column(server_default="7")
    step_up_seconds: Mapped[int] = mapped_column(server_default="900")
    mfa_policy_at: Mapped[datetime | None]
    # The registrant as its DEA registration names it (21 CFR 1304.04: every record names the
    # registrant): the address and registration expiry printed on each DEA record and form.
    address_line: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str | None] = mapped_column(String(2))
    postal_code: Mapped[str | None] = mapped_column(String(10))
    phone: Mapped[str | None] = mapped_column(String(30))
    dea_expires_on: Mapped[date | None]


class User(Base):
    """A person who signs in; deactivated rather than deleted so their history stays."""

    __tablename__ = "app_user"
    __table_args__ = (UniqueConstraint("organisation_id", "username"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisation.id"), index=True)
    username: Mapped[str] = mapped_column(String(150))
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(Enum(
        Role, native_enum=False, length=20, create_constraint=True, name="role",
        values_callable=lambda roles: [role.value for role in roles]))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deactivated_at: Mapped[datetime | None]
    # Set when an admin resets the user's factors: a factor is due from then, with no grace.
    factor_due_at: Mapped[datetime | None]
    # How the REMS monitoring form and DEA records reach the clinician or witness named.
    phone: Mapped[str | None] = mapped_column(String(30))
    email: Mapped[str | None] = mapped_column(String(254))
