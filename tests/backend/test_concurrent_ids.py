"""Racing posts of one client-made id store it once: one 201, the rest the same answer or 409.

A phone that times out re-sends its record under the same id, possibly while the first send is
still running. Ten threads post the same custody entry, and ten the same visit, at once, on a
committed database of their own (a SQLite file, and PostgreSQL); never may one answer 500.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.custody.ledger import VAULT
from backend.custody.models import CustodyBalance, CustodyEntry
from backend.visits.models import Visit
from tests.backend.conftest import own_postgres_app
from tests.backend.sync.test_concurrent_phones import sqlite_app
from tests.factories import SUPPLIER, Clinic, Pharmacy, World

RACERS = 10
RECEIVED_UG = 1_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres_only)])
def committed_app(request, tmp_path, instance_path) -> Iterator[Flask]:
    """Yield an app whose requests really commit, on a database of its own."""
    if request.param == "postgresql":
        with own_postgres_app(instance_path, "ids") as app:
            yield app
        return
    app = sqlite_app(tmp_path)
    yield app
    app.extensions["vigil.db"].engine.dispose()


def race(app: Flask, path: str, body: dict, headers: list[dict]) -> list[tuple[int, dict]]:
    """Post `body` to `path` once per headers, all threads released together."""
    start = threading.Barrier(len(headers))

    def post(caller_headers: dict) -> tuple[int, dict]:
        client = app.test_client()
        start.wait()
        response = client.post(path, json=body, headers=caller_headers)
        return response.status_code, response.json

    with ThreadPoolExecutor(len(headers)) as pool:
        return list(pool.map(post, headers, timeout=60))


def assert_created_once(answers: list[tuple[int, dict]], made_id: str) -> None:
    """Assert one creation under `made_id`: every 201 the same answer, every other a 409."""
    assert {status for status, _ in answers} <= {201, 409}, answers
    created = [body for status, body in answers if status == 201]
    assert created, answers
    assert created[0]["id"] == made_id
    assert all(body == created[0] for body in created), created
    refused = [body["error"]["code"] for status, body in answers if status == 409]
    assert all(isinstance(code, str) and code for code in refused), answers


def count(app: Flask, query) -> int:
    """Return the count `query` selects, read in a session of its own."""
    with app.extensions["vigil.db"].sessions() as session:
        return session.scalar(query)


def test_racing_posts_of_one_custody_entry_record_it_once(committed_app: Flask):
    pharmacy = Pharmacy(World(committed_app))
    entry_id = str(uuid.uuid4())
    body = {"id": entry_id, "kind": "receive", "occurred_at": "2026-11-02T14:00:00+00:00",
            "product_id": pharmacy.product_id, "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": RECEIVED_UG, "details": SUPPLIER}
    headers = [pharmacy.as_(Role.PHARMACIST) for _ in range(RACERS)]
    answers = race(committed_app, "/api/v1/custody/entries", body, headers)
    assert_created_once(answers, entry_id)
    # Each retry waits at the chain head for the first, then finds it stored: a replay.
    assert [status for status, _ in answers] == [201] * RACERS, answers
    organisation = pharmacy.org.id
    assert count(committed_app, select(func.count()).select_from(CustodyEntry).where(
        CustodyEntry.organisation_id == organisation)) == 1
    # The stock arrived once: a second append would have doubled the vault.
    assert count(committed_app, select(CustodyBalance.quantity_ug).where(
        CustodyBalance.organisation_id == organisation,
        CustodyBalance.holder == VAULT)) == RECEIVED_UG


def test_racing_posts_of_one_visit_schedule_it_once(committed_app: Flask):
    clinic = Clinic(World(committed_app))
    clinic.plan()
    visit_id = str(uuid.uuid4())
    body = {"id": visit_id, "patient_id": clinic.patient_id, "nurse_id": str(clinic.nurse.id),
            "scheduled_start": "2026-11-03T15:00:00+00:00"}
    headers = [clinic.as_(Role.ADMIN) for _ in range(RACERS)]
    answers = race(committed_app, "/api/v1/visits", body, headers)
    assert_created_once(answers, visit_id)
    assert count(committed_app, select(func.count()).select_from(Visit).where(
        Visit.patient_id == uuid.UUID(clinic.patient_id))) == 1


def test_racing_visits_for_one_patient_keep_the_minimum_interval(committed_app: Flask):
    clinic = Clinic(World(committed_app))
    clinic.plan()
    start = threading.Barrier(RACERS, timeout=60)
    # Signed in before the race: a sign-in goes through the World's own session.
    signed = [clinic.as_(Role.ADMIN) for _ in range(RACERS)]

    def post(hour: int, headers: dict) -> int:
        client = committed_app.test_client()
        body = {"patient_id": clinic.patient_id, "nurse_id": str(clinic.nurse.id),
                "scheduled_start": f"2026-11-04T{hour:02d}:00:00+00:00"}
        start.wait()
        return client.post("/api/v1/visits", json=body, headers=headers).status_code

    # Ten different visits an hour apart: each alone passes, together they break the interval.
    with ThreadPoolExecutor(RACERS) as pool:
        statuses = list(pool.map(post, range(8, 8 + RACERS), signed, timeout=60))
    assert sorted(statuses) == [201] + [409] * (RACERS - 1), statuses
    assert count(committed_app, select(func.count()).select_from(Visit).where(
        Visit.patient_id == uuid.UUID(clinic.patient_id))) == 1
