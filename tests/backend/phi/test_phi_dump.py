"""Acceptance: no patient detail, and nothing a person wrote, appears in clear at rest.

`tests.backend.phi.seeded` writes a distinctive word into every free-text and identifying field
the API accepts, by REST and by sync, accepted and quarantined; none may be found in the SQLite
file or in a pg_dump of PostgreSQL.
"""

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
from backend.clock import FixedClock
from tests.backend.conftest import FAST_ARGON2, IN_CI, POSTGRES_URL, START, require_postgres
from tests.backend.phi.seeded import NEEDLES, seed


@contextmanager
def seeded_app(tmp_path: Path, url: str) -> Iterator[tuple[Flask, str]]:
    """Yield an app on `url`, migrated and seeded, and the seeded slug; dispose it afterwards."""
    app = create_app({"INSTANCE_PATH": tmp_path, "DATABASE_URL": url, "VIGIL_ENV": "test",
                      "CLOCK": FixedClock(START), **FAST_ARGON2})
    engine = app.extensions["vigil.db"].engine
    try:
        schema.upgrade(engine)
        yield app, seed(app, app.extensions["vigil.runtime"].clock).slug
    finally:
        engine.dispose()


def needles_in(raw: bytes, slug: str) -> list[str]:
    """Return the needles found in `raw`, which must hold the seeded organisation."""
    assert slug.encode() in raw, "the seeded data is not in what was read"
    assert b"v1." in raw, "no ciphertext in what was read"
    return [needle for needle in NEEDLES if needle.encode() in raw]


def sqlite_bytes(directory: Path, name: str) -> bytes:
    """Return the bytes of a SQLite database, its write-ahead log moved into the main file."""
    with sqlite3.connect(directory / name) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    conn.close()
    return b"".join(path.read_bytes() for path in directory.glob(f"{name}*"))


def dumped(pg_dump: str, url: str) -> bytes:
    """Return `pg_dump`'s plain output of the database at `url`."""
    conninfo = make_url(url).set(drivername="postgresql")
    done = subprocess.run(  # noqa: S603 - a fixed command, no shell
        [pg_dump, "--no-owner", "--dbname", conninfo.render_as_string(hide_password=False)],
        capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_sqlite_file_holds_no_phi_in_clear(tmp_path):
    with seeded_app(tmp_path, f"sqlite:///{tmp_path / 'vigil.sqlite3'}") as (_app, slug):
        pass
    assert needles_in(sqlite_bytes(tmp_path, "vigil.sqlite3"), slug) == []


@pytest.fixture
def pg_dump() -> str:
    """Return the path of pg_dump; skip without it, except in CI."""
    path = shutil.which("pg_dump")
    if path is None:
        if IN_CI:
            pytest.fail("CI=true and pg_dump is not installed")
        pytest.skip("pg_dump is not installed")
    return path


@contextmanager
def own_postgres(suffix: str) -> Iterator[str]:
    """Yield the URL of an empty PostgreSQL database of its own, for committed data."""
    require_postgres(POSTGRES_URL)
    target = make_url(POSTGRES_URL)
    url = target.set(database=f"{target.database}_{suffix}")
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


@pytest.fixture
def dump_database() -> Iterator[str]:
    """Create a PostgreSQL database of its own for committed data; drop it afterwards."""
    with own_postgres("phi_dump") as url:
        yield url


def test_pg_dump_holds_no_phi_in_clear(tmp_path, pg_dump, dump_database):
    with seeded_app(tmp_path, dump_database) as (_app, slug):
        pass
    assert needles_in(dumped(pg_dump, dump_database), slug) == []
