"""The pharmacy's own movements as the safeguards read them, and a receipt's or adjustment's
note so that its rules judge it as it is written."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from backend import changes
from backend.accounts.models import User
from backend.custody.ledger import VAULT
from backend.custody.models import CustodyEntry, Kind
from backend.db import ids_text
from backend.phi.sealed import cipher_of, open_stored
from safeguards import facts as f

# What the pharmacy does in the ledger; administer, waste and transfer are the nurses'.
PHARMACY_KINDS = (Kind.RECEIVE, Kind.DISPENSE, Kind.RETURN, Kind.ADJUST, Kind.LOSS,
                  Kind.DESTROY)
# The kinds whose details a rule reads (a receipt's quantities, an adjustment's count and
# reason): only these are decrypted.
READ_DETAILS = (Kind.RECEIVE, Kind.ADJUST)
# Judged as they are written: a receipt against its invoice, an adjustment against its lot.
NOTED = (Kind.RECEIVE, Kind.ADJUST)
ID_COLUMNS = ("id", "actor_id", "product_id", "corrects_id")
MOVEMENT_COLUMNS = ("kind", "from_holder", "to_holder", "lot", "quantity_ug", "occurred_at")


def _whole(value: Any) -> int | None:
    # Details are whatever a client sent: a quantity counts only as a positive integer.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def movement_fact(entry: CustodyEntry, role: str | None) -> f.VaultMovement:
    """Return a ledger entry as the pharmacy rules see it, `role` being its actor's."""
    return _fact(entry, entry.details if entry.kind in READ_DETAILS else None, role)


def _fact(entry: Any, details: Any, role: str | None) -> f.VaultMovement:
    details = details or {}
    return f.VaultMovement(
        id=str(entry.id), kind=str(entry.kind), actor_id=str(entry.actor_id),
        from_holder=entry.from_holder, to_holder=entry.to_holder, lot=entry.lot,
        product_id=str(entry.product_id), quantity_ug=entry.quantity_ug,
        occurred_at=entry.occurred_at, actor_role=_text(role),
        corrects_id=_text(entry.corrects_id), count_id=_text(details.get("count_id")),
        ordered_ug=_whole(details.get("ordered_ug")),
        invoiced_ug=_whole(details.get("invoiced_ug")), reason=_text(details.get("reason")))


def movements(session: Session, organisation_id: uuid.UUID, since: datetime,
              as_of: datetime) -> list[f.VaultMovement]:
    """Return the organisation's pharmacy movements that occurred from `since` to `as_of`."""
    # Columns, not entries: a window holds tens of thousands of dispenses and returns, and
    # only receipts' and adjustments' details are read (and so fetched and decrypted).
    rows = session.execute(
        select(*ids_text(session, *(CustodyEntry.__table__.c[name] for name in ID_COLUMNS)),
               *(CustodyEntry.__table__.c[name] for name in MOVEMENT_COLUMNS),
               case((CustodyEntry.kind.in_(READ_DETAILS), CustodyEntry.details_enc))
               .label("details_enc"), User.role)
        .join(User, User.id == CustodyEntry.actor_id)
        .where(CustodyEntry.organisation_id == organisation_id,
               CustodyEntry.kind.in_(PHARMACY_KINDS), CustodyEntry.occurred_at >= since,
               CustodyEntry.occurred_at <= as_of)
        .order_by(CustodyEntry.seq))
    box = cipher_of(session)
    return [_fact(row, row.details_enc and open_stored(
        box, CustodyEntry, "details", organisation_id, uuid.UUID(row.id), row.details_enc),
        row.role) for row in rows]


def note(session: Session, organisation_id: uuid.UUID, entry: CustodyEntry,
         role: str) -> None:
    """Note a receipt or adjustment, with its lot's receipts, for the rules judged at a write."""
    receipts = session.execute(
        select(CustodyEntry, User.role).join(User, User.id == CustodyEntry.actor_id)
        .where(CustodyEntry.organisation_id == organisation_id,
               CustodyEntry.kind == Kind.RECEIVE, CustodyEntry.to_holder == VAULT,
               CustodyEntry.product_id == entry.product_id, CustodyEntry.lot == entry.lot,
               CustodyEntry.id != entry.id))
    changes.facts(session, organisation_id, vault_movements=(
        movement_fact(entry, role), *(movement_fact(row, who) for row, who in receipts)))
