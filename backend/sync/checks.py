"""Judge synced sessions soon after the push, not inside it.

A phone back from a day offline pushes many sessions at once; running the safeguards over
each inside the push would keep the phone waiting for all of them. The push instead queues its
visits in the same transaction, so none is forgotten, and the `sync_checks` job judges them
within a minute: the records are stored when the push answers, and flagged soon after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend import changes
from backend.db import upsert
from backend.runtime import Runtime
from backend.sync.models import PendingCheck

# Visits judged per job run; the rest wait for the next run.
BATCH = 2000


def enqueue(session: Session, now: datetime, organisation_id: uuid.UUID,
            visit_ids: Iterable[uuid.UUID]) -> int:
    """Queue the visits for judgement (a visit already queued stays queued once)."""
    rows = [{"visit_id": visit_id, "organisation_id": organisation_id, "queued_at": now}
            for visit_id in sorted(set(visit_ids), key=str)]
    if rows:
        session.execute(upsert(session, PendingCheck).on_conflict_do_nothing(), rows)
    return len(rows)


def judge_pending(session: Session, rt: Runtime) -> dict[str, Any]:
    """Run the safeguards over each queued visit's session, oldest first, and dequeue it."""
    # Another runner's claimed visits are skipped, not waited for.
    queued = list(session.execute(
        select(PendingCheck.visit_id, PendingCheck.organisation_id)
        .order_by(PendingCheck.queued_at).limit(BATCH).with_for_update(skip_locked=True)))
    for visit_id, organisation_id in queued:
        changes.visit_session(session, organisation_id, visit_id)
    if queued:
        session.execute(delete(PendingCheck).where(
            PendingCheck.visit_id.in_([visit_id for visit_id, _ in queued])))
    return {"judged": len(queued)}
