"""The one way into the rules: run them over facts and store what they find as flags.

A unit of work's boundary calls `settle` just before it commits, over everything the unit
noted (`backend.changes`); jobs and the nightly scan call `judge` with the facts they gathered.
Either way the same registry, policy and flag writer are used.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from backend import changes
from backend.flags.service import Raised, raise_flags
from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.safeguards_api.service import registry_for
from backend.scan import loaders
from backend.scan.loaders import Scope
from backend.scan.sessions import visit_sessions
from safeguards import facts as f
from safeguards.engine import run
from safeguards.findings import Finding
from safeguards.registry import Cadence

# An event check looks back two days (plus the loaders' 28-day context for the limits):
# enough to cover a session recorded offline and synced late.
INLINE_WINDOW = timedelta(days=2)


def findings(session: Session, organisation_id: uuid.UUID, given: f.Facts,
             cadence: Cadence | None = None) -> list[Finding]:
    """Return what the organisation's rules (of `cadence`, or all) find in `given`."""
    registry = registry_for(session, organisation_id)
    if cadence is not None:
        registry = registry.of_cadence(cadence)
    return run(registry, given, policy_for(session, organisation_id))


def judge(session: Session, now: datetime, organisation_id: uuid.UUID, given: f.Facts,
          cadence: Cadence | None = None, *, recurring: bool = False) -> list[Raised]:
    """Run the rules over `given` and raise a flag for each finding."""
    return raise_flags(session, now, organisation_id,
                       findings(session, organisation_id, given, cadence), recurring=recurring)


def settle(session: Session, rt: Runtime) -> list[Raised]:
    """Judge everything the unit noted, and write the flags in its transaction."""
    raised = []
    while noted := changes.take(session):
        # Writing flags notes nothing, but a loader's flush could: loop until all is judged.
        for organisation_id, part in sorted(noted.items(), key=lambda item: str(item[0])):
            raised += _settle_one(session, rt.clock.now(), organisation_id, part)
    return raised


def _settle_one(session: Session, now: datetime, organisation_id: uuid.UUID,
                noted: changes.Noted) -> list[Raised]:
    found = []
    recent = now - INLINE_WINDOW
    by_patient: dict[uuid.UUID, list[f.SessionFacts]] = defaultdict(list)
    for patient_id, facts in visit_sessions(session, organisation_id, noted.sessions):
        by_patient[patient_id].append(facts)
    for patient_id in sorted(noted.patients | by_patient.keys(), key=str):
        scope = Scope(organisation_id, now, recent, patient_id=patient_id)
        found += _event_findings(session, scope, tuple(by_patient[patient_id]))
    for nurse_id in sorted(noted.nurses, key=str):
        found += _event_findings(session, Scope(organisation_id, now, recent, nurse_id=nurse_id))
    if given := _given(session, organisation_id, now, noted):
        # Facts without a scope to load are judged alone by every rule, as they arrive.
        found += findings(session, organisation_id, given)
    return raise_flags(session, now, organisation_id, found)


def _event_findings(session: Session, scope: Scope,
                    sessions: tuple[f.SessionFacts, ...] = ()) -> list[Finding]:
    # The event rules need only the recent past; the population rules wait for the scan.
    facts = replace(loaders.load(session, scope), sessions=sessions)
    return findings(session, scope.organisation_id, facts, Cadence.EVENT)


def _given(session: Session, organisation_id: uuid.UUID, now: datetime,
           noted: changes.Noted) -> f.Facts | None:
    losses = loaders.losses_by_id(session, organisation_id, noted.losses)
    quarantined = loaders.quarantined_by_id(session, organisation_id, noted.quarantined)
    extra = {name: tuple(values) for name, values in noted.facts.items() if values}
    if not (losses or quarantined or extra):
        return None
    return loaders.facts_of(session, organisation_id, now, losses=tuple(losses),
                            quarantined=tuple(quarantined), **extra)
