"""Console sessions: sign in with the API's accounts, lockout and second factor, resume, step up,
time out, sign out.

A password that the API's login would answer with a challenge (a factor due, or its enrolment
past the grace) opens no console session either: the sign-in page keeps the challenge token in
the signed cookie and asks for the second step, and only its answer opens the session, which
records the factor proved as an API session does.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import DESK_ROLES, Organisation, User
from backend.audit import service as audit
from backend.auth import service as auth
from backend.auth.caller import Caller
from backend.auth.models import TokenFamily
from backend.console.models import ConsoleSession
from backend.errors import Forbidden
from backend.mfa import policy, webauthn
from backend.mfa import service as mfa
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


@dataclass(frozen=True)
class Opened:
    """A console session opened: its cookie's token, its caller, and codes issued on the way."""

    token: str
    caller: Caller
    # Ten recovery codes when the sign-in enrolled the user's first factor: shown this once.
    recovery_codes: list[str] | None = None


@dataclass(frozen=True)
class FactorStep:
    """A sign-in's second step: the ways to prove a factor, or the enrolment to confirm."""

    methods: list[str]
    enrolment: mfa.Enrolment | None = None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def sign_in(session: Session, rt: Runtime, *, org_slug: str, username: str, password: str,
            address: str | None) -> Opened | auth.Challenge:
    """Check credentials as API login does; open a session, or challenge for a due factor."""
    user = auth.check_credentials(session, rt, org_slug=org_slug, username=username,
                                  password=password, address=address)
    if user.role not in DESK_ROLES:
        raise Forbidden("Nurses sign in on the phone app; the console is for desk roles.",
                        {"role": user.role})
    due = auth.factor_due(session, rt, user)
    if due in (auth.PROVE, auth.ENROL):
        return auth.challenge(session, rt, user, None, address,
                              enrolment_required=due == auth.ENROL)
    return _open(session, rt, user, address)


def factor_step(session: Session, rt: Runtime, challenge_token: str,
                address: str | None) -> FactorStep:
    """Return what a challenged sign-in's second step asks: a factor, or a TOTP enrolment."""
    user, _device, pending = auth.challenged(session, rt, challenge_token, address)
    if policy.enrolled(session, user.id):
        return FactorStep(mfa.methods(session, user.id))
    # Shown again while its code is awaited: the user may have scanned it already.
    return FactorStep([mfa.BY_TOTP], mfa.pending_totp(session, rt, pending)
                      or auth.begin_enrolment(session, rt, challenge_token, label=None,
                                              address=address))


def complete_sign_in(session: Session, rt: Runtime, challenge_token: str, proved: auth.Proved,
                     address: str | None) -> Opened:
    """Complete a challenged sign-in with its factor (or enrolment); open its session."""
    answered = auth.answer(session, rt, challenge_token, proved, address)
    return _open(session, rt, answered.user, address, proof=answered.proof,
                 recovery_codes=answered.recovery_codes)


def _open(session: Session, rt: Runtime, user: User, address: str | None, *,
          proof: mfa.Proof | None = None, recovery_codes: list[str] | None = None) -> Opened:
    family, caller = auth.open_family(session, rt, user, None, address, via="console",
                                      proof=proof)
    token = secrets.token_urlsafe(32)
    now = rt.clock.now()
    session.add(ConsoleSession(family_id=family.id, token_hash=_hash(token), created_at=now,
                               last_seen_at=now))
    return Opened(token, caller, recovery_codes)


def sign_in_key_options(session: Session, rt: Runtime, challenge_token: str,
                        address: str | None, origin: str) -> dict:
    """Return a security key's assertion options for a challenged sign-in's second step."""
    user, _device, _pending = auth.challenged(session, rt, challenge_token, address)
    return webauthn.assertion_options(session, rt, user, purpose="sign_in", origin=origin)


def step_up_key_options(session: Session, rt: Runtime, caller: Caller, origin: str) -> dict:
    """Return a security key's assertion options for the caller's step-up."""
    return webauthn.assertion_options(session, rt, session.get(User, caller.user_id),
                                      purpose="step_up", origin=origin)


def step_up(session: Session, rt: Runtime, caller: Caller, proved: auth.Proved) -> datetime:
    """Prove a factor again for the caller's session; return until when it stays fresh."""
    used = auth.step_up(session, rt, caller, proved)
    window = session.get(Organisation, caller.organisation_id).step_up_seconds
    return used.proved_at + timedelta(seconds=window)


def factor_due(session: Session, rt: Runtime, caller: Caller) -> datetime | str | None:
    """Return when the caller must have a second factor, or `ENROL` if now; None if never."""
    due = auth.factor_due(session, rt, session.get(User, caller.user_id))
    return None if due == auth.PROVE else due


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
