"""Read and change an organisation's second-factor policy, and who is yet to enrol under it.

The policy is three settings on the organisation (`backend.mfa.policy` applies them): whether
nurses need a factor, the grace for a first enrolment, and the step-up window. A change of
who is covered or of the grace restarts every user's grace from now, so nobody newly covered
is locked out at once; any change needs a fresh second factor, and is audited with the
settings before and after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, User
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.mfa.policy import Action, due_at, require_fresh
from backend.mfa.service import users_without_factor
from backend.runtime import Runtime


@dataclass(frozen=True)
class Settings:
    """What an admin sets: nurses covered or not, the enrolment grace, the step-up window."""

    second_factor_for_nurses: bool
    enrolment_grace_days: int
    step_up_minutes: int

    @classmethod
    def of(cls, organisation: Organisation) -> Settings:
        """Return the organisation's settings as they stand."""
        return cls(organisation.mfa_nurses, organisation.mfa_grace_days,
                   organisation.step_up_seconds // 60)


@dataclass(frozen=True)
class Unenrolled:
    """A user the policy covers who has no confirmed factor, and when one is due."""

    user: User
    due_at: datetime
    overdue: bool


@dataclass(frozen=True)
class SecurityPolicy(Settings):
    """The organisation's settings, since when they stand, and who is yet to enrol."""

    changed_at: datetime | None
    without_factor: list[Unenrolled]


def unenrolled(session: Session, organisation: Organisation, now: datetime) -> list[Unenrolled]:
    """Return the users the policy covers who have no confirmed factor, soonest due first."""
    rows = []
    for user in users_without_factor(session, organisation):
        due = due_at(organisation, user)
        rows.append(Unenrolled(user, due, overdue=due <= now))
    return sorted(rows, key=lambda row: (row.due_at, row.user.username))


def read(session: Session, rt: Runtime, caller: Caller) -> SecurityPolicy:
    """Return the caller's organisation's second-factor policy and its users yet to enrol."""
    organisation = session.get(Organisation, caller.organisation_id)
    return SecurityPolicy(**asdict(Settings.of(organisation)),
                          changed_at=organisation.mfa_policy_at,
                          without_factor=unenrolled(session, organisation, rt.clock.now()))


def change(session: Session, rt: Runtime, caller: Caller, settings: Settings) -> SecurityPolicy:
    """Set the policy; a change restarts the enrolment grace from now and is audited."""
    require_fresh(session, rt, caller, Action.SECURITY_POLICY)
    organisation = session.get(Organisation, caller.organisation_id)
    before = Settings.of(organisation)
    if settings != before:
        now = rt.clock.now()
        organisation.mfa_nurses = settings.second_factor_for_nurses
        organisation.mfa_grace_days = settings.enrolment_grace_days
        organisation.step_up_seconds = settings.step_up_minutes * 60
        # Only a change of who is covered, or of the grace, starts the grace again: a shorter
        # step-up window must not hand overdue users a fresh week.
        if (settings.second_factor_for_nurses, settings.enrolment_grace_days) != (
                before.second_factor_for_nurses, before.enrolment_grace_days):
            organisation.mfa_policy_at = now
        session.flush()
        audit.record(session, now, caller, "organisation.security_policy", "organisation",
                     organisation.id, detail={"from": asdict(before), "to": asdict(settings)})
    return read(session, rt, caller)
