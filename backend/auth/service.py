"""Sign in (with a second factor where one is due), step up, rotate tokens, sign out.

Where the user's role needs a second factor (backend.mfa.policy) and they have one, or their
grace to enrol has run out, a correct password answers with a challenge instead of tokens: a
short-lived signed token (`CHALLENGE_SECONDS`) that names the user and device, and that a
second call completes with a code, a recovery code or a security key's assertion. A user past
the grace with no factor enrols one with the challenge, and the code that confirms it signs
them in. The session keeps the factor and when it was proved; a sensitive action asks again
(a step-up) when it is older than the organisation's window. Refresh keeps the session and its
factor's age.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import jwt
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from backend import changes
from backend.accounts.models import Organisation, User
from backend.audit import service as audit
from backend.auth import limiter
from backend.auth.caller import Caller, FactorUse
from backend.auth.models import RefreshToken, TokenFamily
from backend.devices.models import Device
from backend.errors import Conflict, InvalidCredentials, InvalidField, Unauthenticated
from backend.mfa import policy, webauthn
from backend.mfa import service as mfa
from backend.runtime import Runtime

ACCESS_ALGORITHM = "HS256"
# A challenge token is an access token for nothing but its second call: another audience.
CHALLENGE_AUDIENCE = "vigil:second-factor"
CHALLENGE_SECONDS = 300
# What a sign-in needs besides the password (`factor_due`): a factor proved, or one enrolled.
ENROL, PROVE = "enrol", "prove"


@dataclass(frozen=True)
class TokenPair:
    """What a successful login or refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Challenge:
    """A password accepted; a second factor (or its enrolment) is due before tokens."""

    challenge_token: str
    challenge_expires_in: int
    methods: list[str]
    enrolment_required: bool
    mfa_required: bool = True


@dataclass(frozen=True)
class SignedIn:
    """Tokens; in the grace, when a factor falls due; after an enrolment, its recovery codes."""

    access_token: str
    refresh_token: str
    expires_in: int
    factor_due_at: datetime | None = None
    recovery_codes: list[str] | None = None
    mfa_required: bool = False


@dataclass(frozen=True)
class Proved:
    """A second factor proved by a code or a security key's assertion."""

    code: str | None = None
    assertion: dict | None = None
    # The origin the assertion was made at (backend.mfa.webauthn.relying_party).
    origin: str | None = None


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
          device_id: uuid.UUID | None, address: str | None) -> SignedIn | Challenge:
    """Check credentials and limits; sign in, or challenge for the second factor that is due."""
    user = check_credentials(session, rt, org_slug=org_slug, username=username,
                             password=password, address=address)
    device = _login_device(session, user, device_id)
    device_id = device.id if device else None
    due = factor_due(session, rt, user)
    if due is None or isinstance(due, datetime):
        family, _caller = open_family(session, rt, user, device_id, address)
        pair = _issue(session, rt, rt.clock.now(), user, family)
        return SignedIn(pair.access_token, pair.refresh_token, pair.expires_in, factor_due_at=due)
    return challenge(session, rt, user, device_id, address, enrolment_required=due == ENROL)


def factor_due(session: Session, rt: Runtime, user: User) -> datetime | str | None:
    """Return what a sign-in needs: None, the grace's end (not yet), `PROVE` or `ENROL`."""
    organisation = session.get(Organisation, user.organisation_id)
    if not policy.needs_factor(organisation, user):
        return None
    if policy.enrolled(session, user.id):
        return PROVE
    due = policy.due_at(organisation, user)
    return ENROL if rt.clock.now() >= due else due


def challenge(session: Session, rt: Runtime, user: User, device_id: uuid.UUID | None,
              address: str | None, *, enrolment_required: bool) -> Challenge:
    """Return a challenge token for `user`'s second call, audited."""
    now = rt.clock.now()
    claims = {"sub": str(user.id), "aud": CHALLENGE_AUDIENCE,
              "dev": str(device_id) if device_id else None, "iat": int(now.timestamp()),
              "exp": int(now.timestamp()) + CHALLENGE_SECONDS, "jti": secrets.token_hex(8)}
    token = jwt.encode(claims, rt.keys.token_secret, algorithm=ACCESS_ALGORITHM)
    audit.record(session, now, _unsigned(user, address), "auth.mfa_challenge", "user", user.id,
                 detail={"enrolment_required": enrolment_required})
    methods = ["totp"] if enrolment_required else mfa.methods(session, user.id)
    return Challenge(token, CHALLENGE_SECONDS, methods, enrolment_required)


def _unsigned(user: User, address: str | None) -> Caller:
    # The user between password and factor: known, but with no session yet.
    return Caller(user_id=user.id, organisation_id=user.organisation_id, role=user.role,
                  family_id=None, device_id=None, address=address)


def challenged(session: Session, rt: Runtime, token: str,
               address: str | None) -> tuple[User, uuid.UUID | None, Caller]:
    """Return the user, device and pre-session caller a live challenge token names."""
    try:
        claims = jwt.decode(token, rt.keys.token_secret, algorithms=[ACCESS_ALGORITHM],
                            audience=CHALLENGE_AUDIENCE,
                            options={"verify_exp": False, "require": ["sub", "exp", "aud"]})
        user_id = uuid.UUID(claims["sub"])
        device_id = uuid.UUID(claims["dev"]) if claims.get("dev") else None
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise InvalidCredentials("Invalid challenge token; sign in again.") from exc
    if claims["exp"] <= rt.clock.now().timestamp():
        raise InvalidCredentials("The challenge has expired; sign in again.")
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise InvalidCredentials("Invalid challenge token; sign in again.")
    return user, device_id, _unsigned(user, address)


def begin_enrolment(session: Session, rt: Runtime, token: str, *, label: str | None,
                    address: str | None) -> mfa.Enrolment:
    """Begin the TOTP enrolment that a challenge past the grace asks for."""
    user, _device, caller = challenged(session, rt, token, address)
    if policy.enrolled(session, user.id):
        raise Conflict("You already have a second factor: sign in with it.")
    return mfa.begin_totp(session, rt, caller, label=label, code=None)


def complete(session: Session, rt: Runtime, token: str, proved: Proved,
             address: str | None) -> SignedIn:
    """Complete a challenged sign-in with a factor (or confirm the enrolment it asked for)."""
    answered = answer(session, rt, token, proved, address)
    device = _login_device(session, answered.user, answered.device_id)
    family, _caller = open_family(session, rt, answered.user, device.id if device else None,
                                  address, proof=answered.proof)
    pair = _issue(session, rt, rt.clock.now(), answered.user, family)
    return SignedIn(pair.access_token, pair.refresh_token, pair.expires_in,
                    recovery_codes=answered.recovery_codes)


@dataclass(frozen=True)
class Answered:
    """A challenge answered: its user and device, the factor proved, any recovery codes issued."""

    user: User
    device_id: uuid.UUID | None
    proof: mfa.Proof
    recovery_codes: list[str] | None = None


def answer(session: Session, rt: Runtime, token: str, proved: Proved,
           address: str | None) -> Answered:
    """Check the factor a live challenge asks for, or confirm the enrolment it asked for.

    The API's `complete` and the console's sign-in open their own kind of session from it.
    """
    user, device_id, caller = challenged(session, rt, token, address)
    if policy.enrolled(session, user.id):
        return Answered(user, device_id, prove(session, rt, caller, user, proved,
                                                purpose="sign_in"))
    if proved.code is None:
        raise InvalidField("code", "the code from the authenticator you are enrolling")
    confirmed = mfa.confirm_pending(session, rt, caller, proved.code)
    return Answered(user, device_id, mfa.Proof(mfa.BY_TOTP, confirmed.factor.id),
                    confirmed.recovery_codes)


def prove(session: Session, rt: Runtime, caller: Caller, user: User, proved: Proved, *,
          purpose: str) -> mfa.Proof:
    """Check a code or a security key's assertion for `user`."""
    if (proved.code is None) == (proved.assertion is None):
        raise InvalidField("code", "give either a code or a security key's assertion")
    if proved.code is not None:
        return mfa.verify(session, rt, caller, user, proved.code, purpose=purpose)
    return webauthn.verify_assertion(session, rt, caller, user, proved.assertion,
                                     purpose=purpose, origin=proved.origin)


def step_up(session: Session, rt: Runtime, caller: Caller, proved: Proved) -> FactorUse:
    """Prove a second factor again for the caller's session: sensitive actions need it fresh."""
    user = session.get(User, caller.user_id)
    proof = prove(session, rt, caller, user, proved, purpose="step_up")
    now = rt.clock.now()
    family = session.get(TokenFamily, caller.family_id)
    family.factor_at, family.factor_method, family.factor_id = now, proof.method, proof.factor_id
    audit.record(session, now, caller, "auth.step_up", "token_family", family.id,
                 detail={"factor": proof.method})
    return FactorUse(proof.method, proof.factor_id, now)


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
                address: str | None, *, via: str | None = None,
                proof: mfa.Proof | None = None) -> tuple[TokenFamily, Caller]:
    """Open a signed-in session (a token family) for `user`, audited as a login."""
    now = rt.clock.now()
    family = TokenFamily(user_id=user.id, device_id=device_id, created_at=now)
    if proof is not None:
        family.factor_at, family.factor_method, family.factor_id = (now, proof.method,
                                                                    proof.factor_id)
    session.add(family)
    session.flush()
    caller = caller_for(user, family, address)
    detail = {key: value for key, value in (("via", via),
                                            ("factor", proof and proof.method)) if value}
    audit.record(session, now, caller, "auth.login", "user", user.id, detail=detail or None)
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
    factor = (FactorUse(family.factor_method, family.factor_id, family.factor_at)
              if family.factor_at is not None else None)
    return Caller(user_id=user.id, organisation_id=user.organisation_id, role=user.role,
                  family_id=family.id, device_id=family.device_id, address=address,
                  factor=factor)


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
        user_id, family_id, expires = _access_claims(token, rt.keys.token_secret)
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise Unauthenticated("Invalid access token.") from exc
    # Checked against Vigil's clock, not PyJWT's, so that tests can move time.
    if expires <= rt.clock.now().timestamp():
        raise Unauthenticated("Access token expired.")
    # Read on every request, so that a revocation holds from the next one: one round trip, and
    # only the columns a caller is made of (no entities to build, no PHI to decrypt).
    row = session.execute(_LIVE_CALLER, {"user_id": user_id, "family_id": family_id}).one_or_none()
    if row is None:
        raise Unauthenticated("Invalid access token.")
    if not row.active or row.revoked_at is not None or row.device_revoked_at is not None:
        raise Unauthenticated("This session has been revoked.")
    factor = (FactorUse(row.factor_method, row.factor_id, row.factor_at)
              if row.factor_at is not None else None)
    return Caller(user_id=user_id, organisation_id=row.organisation_id, role=row.role,
                  family_id=family_id, device_id=row.device_id, address=address, factor=factor)


# A phone sends one token for its whole life (15 minutes): its signature and claims are checked
# once per process, not on every request. Only what the token itself says is kept; whether its
# user, session and device are still live is read from the database every time.
@functools.lru_cache(maxsize=4096)
def _access_claims(token: str, secret: bytes) -> tuple[uuid.UUID, uuid.UUID, float]:
    """Return the user, session and expiry that an access token signed with `secret` names."""
    claims = jwt.decode(token, secret, algorithms=[ACCESS_ALGORITHM],
                        options={"verify_exp": False, "require": ["sub", "sid", "exp"]})
    return uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), claims["exp"]


# Built once, not per request, and of the tables rather than the entities: the session then
# runs it as plain SQL, without the ORM's compile and load steps.
_USERS, _FAMILIES, _DEVICES = User.__table__, TokenFamily.__table__, Device.__table__
_LIVE_CALLER = (
    select(_USERS.c.organisation_id, _USERS.c.role, _USERS.c.active, _FAMILIES.c.revoked_at,
           _FAMILIES.c.device_id, _FAMILIES.c.factor_at, _FAMILIES.c.factor_method,
           _FAMILIES.c.factor_id, _DEVICES.c.revoked_at.label("device_revoked_at"))
    .select_from(_USERS.join(_FAMILIES, _FAMILIES.c.user_id == _USERS.c.id)
                 .outerjoin(_DEVICES, _DEVICES.c.id == _FAMILIES.c.device_id))
    .where(_USERS.c.id == bindparam("user_id"), _FAMILIES.c.id == bindparam("family_id")))

