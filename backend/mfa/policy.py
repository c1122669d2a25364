"""Who needs a second factor, by when, and how fresh it must be for a sensitive action.

Desk roles (prescribers, pharmacists, compliance officers, admins) always need one; nurses
too where their organisation says so (`Organisation.mfa_nurses`), for signing in on the phone
and registering it. A user has the organisation's grace (`mfa_grace_days`) to enrol, counted
from sign-up or the policy's last change, whichever is later; after an admin's reset the
factor is due at once. Sensitive actions (`Action`) need a factor proved within the
organisation's `step_up_seconds` (default 15 minutes) — at sign-in or by a step-up — whatever
the grace: a password alone never signs an order or destroys stock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from backend.accounts.models import DESK_ROLES, Organisation, Role, User
from backend.auth.caller import Caller
from backend.errors import VigilError
from backend.mfa.models import SecondFactor
from backend.runtime import Runtime

STEP_UP_PATH = "/api/v1/auth/step-up"
# The bounds an organisation may set: a grace of at most a month; a window of 1 to 15 minutes.
MAX_GRACE_DAYS = 30
STEP_UP_SECONDS = (60, 900)


class Action(StrEnum):
    """A sensitive action: it needs a second factor proved within the step-up window."""

    SIGN_PLAN = "plan.sign"
    DESTROY = "custody.destroy"
    ADJUST = "custody.adjust"
    REPORT_LOSS = "custody.loss_report"
    INVENTORY_SIGN = "custody.inventory_sign"
    RULE_MODE = "rule.mode"
    CRITICAL_VERDICT = "flag.critical_verdict"
    SECURITY_POLICY = "organisation.security_policy"
    REGISTRANT = "organisation.registrant"
    REGISTER_DEVICE = "device.register"


class MfaRequired(VigilError):
    """A sensitive action needs a second factor proved more recently (or at all)."""

    status = 403
    code = "mfa_required"

    def __init__(self, action: Action, *, enrolled: bool, window_seconds: int,
                 proved_at: datetime | None) -> None:
        message = (f"'{action}' needs a second factor proved within the last "
                   f"{window_seconds // 60} minutes: confirm a code at {STEP_UP_PATH}."
                   if enrolled else
                   f"'{action}' needs a second factor, and you have none: enrol one at "
                   f"/api/v1/me/factors/totp.")
        super().__init__(message, {
            "action": str(action), "enrolled": enrolled, "window_seconds": window_seconds,
            "factor_proved_at": proved_at.isoformat() if proved_at else None,
            "step_up": STEP_UP_PATH})


def needs_factor(organisation: Organisation, user: User) -> bool:
    """Return whether `user`'s role needs a second factor under the organisation's policy."""
    return user.role in DESK_ROLES or (user.role == Role.NURSE and organisation.mfa_nurses)


def due_at(organisation: Organisation, user: User) -> datetime:
    """Return when `user` must have a second factor to sign in (the end of the grace)."""
    if user.factor_due_at is not None:
        return user.factor_due_at
    start = max(user.created_at, organisation.mfa_policy_at or organisation.created_at)
    return start + timedelta(days=organisation.mfa_grace_days)


def enrolled(session: Session, user_id) -> bool:
    """Return whether the user has a confirmed second factor."""
    return bool(session.scalar(select(exists().where(
        SecondFactor.user_id == user_id, SecondFactor.confirmed_at.is_not(None),
        SecondFactor.removed_at.is_(None)))))


def require_fresh(session: Session, rt: Runtime, caller: Caller, action: Action) -> None:
    """Refuse `action` unless the caller proved a second factor within the step-up window."""
    window = session.get(Organisation, caller.organisation_id).step_up_seconds
    factor = caller.factor
    if factor is not None and (factor.proved_at is None or
                               rt.clock.now() - factor.proved_at <= timedelta(seconds=window)):
        return
    raise MfaRequired(action, enrolled=enrolled(session, caller.user_id), window_seconds=window,
                      proved_at=factor.proved_at if factor else None)
