"""Console sessions: sign in with the API's accounts and lockout, resume, time out, sign out."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import DESK_ROLES, User
from backend.audit import service as audit
from backend.auth import service as auth
from backend.auth.caller import Caller
from backend.auth.models import TokenFamily
from backend.console.models import ConsoleSession
from backend.errors import Forbidden
from backend.runtime import Runtime


@dataclass(frozen=True)
class Limits:
    """How long a console session may stay idle, and how long it may last at most."""

    idle: timedelta
    lifetime: timedelta


@dataclass(frozen=True)
class Resumed:
    """What a request's cookie resumed: the caller, or why the session ended."""

    caller: Caller | None
    ended: str | None = None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def sign_in(session: Session, rt: Runtime, *, org_slug: str, username: str, password: str,
            address: str | None) -> tuple[str, Caller]:
    """Check credentials as API login does; return the new session's cookie token and caller."""
    user = auth.check_credentials(session, rt, org_slug=org_slug, username=username,
                                  password=password, address=address)
    if user.role not in DESK_ROLES:
        raise Forbidden("Nurses sign in on the phone app; the console is for desk roles.",
                        {"role": user.role})
    family, caller = auth.open_family(session, rt, user, None, address, via="console")
    token = secrets.token_urlsafe(32)
    now = rt.clock.now()
    session.add(ConsoleSession(family_id=family.id, token_hash=_hash(token), created_at=now,
                               last_seen_at=now))
    return token, caller


def resume(session: Session, rt: Runtime, token: str, address: str | None, limits: Limits, *,
           touch: bool = True) -> Resumed:
    """Return the caller of a live session, ending one idle or too old; `touch` marks activity."""
    row = session.execute(
        select(ConsoleSession, TokenFamily, User)
        .join(TokenFamily, TokenFamily.id == ConsoleSession.family_id)
        .join(User, User.id == TokenFamily.user_id)
        .where(ConsoleSession.token_hash == _hash(token))).one_or_none()
    if row is None:
        return Resumed(None)
    console, family, user = row
    if family.revoked_at is not None or not user.active or user.role not in DESK_ROLES:
        return Resumed(None, "revoked")
    caller = auth.caller_for(user, family, address)
    now = rt.clock.now()
    ended = ("idle" if now - console.last_seen_at >= limits.idle
             else "expired" if now - console.created_at >= limits.lifetime else None)
    if ended:
        auth.revoke_families(session, now, reason=ended, family_id=family.id)
        audit.record(session, now, caller, f"auth.console_{ended}", "token_family", family.id)
        return Resumed(None, ended)
    if touch:
        console.last_seen_at = now
    return Resumed(caller)


def sign_out(session: Session, rt: Runtime, caller: Caller) -> None:
    """End the caller's console session, as API logout does."""
    auth.logout(session, rt, caller)
