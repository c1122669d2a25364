"""What a unit of work changed, as the features note it for the rules, and what a refusal keeps.

A feature never calls the safeguards itself. It notes what it wrote — a patient's record, a
nurse's visits, a visit's session, a loss report, a quarantined record, or facts that have no
row of their own (a count, a phone's clock) — and the boundary that owns the transaction
judges everything noted in one call just before it commits (see `backend.boundary`).

A refused request rolls back. What the refusal itself must keep (a failed password's count and
audit row, a quarantined record with its flag) is handed to `keep` as a writer, which the
boundary runs after the rollback, in the same transaction, before it commits; and also when a
caller caught the refusal and the unit went on to commit.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

NOTES = "vigil.changes"
KEPT = "vigil.kept"
# Where the boundary leaves its judge, for `settle`.
JUDGE = "vigil.judge"

Writer = Callable[[Session], Any]


@dataclass
class Noted:
    """Everything one organisation's part of a unit asks the rules to look at."""

    patients: set[uuid.UUID] = field(default_factory=set)
    nurses: set[uuid.UUID] = field(default_factory=set)
    sessions: set[uuid.UUID] = field(default_factory=set)
    losses: set[uuid.UUID] = field(default_factory=set)
    quarantined: set[uuid.UUID] = field(default_factory=set)
    facts: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))


def _noted(session: Session, organisation_id: uuid.UUID) -> Noted:
    return session.info.setdefault(NOTES, {}).setdefault(organisation_id, Noted())


def patient(session: Session, organisation_id: uuid.UUID, patient_id: uuid.UUID) -> None:
    """Note that the patient's recent record changed."""
    _noted(session, organisation_id).patients.add(patient_id)


def nurse(session: Session, organisation_id: uuid.UUID, nurse_id: uuid.UUID) -> None:
    """Note that the nurse's recent visits or check-ins changed."""
    _noted(session, organisation_id).nurses.add(nurse_id)


def visit_session(session: Session, organisation_id: uuid.UUID, visit_id: uuid.UUID) -> None:
    """Note that a visit's session record changed (its patient's record with it)."""
    _noted(session, organisation_id).sessions.add(visit_id)


def loss(session: Session, organisation_id: uuid.UUID, report_id: uuid.UUID) -> None:
    """Note a new loss report."""
    _noted(session, organisation_id).losses.add(report_id)


def quarantined(session: Session, organisation_id: uuid.UUID, held_id: uuid.UUID) -> None:
    """Note a record kept in quarantine."""
    _noted(session, organisation_id).quarantined.add(held_id)


def facts(session: Session, organisation_id: uuid.UUID, **given: tuple[Any, ...]) -> None:
    """Note rule facts that have no row to load them from (a count, a phone's clock)."""
    noted = _noted(session, organisation_id)
    for name, values in given.items():
        noted.facts[name].extend(values)


def take(session: Session) -> dict[uuid.UUID, Noted]:
    """Remove and return what the unit noted so far, by organisation."""
    return session.info.pop(NOTES, {})


def settle(session: Session) -> list[Any]:
    """Have the boundary judge what is noted so far, for an answer that must name its flags."""
    return session.info[JUDGE](session)


def keep(session: Session, writer: Writer) -> None:
    """Have `writer` run at the end of this unit, after its rollback if it is refused."""
    session.info.setdefault(KEPT, []).append(writer)


def kept(session: Session) -> list[Writer]:
    """Remove and return the writers a refusal keeps."""
    return session.info.pop(KEPT, [])
