"""The policy in force for an organisation: safeguards' defaults under its stored overrides."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import InvalidField, NotFound, VigilError
from backend.plans.models import PlanVersion
from backend.policy.models import PolicyOverride
from backend.runtime import Runtime
from safeguards.policy import Number, Policy, Threshold, UnknownThreshold

log = logging.getLogger(__name__)


def _number(threshold: Threshold, raw: str) -> Number:
    return Decimal(raw) if isinstance(threshold.default, Decimal) else int(raw)


def parse_value(policy: Policy, name: str, raw: str) -> Number:
    """Return `raw` as the kind of number threshold `name` holds, within its bounds."""
    threshold = policy.threshold(name)
    return threshold.accept(_number(threshold, raw))


def stored_value(policy: Policy, name: str, raw: str) -> Number:
    """Return a value stored before its threshold had bounds, brought within them."""
    # Refusing it here would fail every request that reads the policy; the nearest bound
    # keeps the organisation's intent as far as the bounds allow.
    threshold = policy.threshold(name)
    number = _number(threshold, raw)
    kept = threshold.clamped(number)
    if kept != number:
        log.warning("policy %s: stored %s is outside %s..%s; %s is used", name, raw,
                    threshold.minimum, threshold.maximum, kept)
    return threshold.accept(kept)


def policy_for(session: Session, organisation_id: uuid.UUID) -> Policy:
    """Return the defaults with the organisation's overrides on top."""
    base = Policy()
    stored = session.execute(select(PolicyOverride.name, PolicyOverride.value).where(
        PolicyOverride.organisation_id == organisation_id)).all()
    return base.with_overrides({name: stored_value(base, name, raw) for name, raw in stored})


@dataclass(frozen=True)
class ThresholdView:
    """A threshold as the API shows it: value in force, default, bounds, unit, source."""

    name: str
    value: Number
    default: Number
    minimum: Number
    maximum: Number
    unit: str
    source: str
    practice: bool

    @classmethod
    def of(cls, threshold: Threshold, policy: Policy) -> ThresholdView:
        """Return the view of `threshold` under `policy`."""
        return cls(threshold.name, policy.value(threshold.name), threshold.default,
                   threshold.minimum, threshold.maximum, threshold.unit, threshold.source,
                   threshold.practice)


def describe(session: Session, caller: Caller) -> list[ThresholdView]:
    """Return every threshold with the value in force for the caller's organisation."""
    policy = policy_for(session, caller.organisation_id)
    return [ThresholdView.of(t, policy) for t in policy.thresholds()]


class InvalidThresholds(VigilError):
    """Threshold names or values the policy refuses, each named as a field."""

    status = 422
    code = "validation_error"

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(f"Invalid input: {', '.join(sorted(problems))}.",
                         {"fields": {name: [problem] for name, problem in problems.items()}})


def parse_values(field: str, raw: Mapping[str, str | None]) -> dict[str, Number | None]:
    """Return each raw value as its threshold's number (None stays None), or refuse them all."""
    # Every unknown name and bad value is named, as `<field>.<name>`, in one error.
    base, parsed, problems = Policy(), {}, {}
    for name, value in raw.items():
        try:
            parsed[name] = None if value is None else parse_value(base, name, value)
        except UnknownThreshold:
            problems[f"{field}.{name}"] = "no threshold has this name"
        except (ValueError, TypeError, InvalidOperation) as exc:
            problems[f"{field}.{name}"] = str(exc) or "not a number"
    if problems:
        raise InvalidThresholds(problems)
    return parsed


def policy_for_plan(session: Session, organisation_id: uuid.UUID,
                    plan_version: PlanVersion | None) -> Policy:
    """Return the organisation's policy with the plan version's own overrides on top."""
    policy = policy_for(session, organisation_id)
    if plan_version is None or not plan_version.policy_overrides:
        return policy
    return policy.with_overrides({name: stored_value(policy, name, raw)
                                  for name, raw in plan_version.policy_overrides.items()})


def _store(session: Session, now: datetime, caller: Caller, name: str,
           value: Number | None) -> None:
    stored = session.get(PolicyOverride, (caller.organisation_id, name))
    before = stored.value if stored else None
    if value is None and stored is not None:
        session.delete(stored)
    elif value is not None:
        stored = stored or PolicyOverride(organisation_id=caller.organisation_id, name=name)
        stored.value, stored.set_by_id, stored.set_at = str(value), caller.user_id, now
        session.add(stored)
    session.flush()
    audit.record(session, now, caller, "policy.set", "policy", name,
                 detail={"from": before, "to": None if value is None else str(value)})


def set_value(session: Session, rt: Runtime, caller: Caller, name: str,
              raw: str | None) -> ThresholdView:
    """Override one threshold for the organisation; None returns it to its default."""
    base = Policy()
    try:
        base.threshold(name)
        value = None if raw is None else parse_value(base, name, raw)
    except UnknownThreshold:
        raise NotFound(f"No threshold {name!r}.") from None
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise InvalidField("value", str(exc) or "not a number") from exc
    _store(session, rt.clock.now(), caller, name, value)
    return ThresholdView.of(base.threshold(name), policy_for(session, caller.organisation_id))


def set_values(session: Session, rt: Runtime, caller: Caller,
               raw: Mapping[str, str | None]) -> list[ThresholdView]:
    """Override several thresholds at once, or none if any name or value is refused."""
    parsed = parse_values("thresholds", raw)
    now = rt.clock.now()
    for name, value in parsed.items():
        _store(session, now, caller, name, value)
    return describe(session, caller)
