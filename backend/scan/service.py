"""The nightly population scan: every organisation's window through the rules, and the chain."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation
from backend.audit import service as audit
from backend.audit.models import AuditEvent
from backend.custody.models import CustodyEntry, CustodyHead
from backend.custody.verify import Slice, verify_slice
from backend.flags.service import raise_flags
from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.scan import judge
from backend.scan.loaders import Scope, load, load_population
from safeguards import facts as f
from safeguards.registry import Cadence

# The nightly scan re-hashes the custody chain a seventh at a time, all of it in a week, and
# at most REHASH_PER_SCAN entries a night: a chain of millions is covered in more nights
# rather than making one night's scan long. `vigil ledger verify` walks all of it at once.
SLICES = 7
REHASH_PER_SCAN = 150_000
SCAN_ACTION = "safeguards.scan"


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


def _slices(session: Session, organisation_id: uuid.UUID, now: datetime) -> list[Slice]:
    """Return tonight's parts of the chain: what came in lately, and the next slice in turn."""
    head = session.get(CustodyHead, organisation_id)
    if head is None or head.seq == 0:
        return []
    recent = now - judge.INLINE_WINDOW
    first_recent = session.scalar(select(func.min(CustodyEntry.seq)).where(
        CustodyEntry.organisation_id == organisation_id, CustodyEntry.received_at >= recent))
    # The scans run so far pick the slice, so every entry is re-hashed once in `slices` scans
    # however often (or on which weekdays) the scan runs.
    done = session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.object_type == "organisation", AuditEvent.object_id == str(organisation_id),
        AuditEvent.action == SCAN_ACTION))
    slices = max(SLICES, -(-head.seq // REHASH_PER_SCAN))
    size = -(-head.seq // slices)
    first = (done % slices) * size + 1
    parts = [Slice(first, min(first + size - 1, head.seq), recent)] if first <= head.seq else []
    if first_recent is not None:
        parts.append(Slice(first_recent, head.seq, recent))
    return parts


def _ledger_breaks(session: Session, rt: Runtime, organisation_id: uuid.UUID,
                   now: datetime) -> tuple[f.LedgerBreak, ...]:
    breaks = []
    for part in _slices(session, organisation_id, now):
        report = verify_slice(session, organisation_id, rt.keys.signing_public_key(),
                              rt.checkpoint_dir, part)
        if not report.ok:
            problem = report.problem
            entry_id = session.scalar(select(CustodyEntry.id).where(
                CustodyEntry.organisation_id == organisation_id,
                CustodyEntry.seq == problem.seq)) if problem.seq is not None else None
            breaks.append(f.LedgerBreak(entry_id=entry_id and str(entry_id), seq=problem.seq,
                                        problem="chain", detail=problem.message))
    return tuple(breaks)


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
                         ledger_breaks=_ledger_breaks(session, rt, organisation_id, now))
    timer.lap("ledger")
    findings = (judge.findings(session, organisation_id, population, Cadence.POPULATION)
                + judge.findings(session, organisation_id, events, Cadence.EVENT))
    timer.lap("rules")
    raised = raise_flags(session, now, organisation_id, findings)
    result.new_flags = sum(one.new for one in raised)
    timer.lap("flags")
    result.facts = {name: len(getattr(population, name)) for name in (
        "doses", "activity", "witness_pairs", "clocks", "losses", "holdings", "ledger_breaks")}
    result.facts |= {f"recent_{name}": len(getattr(events, name))
                     for name in ("doses", "wastes", "visits", "evv", "quarantined")}
    result.findings = len(findings)
    result.by_rule = dict(Counter(finding.rule_id for finding in findings))
    audit.record(session, now, None, SCAN_ACTION, "organisation", organisation_id,
                 organisation_id=organisation_id,
                 detail={"since": since.isoformat(), "findings": result.findings,
                         "new_flags": result.new_flags})
    return result


def nightly_scan(session: Session, rt: Runtime) -> dict:
    """Scan every organisation over its policy window."""
    results = [scan_organisation(session, rt, organisation_id)
               for organisation_id in session.scalars(select(Organisation.id))]
    return {"organisations": len(results),
            "findings": sum(result.findings for result in results),
            "new_flags": sum(result.new_flags for result in results)}
