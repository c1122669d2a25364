"""Enrol, confirm, check, remove and reset second factors; issue single-use recovery codes.

A TOTP factor (RFC 6238: 6 digits, 30-second steps, SHA-1, as every authenticator app reads an
`otpauth://` URI) is pending from enrolment until a code from the app confirms it, within
`ENROLMENT_SECONDS`. Confirming replaces the user's other TOTP factor (re-enrolment) and issues
`RECOVERY_CODES` fresh recovery codes, shown once. A code is accepted one step either side of
now, and only for a step later than the last one the factor accepted: a code cannot be used
twice. A recovery code is used once.

Every code is checked through the password limiter (`backend.auth.limiter.verify_code`): a
wrong one counts against the account with its wrong passwords, and is audited. Changing one's
factors needs a factor: replacing or removing a confirmed factor, or new recovery codes, take a
current code or a recovery code; a password alone is what a second factor guards against.

Sign-in and step-up (backend.auth.service) check codes through `verify`; who needs a factor
and how fresh is backend.mfa.policy.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import pyotp
import segno
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, User
from backend.audit import service as audit
from backend.auth import limiter
from backend.auth.caller import Caller
from backend.auth.models import TokenFamily
from backend.errors import Conflict, InvalidField, NotFound, VigilError
from backend.mfa.models import FactorKind, RecoveryCode, SecondFactor
from backend.mfa.policy import needs_factor
from backend.runtime import Runtime
from backend.tenancy import owned

# A code one step either side of the server's: an authenticator's clock a little off still works.
VALID_WINDOW = 1
# Long enough to scan the QR code and type a code; a pending factor older than this is void.
ENROLMENT_SECONDS = 600
RECOVERY_CODES = 10
# 16 base32 characters, 80 random bits: too many to guess under the limiter, so a keyed hash
# (not a slow one) is enough to keep them, and it finds a code without trying each hash.
RECOVERY_GROUPS, RECOVERY_GROUP_LENGTH = 4, 4
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TOTP_CODE = re.compile(r"[0-9]{6}")
RECOVERY_CODE = re.compile(f"[{BASE32}]{{{RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH}}}")
RECOVERY_KEY_PURPOSE = b"vigil recovery codes"
DEFAULT_LABEL = "Authenticator app"
# What accepted a code, as a `Proof` names it.
BY_TOTP, BY_RECOVERY_CODE = "totp", "recovery_code"


class InvalidCode(VigilError):
    """A second-factor code is wrong, expired or already used."""

    status = 422
    code = "invalid_code"

    def __init__(self) -> None:
        super().__init__("The code is wrong, expired or already used.",
                         {"fields": {"code": ["wrong, expired or already used"]}})


@dataclass(frozen=True)
class Proof:
    """What accepted a code: a TOTP factor, or one of the user's recovery codes."""

    method: str
    factor_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Enrolment:
    """A pending TOTP factor, and what an authenticator app needs to add it."""

    factor: SecondFactor
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class Confirmed:
    """A confirmed factor and the recovery codes issued with it, shown this once."""

    factor: SecondFactor
    recovery_codes: list[str]


@dataclass(frozen=True)
class Summary:
    """A user's factors, pending and confirmed, and how many recovery codes are left."""

    factors: list[SecondFactor]
    recovery_codes_remaining: int


def factors_of(session: Session, user_id: uuid.UUID, *, confirmed: bool | None = None,
               kind: FactorKind | None = None) -> list[SecondFactor]:
    """Return the user's unremoved factors, oldest first, optionally by state and kind."""
    query = select(SecondFactor).where(SecondFactor.user_id == user_id,
                                       SecondFactor.removed_at.is_(None))
    if confirmed is not None:
        query = query.where(SecondFactor.confirmed_at.is_not(None) if confirmed
                            else SecondFactor.confirmed_at.is_(None))
    if kind is not None:
        query = query.where(SecondFactor.kind == kind)
    return list(session.scalars(query.order_by(SecondFactor.created_at, SecondFactor.id)))


def _remaining_codes(session: Session, user_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)))


def summary(session: Session, caller: Caller) -> Summary:
    """Return the caller's factors and how many unused recovery codes they hold."""
    return Summary(factors_of(session, caller.user_id),
                   _remaining_codes(session, caller.user_id))


def own_factor(session: Session, caller: Caller, factor_id: uuid.UUID) -> SecondFactor:
    """Return one of the caller's own unremoved factors, or raise NotFound."""
    factor = owned(session, caller, SecondFactor, factor_id, what="second factor")
    if factor.user_id != caller.user_id or factor.removed_at is not None:
        raise NotFound("No such second factor.")
    return factor


def remove_factor(factor: SecondFactor, now: datetime, by: uuid.UUID) -> None:
    """Mark a factor removed by `by`, and wipe its secret."""
    factor.removed_at, factor.removed_by_id = now, by
    # A removed factor accepts nothing more: its secret need not be kept.
    factor.secret = None


def qr_svg(uri: str) -> str:
    """Return `uri` as a QR code in SVG, drawn with classes and attributes only (no style)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, nl=False, scale=4,
                                    title="QR code: scan it with an authenticator app")
    return out.getvalue().decode()


def _totp(factor: SecondFactor) -> pyotp.TOTP:
    return pyotp.TOTP(factor.secret)


def begin_totp(session: Session, rt: Runtime, caller: Caller, *, label: str | None,
               code: str | None) -> Enrolment:
    """Start enrolling a TOTP factor; replacing a confirmed one needs a current or recovery code."""
    user = session.get(User, caller.user_id)
    confirmed = factors_of(session, user.id, confirmed=True)
    if confirmed:
        if code is None:
            raise InvalidField("code", "a current code or a recovery code is needed to replace "
                               "your second factor")
        _prove(session, rt, caller, user, code, confirmed, purpose="enrol")
    now = rt.clock.now()
    for pending in factors_of(session, user.id, confirmed=False):
        remove_factor(pending, now, user.id)
    factor = SecondFactor(user_id=user.id, organisation_id=user.organisation_id,
                          kind=FactorKind.TOTP, label=label or DEFAULT_LABEL, created_at=now)
    factor.secret = pyotp.random_base32()
    session.add(factor)
    session.flush()
    audit.record(session, now, caller, "mfa.enrol", "second_factor", factor.id,
                 detail={"kind": factor.kind.value})
    return _enrolment(session, user, factor)


def _enrolment(session: Session, user: User, factor: SecondFactor) -> Enrolment:
    organisation = session.get(Organisation, user.organisation_id)
    uri = _totp(factor).provisioning_uri(name=user.username,
                                         issuer_name=f"Vigil ({organisation.name})")
    return Enrolment(factor, uri, qr_svg(uri))


def pending_totp(session: Session, rt: Runtime, caller: Caller) -> Enrolment | None:
    """Return the caller's TOTP enrolment still awaiting its first code, to show again, or None."""
    pending = factors_of(session, caller.user_id, confirmed=False, kind=FactorKind.TOTP)
    if not pending or (rt.clock.now() - pending[-1].created_at
                       > timedelta(seconds=ENROLMENT_SECONDS)):
        return None
    return _enrolment(session, session.get(User, caller.user_id), pending[-1])


def methods(session: Session, user_id: uuid.UUID) -> list[str]:
    """Return the ways the user can prove a second factor: their kinds, and recovery codes."""
    kinds = sorted({factor.kind.value for factor in factors_of(session, user_id, confirmed=True)})
    return kinds + ([BY_RECOVERY_CODE] if _remaining_codes(session, user_id) else [])


def confirm_pending(session: Session, rt: Runtime, caller: Caller, code: str) -> Confirmed:
    """Confirm the caller's pending TOTP enrolment with a code from it."""
    pending = factors_of(session, caller.user_id, confirmed=False, kind=FactorKind.TOTP)
    if not pending:
        raise Conflict("No enrolment is pending: begin one first.")
    return confirm(session, rt, caller, pending[-1].id, code)


def confirm(session: Session, rt: Runtime, caller: Caller, factor_id: uuid.UUID,
            code: str) -> Confirmed:
    """Confirm a pending factor with a code from it; replace the user's other TOTP factors."""
    factor = own_factor(session, caller, factor_id)
    now = rt.clock.now()
    if factor.confirmed_at is not None:
        raise Conflict("This second factor is already confirmed.")
    if now - factor.created_at > timedelta(seconds=ENROLMENT_SECONDS):
        raise Conflict("This enrolment has expired; begin again.",
                       {"enrolment_seconds": ENROLMENT_SECONDS})
    user = session.get(User, caller.user_id)
    _prove(session, rt, caller, user, code, [factor], purpose="confirm", recovery=False)
    # Conditional: of two confirmations racing, one issues the recovery codes.
    if session.execute(update(SecondFactor).where(
            SecondFactor.id == factor.id, SecondFactor.confirmed_at.is_(None),
            SecondFactor.removed_at.is_(None)).values(confirmed_at=now)).rowcount != 1:
        raise Conflict("This second factor is already confirmed.")
    replaced = [other for other in factors_of(session, user.id, kind=factor.kind)
                if other.id != factor.id]
    for other in replaced:
        remove_factor(other, now, user.id)
    codes = issue_recovery_codes(session, rt, user, now)
    action = "mfa.re_enrol" if any(other.confirmed_at for other in replaced) else "mfa.confirm"
    audit.record(session, now, caller, action, "second_factor", factor.id, detail={
        "kind": factor.kind.value, "replaced": [str(other.id) for other in replaced
                                                if other.confirmed_at is not None]})
    return Confirmed(factor, codes)


def remove(session: Session, rt: Runtime, caller: Caller, factor_id: uuid.UUID,
           code: str) -> None:
    """Remove one of the caller's factors, proved by a current code or a recovery code.

    A pending factor may also be removed with a code from itself.
    """
    factor = own_factor(session, caller, factor_id)
    user = session.get(User, caller.user_id)
    confirmed = factors_of(session, user.id, confirmed=True)
    _prove(session, rt, caller, user, code,
           confirmed if factor.confirmed_at else [factor, *confirmed], purpose="remove")
    now = rt.clock.now()
    remove_factor(factor, now, caller.user_id)
    if factor.confirmed_at and not any(other.id != factor.id for other in confirmed):
        # Recovery codes stand in for a factor: without one they recover nothing.
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record(session, now, caller, "mfa.remove", "second_factor", factor.id,
                 detail={"kind": factor.kind.value, "confirmed": factor.confirmed_at is not None})


def reset(session: Session, rt: Runtime, caller: Caller, user_id: uuid.UUID) -> None:
    """Remove every factor and recovery code of a user of the admin's organisation."""
    user = owned(session, caller, User, user_id, what="user")
    if user.id == caller.user_id:
        raise Conflict("Admins cannot reset their own second factor: another admin can, or "
                       "remove it with a code.")
    now = rt.clock.now()
    factors = factors_of(session, user.id)
    for factor in factors:
        remove_factor(factor, now, caller.user_id)
    codes = session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id)).rowcount
    # A lost device: the user enrols again at the next sign-in, and no session of theirs
    # outlives the factor it was proved with.
    user.factor_due_at = now
    session.execute(update(TokenFamily).where(TokenFamily.user_id == user.id,
                                              TokenFamily.revoked_at.is_(None))
                    .values(revoked_at=now, revoked_reason="factor_reset")
                    .execution_options(synchronize_session=False))
    audit.record(session, now, caller, "mfa.reset", "user", user.id,
                 detail={"factors": [str(factor.id) for factor in factors],
                         "recovery_codes": codes})


def regenerate_recovery_codes(session: Session, rt: Runtime, caller: Caller,
                              code: str) -> list[str]:
    """Replace the caller's recovery codes, proved by a current code or a recovery code."""
    user = session.get(User, caller.user_id)
    confirmed = factors_of(session, user.id, confirmed=True)
    if not confirmed:
        raise Conflict("Recovery codes come with a confirmed second factor: enrol one first.")
    _prove(session, rt, caller, user, code, confirmed, purpose="recovery_codes")
    now = rt.clock.now()
    codes = issue_recovery_codes(session, rt, user, now)
    audit.record(session, now, caller, "mfa.recovery_codes", "user", user.id,
                 detail={"issued": len(codes)})
    return codes


def verify(session: Session, rt: Runtime, caller: Caller, user: User, code: str, *,
           purpose: str) -> Proof:
    """Check a code of one of the user's confirmed factors, or a recovery code, or refuse it."""
    return _prove(session, rt, caller, user, code, factors_of(session, user.id, confirmed=True),
                  purpose=purpose)


def _prove(session: Session, rt: Runtime, caller: Caller, user: User, code: str,
           factors: Sequence[SecondFactor], *, purpose: str, recovery: bool = True) -> Proof:
    now = rt.clock.now()
    failed = partial(audit.record, now=now, caller=caller, action="mfa.code_failed",
                     object_type="user", object_id=user.id, detail={"purpose": purpose})
    proof = limiter.verify_code(
        session, rt, limiter.Attempt.of(session, user, caller.address),
        partial(_accepts, session, rt, user, code, factors, recovery=recovery), audit=failed)
    if proof is None:
        raise InvalidCode()
    if proof.method == BY_RECOVERY_CODE:
        audit.record(session, now, caller, "mfa.recovery_code_used", "user", user.id,
                     detail={"purpose": purpose,
                             "remaining": _remaining_codes(session, user.id)})
    return proof


def _accepts(session: Session, rt: Runtime, user: User, code: str,
             factors: Sequence[SecondFactor], *, recovery: bool) -> Proof | None:
    now = rt.clock.now()
    if TOTP_CODE.fullmatch(code):
        for factor in factors:
            if factor.kind == FactorKind.TOTP and _use_step(session, factor, code, now):
                return Proof(BY_TOTP, factor.id)
        return None
    normalised = code.replace("-", "").upper()
    if recovery and RECOVERY_CODE.fullmatch(normalised):
        return _use_recovery_code(session, rt, user, normalised, now)
    return None


def _use_step(session: Session, factor: SecondFactor, code: str, now: datetime) -> bool:
    try:
        step = _totp(factor).verify_and_get_timecode(code, for_time=now,
                                                     valid_window=VALID_WINDOW)
    except pyotp.OTPVerificationError:
        return False
    # Conditional, so that the same code presented twice at once is accepted once.
    return session.execute(update(SecondFactor).where(
        SecondFactor.id == factor.id, SecondFactor.removed_at.is_(None),
        or_(SecondFactor.last_used_step.is_(None), SecondFactor.last_used_step < step))
        .values(last_used_step=step)).rowcount == 1


def _recovery_hash(rt: Runtime, user_id: uuid.UUID, normalised: str) -> bytes:
    # A key of its own, derived from the token secret, never the secret itself; the user's id
    # in the message keeps two users' equal codes apart.
    key = hmac.new(rt.keys.token_secret, RECOVERY_KEY_PURPOSE, hashlib.sha256).digest()
    return hmac.new(key, f"{user_id}|{normalised}".encode(), hashlib.sha256).digest()


def _use_recovery_code(session: Session, rt: Runtime, user: User, normalised: str,
                       now: datetime) -> Proof | None:
    used = session.execute(update(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None),
        RecoveryCode.code_hash == _recovery_hash(rt, user.id, normalised))
        .values(used_at=now)).rowcount
    return Proof(BY_RECOVERY_CODE) if used == 1 else None


def _new_recovery_code() -> str:
    groups = ("".join(secrets.choice(BASE32) for _ in range(RECOVERY_GROUP_LENGTH))
              for _ in range(RECOVERY_GROUPS))
    return "-".join(groups)


def issue_recovery_codes(session: Session, rt: Runtime, user: User,
                         now: datetime) -> list[str]:
    """Replace the user's recovery codes with fresh ones; return them, shown this once."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    session.add_all(RecoveryCode(user_id=user.id, organisation_id=user.organisation_id,
                                 code_hash=_recovery_hash(rt, user.id, code.replace("-", "")),
                                 created_at=now) for code in codes)
    return codes


def users_without_factor(session: Session, organisation: Organisation) -> list[User]:
    """Return the organisation's active users who need a second factor and have none confirmed.

    Desk users always; nurses too when the organisation's policy asks them for one.
    """
    confirmed = select(SecondFactor.user_id).where(SecondFactor.confirmed_at.is_not(None),
                                                   SecondFactor.removed_at.is_(None))
    return [user for user in session.scalars(select(User).where(
        User.organisation_id == organisation.id, User.active.is_(True),
        User.id.not_in(confirmed)).order_by(User.username)) if needs_factor(organisation, user)]
