"""Append to the chain: lock the head, move the balances, hash the entry, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from backend.client_ids import stored_twin
from backend.custody.chain import GENESIS, entry_hash, sign_entry, signed_payload
from backend.custody.models import CustodyBalance, CustodyEntry, CustodyHead
from backend.db import upsert
from backend.errors import Conflict, VigilError
from backend.keys import KeyRing
from backend.phi.sealed import cipher_of, sealed_values
from backend.synced import note

VAULT = "vault"
# Only these holders keep a balance; the others are where stock comes from or goes to.
BALANCED_PREFIXES = ("vault", "bag:")
# The most one entry moves (1 kg), within its 32-bit column; the API's schemas take as much.
MAX_MOVEMENT_UG = 1_000_000_000
# The most one holder holds of one lot: what a phone's JavaScript counts exactly, and well
# within the balance's 64-bit column.
MAX_BALANCE_UG = 2**53 - 1


class InsufficientStock(VigilError):
    """A movement would take a holder's balance below zero."""

    status = 409
    code = "insufficient_stock"


class BalanceLimit(VigilError):
    """A movement would take a holder's balance beyond what a balance may hold."""

    status = 409
    code = "balance_limit"


class AppendOnly(VigilError):
    """An entry id already holds a different entry: the ledger is never changed."""

    status = 409
    code = "append_only"


def bag(nurse_id: uuid.UUID) -> str:
    """Return the holder name of a nurse's bag."""
    return f"bag:{nurse_id}"


def is_balanced(holder: str) -> bool:
    """Tell whether `holder` keeps a balance (the vault and nurses' bags)."""
    return holder.startswith(BALANCED_PREFIXES)


@dataclass(frozen=True)
class Movement:
    """One movement of one lot between two holders, as recorded."""

    id: uuid.UUID
    kind: str
    product_id: uuid.UUID
    lot: str
    expiry: date
    quantity_ug: int
    from_holder: str
    to_holder: str
    occurred_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    visit_id: uuid.UUID | None = None
    corrects_id: uuid.UUID | None = None

    def fields(self) -> dict[str, Any]:
        """Return the movement's columns."""
        return {name: getattr(self, name) for name in (
            "id", "kind", "product_id", "lot", "expiry", "quantity_ug", "from_holder",
            "to_holder", "occurred_at", "details", "visit_id", "corrects_id")}

    def signed(self) -> dict[str, Any]:
        """Return what the recording device and any witness sign."""
        return signed_payload(self.fields())


@dataclass(frozen=True)
class Attestation:
    """Who recorded a movement, from which device with what signature, and who witnessed it."""

    actor_id: uuid.UUID
    device_id: uuid.UUID | None = None
    device_signature: str | None = None
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    # When the phone signed another record the movement follows from (a dose), that record.
    signed_record: dict[str, Any] | None = None


def lock_head(session: Session, organisation_id: uuid.UUID) -> CustodyHead:
    """Take the organisation's chain head for this transaction and return it."""
    session.execute(upsert(session, CustodyHead).values(
        organisation_id=organisation_id, seq=0, head_hash=GENESIS).on_conflict_do_nothing())
    # An UPDATE takes the row lock on PostgreSQL and the write lock on SQLite: appends for one
    # organisation queue here, so the chain can neither fork nor leave a gap.
    session.execute(update(CustodyHead).where(CustodyHead.organisation_id == organisation_id)
                    .values(seq=CustodyHead.seq).execution_options(synchronize_session=False))
    head = session.get(CustodyHead, organisation_id, populate_existing=True)
    return head


def _withdraw(session: Session, organisation_id: uuid.UUID, movement: Movement) -> None:
    moved = session.execute(
        update(CustodyBalance).where(
            CustodyBalance.organisation_id == organisation_id,
            CustodyBalance.holder == movement.from_holder,
            CustodyBalance.product_id == movement.product_id, CustodyBalance.lot == movement.lot,
            CustodyBalance.quantity_ug >= movement.quantity_ug)
        .values(quantity_ug=CustodyBalance.quantity_ug - movement.quantity_ug)
        .execution_options(synchronize_session=False)).rowcount
    if moved != 1:
        held = session.scalar(select(CustodyBalance.quantity_ug).where(
            CustodyBalance.organisation_id == organisation_id,
            CustodyBalance.holder == movement.from_holder,
            CustodyBalance.product_id == movement.product_id,
            CustodyBalance.lot == movement.lot)) or 0
        raise InsufficientStock(
            f"{movement.from_holder} holds {held} µg of lot {movement.lot}; "
            f"{movement.quantity_ug} µg cannot leave it.",
            {"holder": movement.from_holder, "lot": movement.lot, "held_ug": held,
             "requested_ug": movement.quantity_ug})


def _deposit(session: Session, organisation_id: uuid.UUID, movement: Movement) -> None:
    table = CustodyBalance.__table__
    held = session.execute(upsert(session, table).values(
        organisation_id=organisation_id, holder=movement.to_holder,
        product_id=movement.product_id, lot=movement.lot, expiry=movement.expiry,
        quantity_ug=movement.quantity_ug).on_conflict_do_update(
            index_elements=["organisation_id", "holder", "product_id", "lot"],
            set_={"quantity_ug": table.c.quantity_ug + movement.quantity_ug},
            where=table.c.quantity_ug <= MAX_BALANCE_UG - movement.quantity_ug)
        .returning(table.c.quantity_ug)).scalar()
    # No row comes back when the balance is too full to take it (rowcount is not reliable).
    if held is None:
        raise BalanceLimit(
            f"{movement.to_holder} may hold at most {MAX_BALANCE_UG} µg of lot {movement.lot}; "
            f"{movement.quantity_ug} µg more would pass it.",
            {"holder": movement.to_holder, "lot": movement.lot, "limit_ug": MAX_BALANCE_UG,
             "requested_ug": movement.quantity_ug})


def existing(session: Session, organisation_id: uuid.UUID,
             movement: Movement) -> CustodyEntry | None:
    """Return the entry already stored under the movement's id, if it is the same movement."""
    return stored_twin(
        session.get(CustodyEntry, movement.id), (organisation_id, movement.signed()),
        content=lambda stored: (stored.organisation_id, signed_payload(_columns(stored))),
        conflict=AppendOnly("A different entry already has this id; the ledger is never "
                            "changed.", {"id": str(movement.id)}))


def _columns(entry: CustodyEntry) -> dict[str, Any]:
    return {**{column.key: getattr(entry, column.key)
               for column in CustodyEntry.__mapper__.columns}, "details": entry.details}


def append(session: Session, organisation_id: uuid.UUID, movement: Movement,
           attestation: Attestation, received_at: datetime, *, keys: KeyRing) -> CustodyEntry:
    """Append one movement to the organisation's chain, signed, and move the balances with it."""
    if not 0 < movement.quantity_ug <= MAX_MOVEMENT_UG:
        raise Conflict(f"An entry moves from 1 to {MAX_MOVEMENT_UG} µg.", {"rule": "quantity"})
    head = lock_head(session, organisation_id)
    # Looked up under the head's lock: a racing retry of this id waited for the first to commit.
    if (stored := existing(session, organisation_id, movement)) is not None:
        return stored
    if is_balanced(movement.from_holder):
        _withdraw(session, organisation_id, movement)
    if is_balanced(movement.to_holder):
        _deposit(session, organisation_id, movement)
    fields = {**movement.fields(), "organisation_id": organisation_id, "seq": head.seq + 1,
              "actor_id": attestation.actor_id, "device_id": attestation.device_id,
              "device_signature": attestation.device_signature,
              "confirmations": attestation.confirmations, "received_at": received_at}
    digest = entry_hash(head.head_hash, fields)
    # The hash covers the details in clear; the table keeps them as ciphertext.
    session.execute(insert(CustodyEntry).values(
        **sealed_values(cipher_of(session), CustodyEntry, fields), prev_hash=head.head_hash,
        entry_hash=digest, server_key_id=keys.signing_key_id,
        server_signature=sign_entry(keys.signing_key, digest),
        signed_record=attestation.signed_record))
    head.seq, head.head_hash = fields["seq"], digest
    note(session, "custody_entries", movement.id)
    session.flush()
    return session.get(CustodyEntry, movement.id)
