"""PostgreSQL's in-database append path makes the same chain as the statement-by-statement one.

The same movements are appended twice into one organisation, each time inside a savepoint that
is rolled back after: once through migration 0019's functions, once through the statements
SQLite runs. Every entry, hash, signature, balance and refusal must be the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.custody.ledger import (
    MAX_BALANCE_UG,
    VAULT,
    AppendOnly,
    Attestation,
    BalanceLimit,
    InsufficientStock,
    Movement,
    append,
    bag,
)
from backend.custody.models import CustodyBalance, CustodyEntry, CustodyHead, Kind
from tests.factories import SUPPLIER, Pharmacy, World

RECEIVED_AT = datetime(2026, 11, 3, 16, 0, tzinfo=UTC)
OCCURRED_AT = datetime(2026, 11, 3, 15, 30, tzinfo=UTC)
QUANTITIES = st.integers(1, 3_000)
# Earlier movements a retry or a reused id points at, by position (modulo how many there are).
EARLIER = st.integers(0, 40)
STEPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["receive", "dispense", "transfer", "waste", "return"]),
              QUANTITIES),
    # A balance brought near its limit, so that the next deposit into it is refused.
    st.tuples(st.just("brim"), st.sampled_from(["vault", "bag"])),
    st.tuples(st.sampled_from(["retry", "reuse"]), EARLIER)), max_size=30)


@dataclass(frozen=True)
class Stock:
    """The organisation, product and two nurses the movements name, as plain ids."""

    organisation_id: uuid.UUID
    product_id: uuid.UUID
    nurse_id: uuid.UUID
    other_nurse_id: uuid.UUID


def _movement(stock: Stock, kind: str, quantity_ug: int) -> Movement:
    nurse_bag, other_bag = bag(stock.nurse_id), bag(stock.other_nurse_id)
    source, target, details = {
        "receive": ("supplier", VAULT, SUPPLIER),
        "dispense": (VAULT, nurse_bag, {"seal_id": f"S-{quantity_ug}"}),
        "transfer": (nurse_bag, other_bag, {}),
        "waste": (other_bag, "waste", {"note": "drawn up, not given"}),
        "return": (nurse_bag, VAULT, {"seal_id": f"S-{quantity_ug}"})}[kind]
    return Movement(id=uuid.uuid4(), kind=Kind(kind), product_id=stock.product_id,
                    lot="L1", expiry=date(2028, 1, 31), quantity_ug=quantity_ug,
                    from_holder=source, to_holder=target, occurred_at=OCCURRED_AT,
                    details=details)


def _script(stock: Stock, steps: list[tuple]) -> list:
    """Return each step as a movement to append, or a holder to bring near its limit."""
    # Stock in the vault first, so that most withdrawals have something to draw on.
    movements = [_movement(stock, "receive", 5_000)]
    script: list = movements[:]
    for step, value in steps:
        if step == "brim":
            script.append(VAULT if value == "vault" else bag(stock.nurse_id))
            continue
        if step in ("retry", "reuse"):
            if not movements:
                continue
            earlier = movements[value % len(movements)]
            movement = earlier if step == "retry" else _movement(
                stock, "receive", earlier.quantity_ug + 1)
            if step == "reuse":
                movement = Movement(**{**movement.fields(), "id": earlier.id})
        else:
            movement = _movement(stock, step, value)
        movements.append(movement)
        script.append(movement)
    return script


def _run(session: Session, world: World, stock: Stock, script: list, *,
         through_database: bool) -> tuple:
    """Append the script in a savepoint, rolled back after; return what each step left."""
    outcomes = []
    rollback = session.begin_nested()
    for step in script:
        if isinstance(step, str):
            session.execute(update(CustodyBalance).where(
                CustodyBalance.organisation_id == stock.organisation_id,
                CustodyBalance.holder == step).values(quantity_ug=MAX_BALANCE_UG - 10))
            continue
        try:
            # A savepoint per movement, as a dose's administer entry has: a refusal is undone.
            with session.begin_nested():
                entry = append(session, stock.organisation_id, step,
                               Attestation(stock.nurse_id), RECEIVED_AT, keys=world.rt.keys,
                               through_database=through_database)
                outcomes.append((entry.id, entry.seq, entry.prev_hash, entry.entry_hash,
                                 entry.server_signature, entry.details))
        except (InsufficientStock, BalanceLimit, AppendOnly) as refused:
            outcomes.append((type(refused).__name__, refused.details))
    stored = _stored(session, stock.organisation_id)
    rollback.rollback()
    # The rolled-back entries stay in the identity map, clean: the next run must not find them.
    session.expunge_all()
    return outcomes, stored


def _stored(session: Session, organisation_id: uuid.UUID) -> tuple:
    """Return the chain, the head and the balances as the database holds them."""
    chain = session.execute(select(
        CustodyEntry.seq, CustodyEntry.id, CustodyEntry.prev_hash, CustodyEntry.entry_hash,
        CustodyEntry.server_signature).where(CustodyEntry.organisation_id == organisation_id)
        .order_by(CustodyEntry.seq)).all()
    head = session.execute(select(CustodyHead.seq, CustodyHead.head_hash).where(
        CustodyHead.organisation_id == organisation_id)).one_or_none()
    balances = session.execute(select(CustodyBalance.holder, CustodyBalance.quantity_ug)
                               .where(CustodyBalance.organisation_id == organisation_id)
                               .order_by(CustodyBalance.holder)).all()
    return chain, head, balances


def test_both_append_paths_make_the_same_chain(world: World):
    if world.session.get_bind().dialect.name != "postgresql":
        pytest.skip("the in-database path exists on PostgreSQL only")
    pharmacy = Pharmacy(world)
    stock = Stock(pharmacy.org.id, uuid.UUID(pharmacy.product_id), pharmacy.nurse.id,
                  world.user(pharmacy.org, pharmacy.nurse.role).id)
    world.commit()
    session = world.session

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(STEPS)
    def same_chain(steps):
        script = _script(stock, steps)
        here = _run(session, world, stock, script, through_database=False)
        in_database = _run(session, world, stock, script, through_database=True)
        assert in_database == here
        for outcome in here[0]:
            event(outcome[0] if isinstance(outcome[0], str) else "appended")

    same_chain()
