"""Sign in, rotate refresh tokens, sign out, and authenticate access tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend import changes
from backend.accounts.models import Organisation, User
from backend.audit import service as audit
from backend.auth import limiter
from backend.auth.caller import Caller
from backend.auth.models import RefreshToken, TokenFamily
from backend.devices.models import Device
from backend.errors import InvalidCredentials, InvalidField, Unauthenticated
from backend.runtime import Runtime

ACCESS_ALGORITHM = "HS256"


@dataclass(frozen=True)
class TokenPair:
    """What a successful login or refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int


def hash_refresh_token(token: str) -> bytes:
    """Return the stored form of a refresh token (256 random bits need no slow hash)."""
    return hashlib.sha256(token.encode()).digest()


def _reused(session: Session, *, now: datetime, caller: Caller) -> None:
    revoke_families(session, now, reason="refresh_reuse", family_id=caller.family_id)
    audit.record(session, now, caller, "auth.refresh_reuse", "token_family", caller.family_id)


def _issue(session: Session, rt: Runtime, now: datetime, user: User,
           family: TokenFamily) -> TokenPair:
    refresh = secrets.token_urlsafe(32)
    session.add(RefreshToken(
        family_id=family.id, token_hash=hash_refresh_token(refresh), issued_at=now,
        expires_at=now + timedelta(seconds=rt.refresh_token_seconds)))
    claims = {
        "sub": str(user.id), "org": str(user.organisation_id), "sid": str(family.id),
        "dev": str(family.device_id) if family.device_id else None,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + rt.access_token_seconds,
        "jti": secrets.token_hex(8),
    }
    access = jwt.encode(claims, rt.keys.token_secret, algorithm=ACCESS_ALGORITHM)
    return TokenPair(access, refresh, rt.access_token_seconds)


def login(session: Session, rt: Runtime, *, org_slug: str, username: str, password: str,
          device_id: uuid.UUID | None, address: str | None) -> TokenPair:
    """Check credentials and limits, and open a token family bound to the device if given."""
    user = check_credentials(session, rt, org_slug=org_slug, username=username,
                             password=password, address=address)
    device = _login_device(session, user, device_id)
    family, _caller = open_family(session, rt, user, device.id if device else None, address)
    return _issue(session, rt, rt.clock.now(), user, family)


def check_credentials(session: Session, rt: Runtime, *, org_slug: str, username: str,
                      password: str, address: str | None) -> User:
    """Return the active user these credentials name, counting a failure against the limits."""
    now = rt.clock.now()
    org = session.scalar(select(Organisation).where(Organisation.slug == org_slug.lower()))
    user = org and session.scalar(select(User).where(
        User.organisation_id == org.id, User.username == username.lower()))
    attempt = limiter.Attempt(limiter.account_key(org_slug, username), address)
    password_hash = user.password_hash if user is not None and user.active else None
    failed = partial(audit.record, now=now, caller=None, action="auth.login_failed",
                     object_type="user", object_id=user.id if user else None,
                     organisation_id=org.id if org else None, address=address,
                     detail={"username": username.lower()})
    if not limiter.verify(session, rt, attempt, password_hash, password, audit=failed):
        raise InvalidCredentials("Wrong organisation, username or password.")
    if rt.passwords.check_needs_rehash(user.password_hash):
        user.password_hash = rt.passwords.hash(password)
    return user


def open_family(session: Session, rt: Runtime, user: User, device_id: uuid.UUID | None,
                address: str | None, *, via: str | None = None) -> tuple[TokenFamily, Caller]:
    """Open a signed-in session (a token family) for `user`, audited as a login."""
    now = rt.clock.now()
    family = TokenFamily(user_id=user.id, device_id=device_id, created_at=now)
    session.add(family)
    session.flush()
    caller = caller_for(user, family, address)
    audit.record(session, now, caller, "auth.login", "user", user.id,
                 detail={"via": via} if via else None)
    return family, caller


def _login_device(session: Session, user: User, device_id: uuid.UUID | None) -> Device | None:
    if device_id is None:
        return None
    device = session.get(Device, device_id)
    if device is None or device.user_id != user.id or device.revoked_at is not None:
        raise InvalidField("device_id", "unknown or revoked device for this user")
    return device


def caller_for(user: User, family: TokenFamily, address: str | None) -> Caller:
    """Return the caller acting through `family`."""
    return Caller(user_id=user.id, organisation_id=user.organisation_id, role=user.role,
                  family_id=family.id, device_id=family.device_id, address=address)


def refresh(session: Session, rt: Runtime, token: str, address: str | None) -> TokenPair:
    """Rotate a refresh token; a token presented twice revokes its whole family."""
    now = rt.clock.now()
    row = session.execute(
        select(RefreshToken, TokenFamily, User)
        .join(TokenFamily, RefreshToken.family_id == TokenFamily.id)
        .join(User, TokenFamily.user_id == User.id)
        .where(RefreshToken.token_hash == hash_refresh_token(token))).one_or_none()
    if row is None:
        raise InvalidCredentials("Unknown refresh token.")
    stored, family, user = row
    if family.revoked_at is not None:
        raise InvalidCredentials("This session has been revoked.")
    # Conditional update: of two concurrent uses of one token, exactly one wins.
    rotated = session.execute(
        update(RefreshToken).where(RefreshToken.id == stored.id, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now).execution_options(synchronize_session=False)).rowcount
    caller = caller_for(user, family, address)
    if rotated == 0:
        # The refusal rolls back; the revocation of the whole family must outlive it.
        changes.keep(session, partial(_reused, now=now, caller=caller))
        raise InvalidCredentials("Refresh token re-used; the session has been revoked.")
    if stored.expires_at <= now or not user.active or _device_revoked(session, family):
        raise InvalidCredentials("Refresh token expired or no longer valid.")
    audit.record(session, now, caller, "auth.refresh", "token_family", family.id)
    return _issue(session, rt, now, user, family)


def _device_revoked(session: Session, family: TokenFamily) -> bool:
    if family.device_id is None:
        return False
    return session.get(Device, family.device_id).revoked_at is not None


def logout(session: Session, rt: Runtime, caller: Caller) -> None:
    """Revoke the caller's token family."""
    now = rt.clock.now()
    revoke_families(session, now, reason="logout", family_id=caller.family_id)
    audit.record(session, now, caller, "auth.logout", "token_family", caller.family_id)


def revoke_families(session: Session, now: datetime, *, reason: str,
                    family_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
                    device_id: uuid.UUID | None = None) -> None:
    """Revoke the open token families that match the one given criterion."""
    query = update(TokenFamily).where(TokenFamily.revoked_at.is_(None))
    if family_id is not None:
        query = query.where(TokenFamily.id == family_id)
    elif user_id is not None:
        query = query.where(TokenFamily.user_id == user_id)
    elif device_id is not None:
        query = query.where(TokenFamily.device_id == device_id)
    else:
        raise ValueError("revoke_families needs one criterion")
    session.execute(query.values(revoked_at=now, revoked_reason=reason)
                    .execution_options(synchronize_session=False))


def authenticate(session: Session, rt: Runtime, token: str, address: str | None) -> Caller:
    """Return the caller of a valid access token whose user, session and device are live."""
    try:
        claims = jwt.decode(token, rt.keys.token_secret, algorithms=[ACCESS_ALGORITHM],
                            options={"verify_exp": False, "require": ["sub", "sid", "exp"]})
        user_id, family_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise Unauthenticated("Invalid access token.") from exc
    # Checked against Vigil's clock, not PyJWT's, so that tests can move time.
    if claims["exp"] <= rt.clock.now().timestamp():
        raise Unauthenticated("Access token expired.")
    row = session.execute(
        select(User, TokenFamily, Device.revoked_at)
        .join(TokenFamily, TokenFamily.user_id == User.id)
        .outerjoin(Device, Device.id == TokenFamily.device_id)
        .where(User.id == user_id, TokenFamily.id == family_id)).one_or_none()
    if row is None:
        raise Unauthenticated("Invalid access token.")
    user, family, device_revoked_at = row
    if not user.active or family.revoked_at is not None or device_revoked_at is not None:
        raise Unauthenticated("This session has been revoked.")
    return caller_for(user, family, address)

