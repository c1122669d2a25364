"""Concurrent writers on PostgreSQL: one gap-free chain per organisation, and never an overdraft.

These tests need committed data seen by many connections, so they run on a database of their
own, created, migrated and dropped here.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import pairwise

import pytest
from flask import Flask
from sqlalchemy import select

from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.auth.caller import Caller
from backend.custody.chain import GENESIS
from backend.custody.ledger import VAULT, Attestation, InsufficientStock, Movement, append, bag
from backend.custody.models import CustodyBalance, CustodyEntry, Kind
from backend.custody.verify import verify
from backend.products import service as products
from tests.backend.conftest import START, own_postgres_app

pytestmark = pytest.mark.postgres_only
WRITERS, APPENDS_EACH = 8, 25
HELD, WITHDRAWALS = 7, 20


@pytest.fixture
def ledger_app(instance_path) -> Iterator[Flask]:
    """Yield an app on a PostgreSQL database of its own."""
    with own_postgres_app(instance_path, "ledger") as app:
        yield app


@dataclass(frozen=True)
class Pharmacy:
    """A committed organisation with a pharmacist, a nurse and a product."""

    organisation_id: uuid.UUID
    pharmacist_id: uuid.UUID
    nurse_id: uuid.UUID
    product_id: uuid.UUID


@pytest.fixture
def pharmacy(ledger_app: Flask) -> Pharmacy:
    rt = ledger_app.extensions["vigil.runtime"]
    with ledger_app.extensions["vigil.db"].sessions() as session:
        org = accounts.create_organisation(session, rt, slug="concurrent", name="Concurrent",
                                           dea_registration="FV0000000", timezone="UTC")

        def user(role: Role):
            return accounts.create_user(session, rt, None, organisation_id=org.id,
                                        username=role.value, display_name=role.value,
                                        role=role, password="a long enough password")

        pharmacist, nurse = user(Role.PHARMACIST), user(Role.NURSE)
        product = products.add(
            session, rt, Caller(pharmacist.id, org.id, Role.PHARMACIST, None, None, None),
            name="Ketamine HCl 50 mg/mL, 10 mL vial", active_ingredient="ketamine",
            dea_schedule="III", form="vial", ug_per_unit=50_000, units_per_container=Decimal(10),
            allowed_routes=["IV"], home_administration_allowed=True)
        session.commit()
        return Pharmacy(org.id, pharmacist.id, nurse.id, product.id)


def _movement(pharmacy: Pharmacy, kind: Kind, source: str, target: str, quantity_ug: int,
              **details) -> Movement:
    return Movement(id=uuid.uuid4(), kind=kind, product_id=pharmacy.product_id, lot="L1",
                    expiry=date(2028, 1, 31), quantity_ug=quantity_ug, from_holder=source,
                    to_holder=target, occurred_at=START, details=details)


def _append(app: Flask, pharmacy: Pharmacy, movement: Movement) -> None:
    """Append `movement` in a session and transaction of its own, and commit."""
    with app.extensions["vigil.db"].sessions() as session:
        append(session, pharmacy.organisation_id, movement,
               Attestation(pharmacy.pharmacist_id), START,
               keys=app.extensions["vigil.runtime"].keys)
        session.commit()


def _all_at_once(count: int, work: Callable[[int], object]) -> list:
    """Run `work(i)` for i in range(count) on as many threads, released together."""
    start = threading.Barrier(count)

    def run(i: int) -> object:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _verified(app: Flask, pharmacy: Pharmacy, tmp_path) -> int:
    rt = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        report = verify(session, pharmacy.organisation_id, rt.keys.verifying_keys(),
                        tmp_path)
    assert report.ok, report.problem
    return report.entries


def test_concurrent_appends_make_one_gap_free_chain(ledger_app: Flask, pharmacy: Pharmacy,
                                                    tmp_path):
    def writer(number: int) -> None:
        for _ in range(APPENDS_EACH):
            _append(ledger_app, pharmacy, _movement(pharmacy, Kind.RECEIVE, "supplier", VAULT,
                                                    1_000, writer=number))

    _all_at_once(WRITERS, writer)
    with ledger_app.extensions["vigil.db"].sessions() as session:
        chain = session.scalars(select(CustodyEntry).where(
            CustodyEntry.organisation_id == pharmacy.organisation_id)
            .order_by(CustodyEntry.seq)).all()
    total = WRITERS * APPENDS_EACH
    assert [row.seq for row in chain] == list(range(1, total + 1))
    assert chain[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.entry_hash for earlier, later in pairwise(chain))
    # The writers really interleaved: the chain is not eight runs, one per writer.
    writers = [row.details["writer"] for row in chain]
    assert sum(a != b for a, b in pairwise(writers)) >= WRITERS
    assert _verified(ledger_app, pharmacy, tmp_path) == total


def test_concurrent_withdrawals_never_overdraw(ledger_app: Flask, pharmacy: Pharmacy, tmp_path):
    _append(ledger_app, pharmacy, _movement(pharmacy, Kind.RECEIVE, "supplier", VAULT, HELD))
    nurse_bag = bag(pharmacy.nurse_id)

    def withdraw(number: int) -> bool:
        try:
            _append(ledger_app, pharmacy, _movement(pharmacy, Kind.DISPENSE, VAULT, nurse_bag,
                                                    1, seal_id=f"S-{number}"))
        except InsufficientStock:
            return False
        return True

    outcomes = _all_at_once(WITHDRAWALS, withdraw)
    assert outcomes.count(True) == HELD
    assert outcomes.count(False) == WITHDRAWALS - HELD
    with ledger_app.extensions["vigil.db"].sessions() as session:
        balances = dict(session.execute(select(CustodyBalance.holder, CustodyBalance.quantity_ug)
                                        .where(CustodyBalance.organisation_id
                                               == pharmacy.organisation_id)).all())
    assert balances == {VAULT: 0, nurse_bag: HELD}
    assert _verified(ledger_app, pharmacy, tmp_path) == 1 + HELD
