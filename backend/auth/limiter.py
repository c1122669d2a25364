"""The one limit on password checks: a login and a witness's confirmation count alike.

Failed passwords are counted per account and per address over a sliding window (the
runtime's `LoginLimits`). At either maximum a check is refused with 429 `locked_out` before
the password is even read, the right one included, until enough failures leave the window;
a right password clears its account's count.

A second factor's code is checked within the same limits (`verify_code`): a wrong code counts
against the account and the address as a wrong password does, so wrong codes and wrong
passwords share one lockout. A code's failures are kept under a scope of their own, which a
right password does not clear: one who knows the password must not be able to reset the count
of their guesses at the code by signing in again. A right code clears them.

Atomic across workers: a check first locks its counters and holds them until its unit's
transaction ends — on PostgreSQL an advisory lock per account and per address, on SQLite the
database's write lock that every unit takes at BEGIN. A failure is written in that same
transaction (kept by the refusal: `backend.boundary` commits it before letting go of the
connection), so the next check of the same account waits, then counts it: a burst of parallel
guesses has at most the limit evaluated, wherever they land.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend import changes, db
from backend.accounts.models import Organisation, User
from backend.auth.models import LoginFailure
from backend.errors import LockedOut
from backend.runtime import Runtime

ACCOUNT = "account"
ADDRESS = "address"
# A wrong second-factor code: counted under its account's maximum with the wrong passwords.
FACTOR = "factor"
# The scopes of the failures each counter adds up.
COUNTED = {ACCOUNT: (ACCOUNT, FACTOR), ADDRESS: (ADDRESS,)}
# "vglm" read as a 32-bit integer: the advisory-lock space of these counters, apart from the
# scheduler's (a single 64-bit key lives in a space of its own).
LOCK_SPACE = 0x76676C6D


@dataclass(frozen=True)
class Attempt:
    """A password check: the account it counts against, and the address it comes from."""

    account: str
    address: str | None

    @classmethod
    def of(cls, session: Session, user: User, address: str | None) -> Attempt:
        """Return a check of `user`'s password, counted under the key their login uses."""
        slug = session.get(Organisation, user.organisation_id).slug
        return cls(account_key(slug, user.username), address)

    def counters(self, rt: Runtime) -> set[tuple[str, str, int]]:
        """Return the (scope, key, maximum) of each count this check adds to."""
        limits = rt.login_limits
        found = {(ACCOUNT, self.account, limits.max_per_account)}
        if self.address:
            found.add((ADDRESS, self.address, limits.max_per_address))
        return found


def account_key(org_slug: str, username: str) -> str:
    """Return the key under which a user's failed passwords are counted."""
    return f"{org_slug.lower()}:{username.lower()}"


def _lock_key(scope: str, key: str) -> int:
    digest = hashlib.sha256(f"{scope}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def guard(session: Session, rt: Runtime, attempts: Iterable[Attempt]) -> None:
    """Lock the attempts' counters, in one order for every caller; refuse any at its maximum."""
    counters = sorted({counter for attempt in attempts for counter in attempt.counters(rt)})
    for scope, key, _ in counters:
        db.hold_lock(session, LOCK_SPACE, _lock_key(scope, key))
    now = rt.clock.now()
    for scope, key, maximum in counters:
        _refuse_at_maximum(session, rt, now, scope, key, maximum)


def _refuse_at_maximum(session: Session, rt: Runtime, now: datetime, scope: str, key: str,
                       maximum: int) -> None:
    window = timedelta(seconds=rt.login_limits.window_seconds)
    recent = session.scalars(
        select(LoginFailure.occurred_at)
        .where(LoginFailure.scope.in_(COUNTED[scope]), LoginFailure.key == key,
               LoginFailure.occurred_at > now - window)
        .order_by(LoginFailure.occurred_at.desc()).limit(maximum)).all()
    if len(recent) >= maximum:
        # The lock lifts when the maximum-th most recent failure leaves the window.
        retry_after = max(1, int((recent[-1] + window - now).total_seconds()) + 1)
        raise LockedOut("Too many failed passwords or codes for this account or from this "
                        "address; try again later.", retry_after)


def verify(session: Session, rt: Runtime, attempt: Attempt, password_hash: str | None,
           password: str, *, audit: changes.Writer) -> bool:
    """Check `password` within the limits; a wrong one is counted, and `audit` written.

    `password_hash` is None for an unknown or inactive account: a dummy hash is verified
    instead, so that the answer takes as long. The failure is recorded whatever becomes of the
    unit: refused, or caught by a caller that goes on (a quarantined part of a session).
    """
    guard(session, rt, [attempt])
    if _matches(rt, password_hash, password):
        session.execute(delete(LoginFailure).where(
            LoginFailure.scope == ACCOUNT, LoginFailure.key == attempt.account))
        return True
    changes.keep(session, partial(_failed, now=rt.clock.now(), attempt=attempt, audit=audit))
    return False


Accepted = TypeVar("Accepted")


def verify_code(session: Session, rt: Runtime, attempt: Attempt,
                accepts: Callable[[], Accepted | None], *,
                audit: changes.Writer) -> Accepted | None:
    """Check a second-factor code within the limits; a refused one is counted, and `audit` written.

    `accepts` checks the code once the counters are locked, and returns what accepted it, or
    None. Its failure is recorded whatever becomes of the unit, as a wrong password's is.
    """
    guard(session, rt, [attempt])
    accepted = accepts()
    if accepted is not None:
        session.execute(delete(LoginFailure).where(
            LoginFailure.scope == FACTOR, LoginFailure.key == attempt.account))
        return accepted
    changes.keep(session, partial(_failed, now=rt.clock.now(), attempt=attempt, audit=audit,
                                  scope=FACTOR))
    return None


def _matches(rt: Runtime, password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        with contextlib.suppress(VerificationError):
            rt.passwords.verify(rt.dummy_password_hash, password)
        return False
    try:
        return rt.passwords.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _failed(session: Session, *, now: datetime, attempt: Attempt, audit: changes.Writer,
            scope: str = ACCOUNT) -> None:
    session.add(LoginFailure(scope=scope, key=attempt.account, occurred_at=now))
    if attempt.address:
        session.add(LoginFailure(scope=ADDRESS, key=attempt.address, occurred_at=now))
    audit(session)
