"""Concurrent writers on PostgreSQL: a puller never skips a change committed out of order.

The change numbers are taken at commit under the organisation's counter lock, so a writer that
took a number later cannot commit before one that took it earlier. These tests commit from
many connections, so they run on a database of their own.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.administration.models import Observation
from backend.auth.caller import Caller
from backend.products import service as products
from backend.products.models import DrugProduct
from backend.sync import pull, sequence
from backend.sync.models import SyncRow
from tests.backend.conftest import own_postgres_app
from tests.backend.sync.test_sync import VITALS, Handset
from tests.factories import Pharmacy, World

pytestmark = pytest.mark.postgres_only
WRITERS, COMMITS_EACH = 4, 15


@pytest.fixture
def sync_app(instance_path) -> Iterator[Flask]:
    """Yield an app on a PostgreSQL database of its own."""
    with own_postgres_app(instance_path, "sync") as app:
        yield app


@dataclass(frozen=True)
class Org:
    """A committed organisation with a pharmacist who adds products and a nurse who pulls."""

    pharmacist: Caller
    nurse: Caller


@pytest.fixture
def org(sync_app: Flask) -> Org:
    rt = sync_app.extensions["vigil.runtime"]
    with sync_app.extensions["vigil.db"].sessions() as session:
        made = accounts.create_organisation(session, rt, slug="sync", name="Sync",
                                            dea_registration="FV0000000", timezone="UTC")

        def caller(role: Role) -> Caller:
            user = accounts.create_user(session, rt, None, organisation_id=made.id,
                                        username=role.value, display_name=role.value,
                                        role=role, password="a long enough password")
            return Caller(user.id, made.id, role, None, None, None)

        pharmacist, nurse = caller(Role.PHARMACIST), caller(Role.NURSE)
        session.commit()
        return Org(pharmacist, nurse)


def _product(app: Flask, org: Org, session, name: str) -> DrugProduct:
    return products.add(
        session, app.extensions["vigil.runtime"], org.pharmacist, name=name,
        active_ingredient="ketamine", dea_schedule="III", form="vial", ug_per_unit=50_000,
        units_per_container=Decimal(10), allowed_routes=["IV"],
        home_administration_allowed=True)


def _pull(app: Flask, org: Org, cursor: int) -> tuple[set[str], int]:
    with app.extensions["vigil.db"].sessions() as session:
        answer = pull.pull(session, app.extensions["vigil.runtime"], org.nurse,
                           pull.PullRequest(last_pulled_at=cursor, schema_version=1))
        session.commit()
    changes = answer["changes"]["products"]
    return {r["id"] for r in changes["created"] + changes["updated"]}, answer["timestamp"]


def _waiting_on_a_lock(app: Flask) -> bool:
    with app.extensions["vigil.db"].engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")))


def test_a_later_number_waits_for_the_earlier_commit(sync_app: Flask, org: Org):
    sessions = sync_app.extensions["vigil.db"].sessions
    _seen, cursor = _pull(sync_app, org, 0)
    first = sessions()
    early = _product(sync_app, org, first, "numbered first, committed last")
    # Number the first writer's change now, holding the counter until it commits.
    sequence._stamp(first)
    second_done = threading.Event()

    def second_writer() -> uuid.UUID:
        with sessions() as second:
            late = _product(sync_app, org, second, "numbered second")
            second.commit()
            second_done.set()
            return late.id

    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(second_writer)
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(sync_app) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not second_done.is_set(), "the second commit must wait for the first"
        middle, middle_cursor = _pull(sync_app, org, cursor)
        assert middle == set() and middle_cursor == cursor
        first.commit()
        first.close()
        late_id = later.result(timeout=10)
    after, _ = _pull(sync_app, org, middle_cursor)
    assert after == {str(early.id), str(late_id)}
    with sessions() as session:
        numbers = dict(session.execute(select(SyncRow.record_id, SyncRow.seq).where(
            SyncRow.table_name == "products")).all())
    assert numbers[early.id] < numbers[late_id]


def test_a_puller_racing_many_writers_sees_every_change(sync_app: Flask, org: Org):
    sessions = sync_app.extensions["vigil.db"].sessions
    made: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def writer(number: int) -> None:
        rng = random.Random(number)
        for i in range(COMMITS_EACH):
            with sessions() as session:
                product = _product(sync_app, org, session, f"w{number}-{i}")
                session.flush()
                # Transactions of uneven length, so they reach their commits out of order.
                time.sleep(rng.uniform(0, 0.02))
                session.commit()
                with lock:
                    made.append(str(product.id))

    def puller() -> set[str]:
        seen, cursor = set(), 0
        while not stop.is_set():
            got, cursor = _pull(sync_app, org, cursor)
            seen |= got
        got, cursor = _pull(sync_app, org, cursor)
        return seen | got

    with ThreadPoolExecutor(WRITERS + 1) as pool:
        pulled = pool.submit(puller)
        list(pool.map(writer, range(WRITERS)))
        stop.set()
        seen = pulled.result(timeout=60)
    assert len(made) == WRITERS * COMMITS_EACH
    assert seen == set(made)


def test_two_phones_racing_the_same_push_store_each_record_once(sync_app: Flask):
    world = World(sync_app)
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    visit = pharmacy.schedule("2026-11-03T15:00:00+00:00").json
    handset = Handset(pharmacy)
    rows = [handset.row({"visit_id": visit["id"], **VITALS,
                         "occurred_at": f"2026-11-03T15:{n:02d}:00+00:00"}) for n in range(40)]
    body = {"changes": {"observations": {"created": rows, "updated": [], "deleted": []}}}
    start = threading.Barrier(2)

    def push(key: str | None) -> int:
        client = sync_app.test_client()
        start.wait()
        return client.post("/api/v1/sync", json=body, headers={
            **handset.headers, **({"Idempotency-Key": key} if key else {})}).status_code

    with ThreadPoolExecutor(2) as pool:
        keyed = sorted(pool.map(push, ["same", "same"]))
    # The second with the key waits for the first's claim, then sees it running or done.
    assert keyed[0] == 200 and keyed[1] in (200, 409)
    with ThreadPoolExecutor(2) as pool:
        unkeyed = sorted(pool.map(push, [None, None]))
    assert set(unkeyed) <= {200, 409}
    with sync_app.extensions["vigil.db"].sessions() as session:
        stored = session.scalar(select(func.count()).select_from(Observation).where(
            Observation.visit_id == uuid.UUID(visit["id"])))
    assert stored == len(rows)
