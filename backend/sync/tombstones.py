"""Forget deletions older than the longest offline window, and remember up to where."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.sync.models import SyncCounter, SyncRevocation, SyncRow


def prune(session: Session, rt: Runtime) -> dict[str, Any]:
    """Drop each organisation's tombstones older than its `sync_offline_window_days`."""
    pruned = {}
    for organisation_id in session.scalars(select(SyncCounter.organisation_id)):
        days = int(policy_for(session, organisation_id).value("sync_offline_window_days"))
        cutoff = rt.clock.now() - timedelta(days=days)
        old_rows = (SyncRow.organisation_id == organisation_id, SyncRow.deleted.is_(True),
                    SyncRow.changed_at < cutoff)
        old_revocations = (SyncRevocation.organisation_id == organisation_id,
                           SyncRevocation.revoked_at < cutoff)
        last = max(session.scalar(select(func.max(SyncRow.seq)).where(*old_rows)) or 0,
                   session.scalar(select(func.max(SyncRevocation.seq))
                                  .where(*old_revocations)) or 0)
        if not last:
            continue
        rows = session.execute(delete(SyncRow).where(*old_rows)).rowcount
        revocations = session.execute(delete(SyncRevocation).where(*old_revocations)).rowcount
        # A phone whose cursor is below the last forgotten deletion may have missed it.
        session.execute(update(SyncCounter).where(
            SyncCounter.organisation_id == organisation_id,
            SyncCounter.horizon < last).values(horizon=last))
        pruned[str(organisation_id)] = {"tombstones": rows, "revocations": revocations,
                                        "horizon": last}
    return {"pruned": pruned}
