"""Changes to synced rows waiting in a session for their numbers (see `sync.sequence`)."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy.orm import Session

CHANGED = "vigil.sync.changed"
DELETED = "vigil.sync.deleted"
GAINED = "vigil.sync.gained"
LOST = "vigil.sync.lost"
KEYS = (CHANGED, DELETED, GAINED, LOST)


def note(session: Session, table: str, record_id: uuid.UUID) -> None:
    """Record that a synced row was written by a statement the ORM does not track."""
    session.info.setdefault(CHANGED, defaultdict(set))[table].add(record_id)
