"""Changes to synced rows waiting in a session for their numbers (see `backend.sync.sequence`)."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy.orm import Session

CHANGED = "vigil.sync.changed"
DELETED = "vigil.sync.deleted"
GAINED = "vigil.sync.gained"
LOST = "vigil.sync.lost"
DROPPED = "vigil.sync.dropped"
PUSHED = "vigil.sync.pushed"
KNOWN = "vigil.sync.known"
KEYS = (CHANGED, DELETED, GAINED, LOST, DROPPED, PUSHED, KNOWN)


def note(session: Session, table: str, record_id: uuid.UUID, *,
         seen_by: tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None, uuid.UUID | None]
         | None = None) -> None:
    """Record that a synced row was written by a statement the ORM does not track."""
    # `seen_by` is the row's audience (organisation, patient, nurse, peer nurse) where the
    # writer knows it: the commit then need not read the row back to learn it.
    session.info.setdefault(CHANGED, defaultdict(set))[table].add(record_id)
    if seen_by is not None:
        session.info.setdefault(KNOWN, {})[(table, record_id)] = seen_by


def forget_known(session: Session, _transaction: object) -> None:
    """Forget every audience told so far: a rolled-back savepoint may have taken its row."""
    session.info.pop(KNOWN, None)


def drop(session: Session, table: str, record_id: uuid.UUID, nurse_id: uuid.UUID,
         organisation_id: uuid.UUID) -> None:
    """Tell one nurse's phone to delete a record the server never stored (it is quarantined)."""
    session.info.setdefault(DROPPED, set()).add((table, record_id, nurse_id, organisation_id))


def pushed(session: Session, table: str, record_id: uuid.UUID, device_id: uuid.UUID, *,
           amended: bool) -> None:
    """Record that a phone pushed this new record; `amended` if the server stored it otherwise."""
    session.info.setdefault(PUSHED, {})[(table, record_id)] = (device_id, amended)
