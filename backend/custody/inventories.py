"""Inventories taken and signed (21 CFR 1304.11): the stock as the ledger stood, kept as signed.

An inventory is a record the registrant keeps for two years, and what it says must not move
when the ledger is later corrected. So a signed inventory stores each line as taken — holder,
product, NDC, strength, package, lot, quantity — with who took it, when, and with which second
factor, and the SHA-256 of the canonical JSON (RFC 8785) of all of that, as an order is signed
(backend.plans.signing). `verified` recomputes the hash from the stored row: a line edited
after signing shows.

Kinds: `initial`, on first engaging in business with controlled substances (1304.11(b));
`biennial`, at least every two years after it (1304.11(c)); `other`, any other occasion — a
substance newly controlled or moved to another schedule (1304.11(d)), a new pharmacist in
charge (as state boards ask), a check of the registrant's own.

Taking one is the pharmacist's act, signed with a second factor proved within the step-up
window (`custody.inventory_sign`); whoever reads the DEA reports (admins, pharmacists,
compliance officers) reads them.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import rfc8785
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, Role, User
from backend.accounts.registrant import Registrant, registrant
from backend.accounts.service import organisation_zone
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.custody import reports
from backend.custody.models import InventoryRecord
from backend.custody.reports import InventoryLine
from backend.db import new_id
from backend.mfa.policy import Action, require_fresh
from backend.runtime import Runtime
from backend.tenancy import owned

KINDS = ("initial", "biennial", "other")
TAKERS = (Role.PHARMACIST,)
# A line's values that JSON cannot hold as they are: stored as text, and read back with these.
READ_BACK = {"product_id": uuid.UUID, "expiry": date.fromisoformat,
             "units_per_container": Decimal, "quantity_mg": Decimal, "quantity_units": Decimal}


@dataclass(frozen=True)
class SignedInventory:
    """A signed inventory as read: its lines as taken, who took it, and whether it verifies."""

    id: uuid.UUID
    kind: str
    registrant: Registrant
    as_of: datetime
    date: date
    at: str
    taken_by_id: uuid.UUID
    taken_by: str
    taken_by_role: str
    taken_by_username: str
    signed_at: datetime
    signature_method: str | None
    signature_factor_id: uuid.UUID | None
    content_hash: str
    verified: bool
    lines: list[InventoryLine]


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _stored(line: InventoryLine) -> dict[str, Any]:
    return {name: str(value) if name in READ_BACK else value
            for name, value in asdict(line).items()}


def _read(stored: dict[str, Any]) -> InventoryLine:
    return InventoryLine(**{name: READ_BACK[name](value) if name in READ_BACK else value
                            for name, value in stored.items()})


def content(record: InventoryRecord) -> dict[str, Any]:
    """Return what the signature covers: the lines as taken, and who signed, when and how."""
    return {"id": str(record.id), "organisation_id": str(record.organisation_id),
            "kind": record.kind, "as_of": _utc(record.as_of), "at": record.at,
            "taken_by_id": str(record.taken_by_id), "signed_at": _utc(record.signed_at),
            "factor": {"method": record.signature_method,
                       "factor_id": str(record.signature_factor_id)
                       if record.signature_factor_id else None},
            "lines": record.lines}


def digest(record: InventoryRecord) -> str:
    """Return the hex SHA-256 of the canonical JSON of `content`."""
    return hashlib.sha256(rfc8785.dumps(content(record))).hexdigest()


def take(session: Session, rt: Runtime, caller: Caller, kind: str, as_of: datetime | None,
         at: str) -> InventoryRecord:
    """Take the inventory as of `as_of` (default now) and sign it with a fresh second factor."""
    require_fresh(session, rt, caller, Action.INVENTORY_SIGN)
    as_of = reports.checked_as_of(rt, as_of)
    organisation = session.get(Organisation, caller.organisation_id)
    now = rt.clock.now()
    record = InventoryRecord(
        id=new_id(), organisation_id=organisation.id, kind=kind, as_of=as_of, at=at,
        taken_by_id=caller.user_id, signed_at=now, signature_method=caller.factor.method,
        signature_factor_id=caller.factor.factor_id,
        lines=[_stored(line) for line in reports.inventory_lines(session, organisation, as_of)])
    record.content_hash = digest(record)
    session.add(record)
    session.flush()
    audit.record(session, now, caller, "custody.inventory_sign", "inventory_record", record.id,
                 detail={"kind": kind, "as_of": _utc(as_of), "at": at,
                         "lines": len(record.lines), "factor": record.signature_method,
                         "content_hash": record.content_hash})
    return record


def _signed(session: Session, record: InventoryRecord, organisation: Organisation,
            taker: User) -> SignedInventory:
    zone = organisation_zone(session, organisation.id)
    return SignedInventory(
        id=record.id, kind=record.kind, registrant=registrant(organisation),
        as_of=record.as_of, date=record.as_of.astimezone(zone).date(), at=record.at,
        taken_by_id=taker.id, taken_by=taker.display_name,
        taken_by_role=reports.role_title(taker), taken_by_username=taker.username,
        signed_at=record.signed_at, signature_method=record.signature_method,
        signature_factor_id=record.signature_factor_id, content_hash=record.content_hash,
        verified=digest(record) == record.content_hash,
        lines=[_read(line) for line in record.lines])


def records(session: Session, caller: Caller) -> list[SignedInventory]:
    """Return the organisation's signed inventories, the latest `as_of` first."""
    found = list(session.scalars(select(InventoryRecord).where(
        InventoryRecord.organisation_id == caller.organisation_id).order_by(
        InventoryRecord.as_of.desc(), InventoryRecord.signed_at.desc())))
    organisation = session.get(Organisation, caller.organisation_id)
    takers = {user.id: user for user in session.scalars(select(User).where(
        User.id.in_({record.taken_by_id for record in found})))}
    return [_signed(session, record, organisation, takers[record.taken_by_id])
            for record in found]


def get(session: Session, caller: Caller, inventory_id: uuid.UUID) -> SignedInventory:
    """Return one of the organisation's signed inventories, checked against its hash."""
    record = owned(session, caller, InventoryRecord, inventory_id, what="inventory")
    return _signed(session, record, session.get(Organisation, caller.organisation_id),
                   session.get(User, record.taken_by_id))
