"""Read the custody chain for the nightly scan: tonight's slices re-hashed, as rule facts."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.audit.models import AuditEvent
from backend.custody.models import CustodyEntry, CustodyHead
from backend.custody.verify import Slice, record_verified, verified_through, verify_slice
from backend.runtime import Runtime
from backend.scan.judge import INLINE_WINDOW
from safeguards import facts as f

# The nightly scan re-hashes the custody chain a seventh at a time, all of it in a week, and
# at most REHASH_PER_SCAN entries a night: a chain of millions is covered in more nights
# rather than making one night's scan long. `vigil ledger verify` walks all of it at once.
SLICES = 7
REHASH_PER_SCAN = 150_000
SCAN_ACTION = "safeguards.scan"


def _slices(session: Session, rt: Runtime, organisation_id: uuid.UUID,
            now: datetime) -> list[tuple[Slice, bool]]:
    """Return tonight's parts of the chain, each with whether it starts where a walk verified.

    The next slice in turn, and what came in since: incrementally, the entries after the
    checkpoint the last passing walk verified to or, with none that still holds, the entries
    received lately.
    """
    head = session.get(CustodyHead, organisation_id)
    if head is None or head.seq == 0:
        return []
    recent = now - INLINE_WINDOW
    verified = verified_through(session, organisation_id, rt.keys.verifying_keys(),
                                rt.checkpoint_dir)
    first_recent = verified + 1 if verified else session.scalar(
        select(func.min(CustodyEntry.seq)).where(CustodyEntry.organisation_id == organisation_id,
                                                 CustodyEntry.received_at >= recent))
    # The scans run so far pick the slice, so every entry is re-hashed once in `slices` scans
    # however often (or on which weekdays) the scan runs.
    done = session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.object_type == "organisation", AuditEvent.object_id == str(organisation_id),
        AuditEvent.action == SCAN_ACTION))
    slices = max(SLICES, -(-head.seq // REHASH_PER_SCAN))
    size = -(-head.seq // slices)
    first = (done % slices) * size + 1
    parts = ([(Slice(first, min(first + size - 1, head.seq), recent), False)]
             if first <= head.seq else [])
    if first_recent is not None and first_recent <= head.seq:
        parts.append((Slice(first_recent, head.seq, recent), bool(verified)))
    return parts


def ledger_breaks(session: Session, rt: Runtime, organisation_id: uuid.UUID,
                  now: datetime) -> tuple[f.LedgerBreak, ...]:
    """Return where tonight's slices of the organisation's chain do not verify.

    A part that starts where a walk verified and passes moves that record to its end.
    """
    breaks = []
    for part, incremental in _slices(session, rt, organisation_id, now):
        report = verify_slice(session, organisation_id, rt.keys.verifying_keys(),
                              rt.checkpoint_dir, part)
        if incremental:
            record_verified(session, now, report)
        if not report.ok:
            problem = report.problem
            entry_id = session.scalar(select(CustodyEntry.id).where(
                CustodyEntry.organisation_id == organisation_id,
                CustodyEntry.seq == problem.seq)) if problem.seq is not None else None
            breaks.append(f.LedgerBreak(entry_id=entry_id and str(entry_id), seq=problem.seq,
                                        problem="chain", detail=problem.message))
    return tuple(breaks)
