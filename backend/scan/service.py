"""The nightly population scan: every organisation's window through the rules, and the chain."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.flags.service import raise_flags
from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.scan import chain, judge, loaders
from backend.scan.loaders import Scope, load, load_population
from safeguards.registry import Cadence


@dataclass
class ScanResult:
    """What one scan of one organisation read, found and stored, and how long each part took."""

    organisation_id: uuid.UUID
    since: datetime
    as_of: datetime
    facts: dict[str, int] = field(default_factory=dict)
    findings: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    new_flags: int = 0
    seconds: dict[str, Decimal] = field(default_factory=dict)


class _Timer:
    """Time the parts of a scan, to the millisecond."""

    def __init__(self, into: dict[str, Decimal]) -> None:
        self._into, self._at = into, time.perf_counter()

    def lap(self, name: str) -> None:
        """Record the time since the previous lap under `name`."""
        now = time.perf_counter()
        self._into[name] = Decimal(now - self._at).quantize(Decimal("0.001"))
        self._at = now


def scan_organisation(session: Session, rt: Runtime, organisation_id: uuid.UUID,
                      since: datetime | None = None) -> ScanResult:
    """Run the population rules over the window from `since`, and re-check recent events."""
    now = rt.clock.now()
    policy = policy_for(session, organisation_id)
    since = since or now - timedelta(days=int(policy.value("scan_window_days")))
    result = ScanResult(organisation_id, since, now)
    timer = _Timer(result.seconds)
    population = load_population(session, Scope(organisation_id, now, since),
                                 int(policy.value("bag_return_deadline_hours")))
    # The event rules ran as each fact was written; the last days are checked again for
    # what arrived while a rule was off or a write went round the service.
    events = load(session, Scope(organisation_id, now, max(since, now - judge.INLINE_WINDOW)))
    timer.lap("load")
    population = replace(population,
                         ledger_breaks=chain.ledger_breaks(session, rt, organisation_id, now))
    timer.lap("ledger")
    findings = (judge.findings(session, organisation_id, population, Cadence.POPULATION)
                + judge.findings(session, organisation_id, events, Cadence.EVENT))
    timer.lap("rules")
    raised = raise_flags(session, now, organisation_id, findings)
    result.new_flags = sum(one.new for one in raised)
    timer.lap("flags")
    result.facts = {"doses": sum(series.doses for series in population.dose_series)}
    result.facts |= {name: len(getattr(population, name)) for name in (
        "activity", "witness_pairs", "attestations", "clocks", "losses", "holdings",
        "ledger_breaks")}
    result.facts |= {f"recent_{name}": len(getattr(events, name))
                     for name in ("doses", "wastes", "visits", "evv", "quarantined")}
    result.findings = len(findings)
    result.by_rule = dict(Counter(finding.rule_id for finding in findings))
    audit.record(session, now, None, chain.SCAN_ACTION, "organisation", organisation_id,
                 organisation_id=organisation_id,
                 detail={"since": since.isoformat(), "findings": result.findings,
                         "new_flags": result.new_flags})
    return result


def nightly_scan(session: Session, rt: Runtime) -> dict:
    """Scan every organisation over its policy window."""
    results = [scan_organisation(session, rt, organisation_id)
               for organisation_id in loaders.organisation_ids(session)]
    return {"organisations": len(results),
            "findings": sum(result.findings for result in results),
            "new_flags": sum(result.new_flags for result in results)}
