"""Which safeguard rules exist, how each runs for an organisation, and how often it is right."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import NotFound
from backend.flags.models import Flag, FlagStatus, Resolution
from backend.mfa.policy import Action, require_fresh
from backend.runtime import Runtime
from backend.safeguards_api.models import SafeguardRuleMode
from safeguards.registry import Cadence, Mode, Registry, RuleMeta, UnknownRule
from safeguards.rules import ALL

# The rule saw a real event that needed a look: misuse, diversion, or one with a good reason.
TRUE_POSITIVES = (Resolution.JUSTIFIED, Resolution.CONFIRMED_MISUSE,
                  Resolution.CONFIRMED_DIVERSION)
PRECISION_PLACES = Decimal("0.001")


def registry() -> Registry:
    """Return every safeguard rule Vigil has: the one place that says which rules exist."""
    # A copy: callers may add to theirs without changing the rules everyone else runs.
    return Registry(ALL)


def modes_for(session: Session, organisation_id: uuid.UUID) -> dict[str, Mode]:
    """Return the organisation's mode overrides by rule id."""
    stored = session.execute(select(SafeguardRuleMode.rule_id, SafeguardRuleMode.mode).where(
        SafeguardRuleMode.organisation_id == organisation_id))
    return {rule_id: Mode(mode) for rule_id, mode in stored}


def registry_for(session: Session, organisation_id: uuid.UUID) -> Registry:
    """Return every rule in the mode the organisation chose for it."""
    every = registry()
    known = {rule.meta.id for rule in every}
    # An override outlives a rule that was withdrawn; it then has nothing to switch.
    return every.with_modes({rule_id: mode for rule_id, mode
                             in modes_for(session, organisation_id).items() if rule_id in known})


def _no_verdicts() -> dict[str, int]:
    return {resolution.value: 0 for resolution in Resolution}


@dataclass
class Tally:
    """How one rule's flags stand in an organisation: unresolved, and each verdict."""

    open: int = 0
    in_review: int = 0
    verdicts: dict[str, int] = field(default_factory=_no_verdicts)

    @property
    def resolved(self) -> int:
        """Return how many flags a reviewer resolved."""
        return sum(self.verdicts.values())

    @property
    def precision(self) -> Decimal | None:
        """Return true positives over all verdicts, to 3 places; None before any verdict."""
        if not self.resolved:
            return None
        true = sum(self.verdicts[resolution] for resolution in TRUE_POSITIVES)
        return (Decimal(true) / Decimal(self.resolved)).quantize(PRECISION_PLACES)


def _tallies(session: Session, organisation_id: uuid.UUID) -> dict[str, Tally]:
    """Count the organisation's flags per rule by status and verdict, shadow ones included."""
    tallies: dict[str, Tally] = {}
    counted = session.execute(
        select(Flag.rule_id, Flag.status, Flag.resolution, func.count())
        .where(Flag.organisation_id == organisation_id)
        .group_by(Flag.rule_id, Flag.status, Flag.resolution))
    for rule_id, status, resolution, count in counted:
        tally = tallies.setdefault(rule_id, Tally())
        if status == FlagStatus.RESOLVED and resolution:
            tally.verdicts[resolution] += count
        elif status == FlagStatus.OPEN:
            tally.open += count
        elif status == FlagStatus.IN_REVIEW:
            tally.in_review += count
    return tallies


@dataclass(frozen=True)
class RuleView:
    """A rule as the API shows it: what it is, how it runs here, and how often it is right."""

    id: str
    version: int
    title: str
    severity: str
    rationale: str
    source: str
    cadence: Cadence
    default_mode: Mode
    mode: Mode
    open: int
    in_review: int
    verdicts: dict[str, int]
    resolved: int
    precision: Decimal | None

    @classmethod
    def of(cls, meta: RuleMeta, mode: Mode, tally: Tally) -> RuleView:
        """Return the view of the rule `meta` describes, running in `mode`, with its tally."""
        return cls(meta.id, meta.version, meta.title, meta.severity, meta.rationale,
                   meta.source, meta.cadence, meta.mode, mode, tally.open, tally.in_review,
                   dict(tally.verdicts), tally.resolved, tally.precision)


def rules(session: Session, caller: Caller) -> list[RuleView]:
    """Return every rule with the organisation's mode for it and its reviewers' verdicts."""
    registered = registry_for(session, caller.organisation_id)
    tallies = _tallies(session, caller.organisation_id)
    return [RuleView.of(rule.meta, registered.mode(rule.meta.id),
                        tallies.get(rule.meta.id) or Tally()) for rule in registered]


def rule(session: Session, caller: Caller, rule_id: str) -> RuleView:
    """Return one rule as `rules` shows it, or raise NotFound."""
    found = next((view for view in rules(session, caller) if view.id == rule_id), None)
    if found is None:
        raise NotFound(f"No rule {rule_id!r}.")
    return found


def set_mode(session: Session, rt: Runtime, caller: Caller, rule_id: str,
             mode: Mode | None) -> RuleView:
    """Set how a rule runs for the organisation; None returns it to the rule's own mode."""
    try:
        registry().get(rule_id)
    except UnknownRule:
        raise NotFound(f"No rule {rule_id!r}.") from None
    # Turning a rule off or into shadow silences it: a stolen password must not do that.
    require_fresh(session, rt, caller, Action.RULE_MODE)
    stored = session.get(SafeguardRuleMode, (caller.organisation_id, rule_id))
    before = stored.mode if stored else None
    now = rt.clock.now()
    if mode is None and stored is not None:
        session.delete(stored)
    elif mode is not None:
        stored = stored or SafeguardRuleMode(organisation_id=caller.organisation_id,
                                             rule_id=rule_id)
        stored.mode, stored.updated_at, stored.updated_by_id = mode.value, now, caller.user_id
        session.add(stored)
    session.flush()
    audit.record(session, now, caller, "safeguards.rule_mode", "safeguard_rule", rule_id,
                 detail={"from": before, "to": mode.value if mode else None})
    return rule(session, caller, rule_id)
