"""Append to the chain: lock the head, move the balances, hash the entry, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session, make_transient_to_detached

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


def bag_nurse(holder: str | None) -> uuid.UUID | None:
    """Return the nurse whose bag `holder` names, or None."""
    if holder and holder.startswith("bag:"):
        return uuid.UUID(holder[4:])
    return None


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


class Head(NamedTuple):
    """An organisation's chain head as locked: its last entry's seq and hash."""

    seq: int
    head_hash: str


HEAD, ENTRY = CustodyHead.__table__, CustodyEntry.__table__
# Built once: an append runs these statements thousands of times a second, and SQLAlchemy
# compiles each construct once and then finds it in its cache.
_TOUCH_HEAD = (update(HEAD).where(HEAD.c.organisation_id == bindparam("organisation"))
               .values(seq=HEAD.c.seq).returning(HEAD.c.seq, HEAD.c.head_hash))
_MOVE_HEAD = (update(HEAD).where(HEAD.c.organisation_id == bindparam("organisation"))
              .values(seq=bindparam("new_seq"), head_hash=bindparam("new_hash")))
_INSERT_ENTRY = insert(ENTRY).values({column: bindparam(f"new_{column.key}", type_=column.type)
                                      for column in ENTRY.c})
_NEW_ENTRY = _INSERT_ENTRY.returning(ENTRY.c.organisation_id, ENTRY.c.seq,
                                     ENTRY.c.entry_hash).cte("new_entry")
# PostgreSQL: the entry and the head it becomes, in one statement.
_CHAIN_ENTRY = (update(HEAD).where(HEAD.c.organisation_id == _NEW_ENTRY.c.organisation_id)
                .values(seq=_NEW_ENTRY.c.seq, head_hash=_NEW_ENTRY.c.entry_hash)
                .add_cte(_NEW_ENTRY))
# PostgreSQL: the functions of migration 0019, which run the SQLite path's statements.
_LOCK_HEAD = text("SELECT locked_seq, locked_hash FROM custody_lock_head(:organisation)")
_TAKE_HEAD = text("SELECT locked_seq, locked_hash, outcome, held_ug FROM custody_take_head("
                  ":organisation, :entry, :product, :lot, :expiry, :quantity, :source, :target, "
                  ":limit)")


def in_database(session: Session) -> bool:
    """Tell whether the session's database appends through migration 0019's functions."""
    return session.get_bind().dialect.name == "postgresql"


def lock_head(session: Session, organisation_id: uuid.UUID) -> Head:
    """Take the organisation's chain head for this transaction and return it."""
    if in_database(session):
        return Head(*session.connection().execute(
            _LOCK_HEAD, {"organisation": organisation_id}).one())
    return _lock_head_here(session, organisation_id)


def _lock_head_here(session: Session, organisation_id: uuid.UUID) -> Head:
    connection = session.connection()
    connection.execute(upsert(session, HEAD).values(
        organisation_id=organisation_id, seq=0, head_hash=GENESIS).on_conflict_do_nothing())
    # An UPDATE takes the row lock on PostgreSQL and the write lock on SQLite: appends for one
    # organisation queue here, so the chain can neither fork nor leave a gap.
    return Head(*connection.execute(_TOUCH_HEAD, {"organisation": organisation_id}).one())


def _take_head_here(session: Session, organisation_id: uuid.UUID,
                    movement: Movement) -> Head | None:
    """Lock the head and move the balances; return None if the id already holds an entry."""
    head = _lock_head_here(session, organisation_id)
    # Looked up under the head's lock: a racing retry of this id waited for the first to commit.
    if session.get(CustodyEntry, movement.id) is not None:
        return None
    if is_balanced(movement.from_holder):
        _withdraw(session, organisation_id, movement)
    if is_balanced(movement.to_holder):
        _deposit(session, organisation_id, movement)
    return head


def _take_head_in_database(session: Session, organisation_id: uuid.UUID,
                           movement: Movement) -> Head | None:
    """Do what `_take_head_here` does in one call of `custody_take_head`."""
    seq, head_hash, outcome, held = session.connection().execute(_TAKE_HEAD, {
        "organisation": organisation_id, "entry": movement.id, "product": movement.product_id,
        "lot": movement.lot, "expiry": movement.expiry, "quantity": movement.quantity_ug,
        "source": movement.from_holder if is_balanced(movement.from_holder) else None,
        "target": movement.to_holder if is_balanced(movement.to_holder) else None,
        "limit": MAX_BALANCE_UG}).one()
    if outcome == "short":
        raise _short(movement, held)
    if outcome == "full":
        raise _full(movement)
    return None if outcome == "stored" else Head(seq, head_hash)


def _short(movement: Movement, held: int) -> InsufficientStock:
    return InsufficientStock(
        f"{movement.from_holder} holds {held} µg of lot {movement.lot}; "
        f"{movement.quantity_ug} µg cannot leave it.",
        {"holder": movement.from_holder, "lot": movement.lot, "held_ug": held,
         "requested_ug": movement.quantity_ug})


def _full(movement: Movement) -> BalanceLimit:
    return BalanceLimit(
        f"{movement.to_holder} may hold at most {MAX_BALANCE_UG} µg of lot {movement.lot}; "
        f"{movement.quantity_ug} µg more would pass it.",
        {"holder": movement.to_holder, "lot": movement.lot, "limit_ug": MAX_BALANCE_UG,
         "requested_ug": movement.quantity_ug})

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
        raise _short(movement, held)


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
        raise _full(movement)


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
           attestation: Attestation, received_at: datetime, *, keys: KeyRing,
           through_database: bool | None = None) -> CustodyEntry:
    """Append one movement to the organisation's chain, signed, and move the balances with it.

    `through_database` chooses migration 0019's functions (the default on PostgreSQL) or the
    same statements sent one by one (SQLite's way); both make the same chain.
    """
    if not 0 < movement.quantity_ug <= MAX_MOVEMENT_UG:
        raise Conflict(f"An entry moves from 1 to {MAX_MOVEMENT_UG} µg.", {"rule": "quantity"})
    fields = {**movement.fields(), "organisation_id": organisation_id,
              "actor_id": attestation.actor_id, "device_id": attestation.device_id,
              "device_signature": attestation.device_signature,
              "confirmations": attestation.confirmations, "received_at": received_at}
    # Sealed, and pending rows the entry names (its visit) written, before the head's lock is
    # taken: everything under it waits for this append's commit.
    row = {**sealed_values(cipher_of(session), CustodyEntry, fields),
           "server_key_id": keys.signing_key_id, "signed_record": attestation.signed_record}
    session.flush()
    if through_database is None:
        through_database = in_database(session)
    take = _take_head_in_database if through_database else _take_head_here
    if (head := take(session, organisation_id, movement)) is None:
        return existing(session, organisation_id, movement)
    fields["seq"] = head.seq + 1
    digest = entry_hash(head.head_hash, fields)
    # The hash covers the details in clear; the table keeps them as ciphertext.
    row.update(seq=fields["seq"], prev_hash=head.head_hash, entry_hash=digest,
               server_signature=sign_entry(keys.signing_key, digest))
    _chain(session, row, through_database)
    note(session, "custody_entries", movement.id, seen_by=(
        organisation_id, None, bag_nurse(movement.from_holder), bag_nurse(movement.to_holder)))
    return _as_loaded(session, row)


def _chain(session: Session, row: dict[str, Any], through_database: bool) -> None:
    """Insert the entry and make it the head."""
    connection, values = session.connection(), {f"new_{name}": row[name] for name in row}
    if through_database:
        connection.execute(_CHAIN_ENTRY, values)
    else:
        connection.execute(_INSERT_ENTRY, values)
        connection.execute(_MOVE_HEAD, {"organisation": row["organisation_id"],
                                        "new_seq": row["seq"], "new_hash": row["entry_hash"]})
    # A head this session read earlier is now behind the table.
    if (cached := session.identity_map.get(
            session.identity_key(CustodyHead, row["organisation_id"]))) is not None:
        session.expire(cached)


def _as_loaded(session: Session, row: dict[str, Any]) -> CustodyEntry:
    """Return the entry just inserted as the session would load it, without reading it back."""
    key = session.identity_key(CustodyEntry, row["id"])
    if key in session.identity_map:
        # A rolled-back savepoint left an earlier entry of this id behind: read the new one.
        return session.get(CustodyEntry, row["id"], populate_existing=True)
    entry = CustodyEntry(**{**row, "kind": str(row["kind"]),
                            "occurred_at": row["occurred_at"].astimezone(UTC),
                            "received_at": row["received_at"].astimezone(UTC)})
    make_transient_to_detached(entry)
    session.add(entry)
    return entry
