"""Store safeguard findings as flags, one per dedup key, for compliance review."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.auth.caller import Caller
from backend.flags.models import Flag
from safeguards.findings import Finding

OPEN = "open"


def _json_evidence(finding: Finding) -> dict:
    # Decimals travel as strings so that no amount is rounded through a float.
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in finding.evidence.items()}


def raise_flag(session: Session, now: datetime, organisation_id: uuid.UUID,
               finding: Finding) -> Flag:
    """Store `finding`; a finding with a known dedup key refreshes that flag's evidence."""
    flag = session.scalar(select(Flag).where(Flag.organisation_id == organisation_id,
                                             Flag.dedup_key == finding.dedup_key))
    if flag is None:
        flag = Flag(organisation_id=organisation_id, dedup_key=finding.dedup_key, status=OPEN,
                    occurrences=0, first_seen_at=now)
        session.add(flag)
    flag.rule_id, flag.rule_version = finding.rule_id, finding.rule_version
    flag.severity, flag.shadow = finding.severity.value, finding.shadow
    flag.subject_kind, flag.subject_id = finding.subject.kind.value, finding.subject.id
    flag.summary, flag.evidence = finding.summary, _json_evidence(finding)
    flag.occurrences += 1
    flag.last_seen_at = now
    session.flush()
    return flag


def listing(session: Session, caller: Caller, *, limit: int, offset: int,
            **where: str) -> list[Flag]:
    """Return the organisation's flags matching `where` (exact values), newest first."""
    query = select(Flag).where(Flag.organisation_id == caller.organisation_id)
    for column, value in where.items():
        query = query.where(getattr(Flag, column) == value)
    query = query.order_by(Flag.last_seen_at.desc(), Flag.id)
    return list(session.scalars(query.limit(limit).offset(offset)))
