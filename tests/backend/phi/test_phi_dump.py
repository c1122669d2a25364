"""Acceptance: no patient detail appears in clear in the SQLite file or in a pg_dump."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend import create_app, schema
from backend.accounts.models import Role
from tests.backend.conftest import FAST_ARGON2, IN_CI, POSTGRES_URL, require_postgres
from tests.factories import World

PATIENTS = [
    {"mrn": "MRN-ZX-48213", "name": "Zebulon Quillfeather", "date_of_birth": "1961-07-23",
     "address": "742 Marigold Crescent, Flat 9", "phone": "+1 415 555 0173",
     "emergency_contact": "Henrietta Quillfeather (sister) +1 415 555 0174",
     "notes": "Spare key under the blue heron statue", "home_latitude": "37.774900",
     "home_longitude": "-122.419400"},
    {"mrn": "MRN-ZX-99107", "name": "Zoë Ashgrove-Pemberly", "date_of_birth": "1978-02-14",
     "address": "31 Juniper Hollow Road", "phone": "+1 415 555 0188",
     "emergency_contact": "Bartholomew Ashgrove", "notes": "Allergic to penicillin"},
]
CHANGED_NOTES = "Moved the spare key to the lavender planter"
# Every distinctive fragment of the PHI above; none may appear in the stored bytes.
NEEDLES = ["MRN-ZX-48213", "MRN-ZX-99107", "Zebulon", "Quillfeather", "Zoë", "Ashgrove",
           "Pemberly", "1961-07-23", "1978-02-14", "Marigold", "Juniper Hollow", "555 0173",
           "555 0188", "Henrietta", "Bartholomew", "blue heron", "penicillin", "lavender"]
SLUG = "phi-dump-clinic"


def seed(app: Flask) -> None:
    """Register, change and weigh patients through the API, each request committing for real."""
    world = World(app)
    org = world.org(SLUG)
    admin, nurse = world.user(org, Role.ADMIN), world.user(org, Role.NURSE)
    headers = world.headers(org, admin)
    ids = []
    for patient in PATIENTS:
        response = world.client.post("/api/v1/patients", headers=headers, json={
            **patient, "nurse_ids": [str(nurse.id)]})
        assert response.status_code == 201, response.json
        ids.append(response.json["id"])
    changed = world.client.patch(f"/api/v1/patients/{ids[0]}", headers=headers,
                                 json={"notes": CHANGED_NOTES})
    assert changed.status_code == 200, changed.json
    weighed = world.client.post(f"/api/v1/patients/{ids[0]}/weights", headers=headers,
                                json={"weight_kg": "81.4", "measured_at": "2026-11-01T10:00:00Z"})
    assert weighed.status_code == 201, weighed.json
    read = world.client.get("/api/v1/patients", headers=world.headers(org, nurse))
    assert {p["name"] for p in read.json} == {p["name"] for p in PATIENTS}
    world.session.close()


@contextmanager
def seeded_app(tmp_path: Path, url: str) -> Iterator[Flask]:
    """Yield an app on `url`, migrated and seeded; dispose its engine afterwards."""
    app = create_app({"INSTANCE_PATH": tmp_path, "DATABASE_URL": url, "VIGIL_ENV": "test",
                      **FAST_ARGON2})
    engine = app.extensions["vigil.db"].engine
    try:
        schema.upgrade(engine)
        seed(app)
        yield app
    finally:
        engine.dispose()


def assert_no_phi(raw: bytes) -> None:
    """Assert that no needle appears in `raw`, which does hold the seeded organisation."""
    assert SLUG.encode() in raw, "the seeded data is not in what was read"
    assert b"v1." in raw, "no ciphertext in what was read"
    found = [needle for needle in NEEDLES if needle.encode() in raw]
    assert found == []


def test_sqlite_file_holds_no_phi_in_clear(tmp_path):
    database = tmp_path / "vigil.sqlite3"
    with seeded_app(tmp_path, f"sqlite:///{database}"):
        pass
    with sqlite3.connect(database) as conn:
        # Move everything from the write-ahead log into the main file before reading it.
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    conn.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("vigil.sqlite3*"))
    assert_no_phi(raw)


@pytest.fixture
def pg_dump() -> str:
    """Return the path of pg_dump; skip without it, except in CI."""
    path = shutil.which("pg_dump")
    if path is None:
        if IN_CI:
            pytest.fail("CI=true and pg_dump is not installed")
        pytest.skip("pg_dump is not installed")
    return path


@pytest.fixture
def dump_database() -> Iterator[str]:
    """Create a PostgreSQL database of its own for committed data; drop it afterwards."""
    require_postgres(POSTGRES_URL)
    target = make_url(POSTGRES_URL)
    url = target.set(database=f"{target.database}_phi_dump")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    drop = text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    with admin.connect() as conn:
        conn.execute(drop)
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(drop)
        admin.dispose()


def test_pg_dump_holds_no_phi_in_clear(tmp_path, pg_dump, dump_database):
    with seeded_app(tmp_path, dump_database):
        pass
    conninfo = make_url(dump_database).set(drivername="postgresql")
    dumped = subprocess.run(  # noqa: S603 - a fixed command, no shell
        [pg_dump, "--no-owner", "--dbname", conninfo.render_as_string(hide_password=False)],
        capture_output=True, timeout=120, check=False)
    assert dumped.returncode == 0, dumped.stderr.decode()
    assert_no_phi(dumped.stdout)
