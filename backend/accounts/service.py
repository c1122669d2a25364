"""Create organisations and users; change roles; deactivate without losing history."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, Role, User
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.auth.service import revoke_families
from backend.errors import Conflict, InvalidField, NotFound
from backend.mfa.policy import Action, require_fresh
from backend.runtime import Runtime
from backend.tenancy import owned

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,149}$")
DEA_NUMBER = re.compile(r"^[ABCDEFGHJKLMPRSTUX][A-Z9][0-9]{7}$")
MIN_PASSWORD_LENGTH = 12


def dea_number_problem(number: str) -> str | None:
    """Return why `number` is not a well-formed DEA registration number, or None."""
    if not DEA_NUMBER.match(number):
        return "must be 2 letters then 7 digits, e.g. FV1234563"
    digits = [int(c) for c in number[2:]]
    checksum = digits[0] + digits[2] + digits[4] + 2 * (digits[1] + digits[3] + digits[5])
    if checksum % 10 != digits[6]:
        return "check digit does not match"
    return None


def create_organisation(session: Session, rt: Runtime, *, slug: str, name: str,
                        dea_registration: str, timezone: str) -> Organisation:
    """Register an organisation after checking its slug, DEA number and timezone."""
    slug = slug.lower()
    if not SLUG.match(slug):
        raise InvalidField("slug", "lowercase letters, digits and inner hyphens, ≤ 63 chars")
    if problem := dea_number_problem(dea_registration.upper()):
        raise InvalidField("dea_registration", problem)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidField("timezone", "not an IANA timezone name") from exc
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)):
        raise Conflict(f"Organisation {slug!r} already exists.", {"slug": slug})
    now = rt.clock.now()
    org = Organisation(slug=slug, name=name, dea_registration=dea_registration.upper(),
                       timezone=timezone, created_at=now, mfa_policy_at=now)
    session.add(org)
    session.flush()
    audit.record(session, org.created_at, None, "organisation.create", "organisation", org.id,
                 organisation_id=org.id, detail={"slug": slug})
    return org


def organisation_by_slug(session: Session, slug: str) -> Organisation:
    """Return the organisation named `slug`."""
    org = session.scalar(select(Organisation).where(Organisation.slug == slug.lower()))
    if org is None:
        raise NotFound(f"No organisation {slug!r}.")
    return org


def organisation_zone(session: Session, organisation_id: uuid.UUID) -> ZoneInfo:
    """Return the organisation's timezone, in which its days and phases are counted."""
    return ZoneInfo(session.get(Organisation, organisation_id).timezone)


def check_password(password: str) -> None:
    """Refuse passwords too short to resist guessing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidField("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")


def create_user(session: Session, rt: Runtime, caller: Caller | None, *,
                organisation_id: uuid.UUID, username: str, display_name: str, role: Role,
                password: str, phone: str | None = None, email: str | None = None) -> User:
    """Add a user to an organisation with an argon2id-hashed password."""
    username = username.lower()
    if not USERNAME.match(username):
        raise InvalidField("username", "letters, digits and . _ @ -, starting alphanumeric")
    check_password(password)
    taken = session.scalar(select(User.id).where(
        User.organisation_id == organisation_id, User.username == username))
    if taken:
        raise Conflict(f"Username {username!r} is taken.", {"username": username})
    now = rt.clock.now()
    user = User(organisation_id=organisation_id, username=username, display_name=display_name,
                role=role, password_hash=rt.passwords.hash(password), active=True,
                created_at=now, updated_at=now, phone=phone or None, email=email or None)
    session.add(user)
    session.flush()
    audit.record(session, now, caller, "user.create", "user", user.id,
                 organisation_id=organisation_id, detail={"role": role.value})
    return user


def list_users(session: Session, caller: Caller) -> list[User]:
    """Return the users of the caller's organisation."""
    return list(session.scalars(select(User).where(
        User.organisation_id == caller.organisation_id).order_by(User.username)))


def list_nurses(session: Session, caller: Caller, *, limit: int, offset: int = 0) -> list[User]:
    """Return a page of the nurses of the caller's organisation, by name."""
    return list(session.scalars(select(User).where(
        User.organisation_id == caller.organisation_id, User.role == Role.NURSE)
        .order_by(User.display_name, User.username).limit(limit).offset(offset)))


# Built once: every app screen asks for it.
_ME = (select(User, Organisation).join(Organisation, Organisation.id == User.organisation_id)
       .where(User.id == bindparam("user_id")))


def me(session: Session, caller: Caller) -> tuple[User, Organisation]:
    """Return the caller's user and organisation, read together."""
    return session.execute(_ME, {"user_id": caller.user_id}).one()


def get_user(session: Session, caller: Caller, user_id: uuid.UUID) -> User:
    """Return a user of the caller's organisation, or raise NotFound."""
    return owned(session, caller, User, user_id, what="user")


@dataclass(frozen=True)
class UserChange:
    """The fields an admin may change on a user; None leaves a field as it is."""

    role: Role | None = None
    active: bool | None = None
    display_name: str | None = None
    # Contacts: an empty string clears one.
    phone: str | None = None
    email: str | None = None


def update_user(session: Session, rt: Runtime, caller: Caller, user_id: uuid.UUID,
                change: UserChange) -> User:
    """Apply an admin's change; deactivation revokes the user's sessions at once."""
    user = get_user(session, caller, user_id)
    if user.id == caller.user_id and (change.active is False or change.role not in
                                      (None, user.role)):
        raise Conflict("Admins cannot deactivate or demote themselves.")
    now = rt.clock.now()
    before = _user_facts(user)
    if change.role is not None:
        user.role = change.role
    if change.display_name is not None:
        user.display_name = change.display_name
    for contact in ("phone", "email"):
        if (value := getattr(change, contact)) is not None:
            setattr(user, contact, value or None)
    if change.active is not None and change.active != user.active:
        user.active = change.active
        user.deactivated_at = None if change.active else now
    if change.active is False or change.role not in (None, before["role"]):
        # A role change must not keep old privileges alive in outstanding refresh tokens.
        revoke_families(session, now, reason="user_changed", user_id=user.id)
    user.updated_at = now
    after = _user_facts(user)
    audit.record(session, now, caller, "user.update", "user", user.id,
                 detail={k: {"from": before[k], "to": after[k]}
                         for k in before if before[k] != after[k]})
    return user


def _user_facts(user: User) -> dict[str, object]:
    return {"role": user.role.value, "active": user.active, "display_name": user.display_name,
            "phone": user.phone, "email": user.email}


# What an admin may change of the registrant's details: the name and address DEA records print.
REGISTRANT_FIELDS = ("name", "dea_registration", "dea_expires_on", "address_line", "city",
                     "state", "postal_code", "phone")


def update_registrant(session: Session, rt: Runtime, caller: Caller,
                      change: dict[str, Any]) -> Organisation:
    """Change the registrant's name, address or registration with a fresh second factor."""
    # Every DEA record prints these: a change is as sensitive as the records it rewrites.
    require_fresh(session, rt, caller, Action.REGISTRANT)
    organisation = session.get(Organisation, caller.organisation_id)
    if number := change.get("dea_registration"):
        change["dea_registration"] = number = number.upper()
        if problem := dea_number_problem(number):
            raise InvalidField("dea_registration", problem)
    before = {name: getattr(organisation, name) for name in REGISTRANT_FIELDS}
    for name in REGISTRANT_FIELDS:
        if name in change:
            # Optional parts are cleared with an empty string or null; the name and number
            # are required by the schema and never blank.
            setattr(organisation, name, change[name] or None)
    session.flush()
    changed = {name: {"from": _plain(before[name]), "to": _plain(getattr(organisation, name))}
               for name in REGISTRANT_FIELDS if before[name] != getattr(organisation, name)}
    audit.record(session, rt.clock.now(), caller, "organisation.registrant", "organisation",
                 organisation.id, detail=changed)
    return organisation


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value
