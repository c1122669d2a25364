"""Changes to synced rows waiting in a session for their numbers (see `sync.sequence`)."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy.orm import Session

CHANGED = "vigil.sync.changed"
DELETED = "vigil.sync.deleted"
GAINED = "vigil.sync.gained"
LOST = "vigil.sync.lost"
DROPPED = "vigil.sync.dropped"
KEYS = (CHANGED, DELETED, GAINED, LOST, DROPPED)


def note(session: Session, table: str, record_id: uuid.UUID) -> None:
    """Record that a synced row was written by a statement the ORM does not track."""
    session.info.setdefault(CHANGED, defaultdict(set))[table].add(record_id)


def drop(session: Session, table: str, record_id: uuid.UUID, nurse_id: uuid.UUID,
         organisation_id: uuid.UUID) -> None:
    """Tell one nurse's phone to delete a record the server never stored (it is quarantined)."""
    session.info.setdefault(DROPPED, set()).add((table, record_id, nurse_id, organisation_id))
