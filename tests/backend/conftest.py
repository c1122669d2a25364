"""Run every database test on SQLite and PostgreSQL, each test inside a rolled-back transaction."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from backend import config, create_app, schema
from backend.clock import FixedClock
from backend.db import build_engine
from tests.factories import World

POSTGRES_URL = os.environ.get(
    "VIGIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/vigil_test")
IN_CI = os.environ.get("CI", "").lower() == "true"
START = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
# Cheap argon2 parameters keep the suite fast; bench/auth.py measures the real ones.
FAST_ARGON2 = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024, "ARGON2_PARALLELISM": 1}
RAN_ON: set[str] = set()


def postgres_available(url: str) -> bool:
    """Tell whether PostgreSQL answers at `url`, creating its database if it is missing."""
    target = make_url(url)
    try:
        admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                               {"name": target.database}):
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
        admin.dispose()
        return True
    except OperationalError:
        return False


def require_postgres(url: str) -> None:
    """Skip when PostgreSQL is missing, except in CI, where that is a failure."""
    if postgres_available(url):
        return
    if IN_CI:
        pytest.fail(f"CI=true and PostgreSQL is unreachable at {url}")
    pytest.skip(f"PostgreSQL unreachable at {url}")


def reset_postgres(url: str) -> None:
    """Empty the PostgreSQL test database so migrations start from nothing."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Remove every Vigil setting from the environment so only the test's values count."""
    for setting in config.SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv("VIGIL_INSTANCE_PATH", raising=False)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> str:
    """Return a freshly migrated database URL, one per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'vigil.sqlite3'}"
    else:
        require_postgres(POSTGRES_URL)
        reset_postgres(POSTGRES_URL)
        url = POSTGRES_URL
    engine = build_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    RAN_ON.add(request.param)
    return url


@pytest.fixture(scope="session")
def instance_path(tmp_path_factory):
    """Return one instance folder for the session, where development keys are generated once."""
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="session")
def engine(database_url):
    """Return the session's engine on the migrated database."""
    engine = build_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine):
    """Yield a connection inside a transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def clock() -> FixedClock:
    """Return a clock the test can move."""
    return FixedClock(START)


def make_app(database_url: str, instance_path, clock: FixedClock, **overrides):
    """Build an app for tests on `database_url`."""
    return create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": instance_path,
                       "CLOCK": clock, "VIGIL_ENV": "test", **FAST_ARGON2, **overrides})


def own_postgres_database(suffix: str) -> str:
    """Return the URL of a freshly migrated PostgreSQL database named after the test one."""
    target = make_url(POSTGRES_URL)
    url = target.set(database=f"{target.database}_{suffix}").render_as_string(
        hide_password=False)
    require_postgres(url)
    reset_postgres(url)
    engine = build_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    return url


@contextlib.contextmanager
def own_postgres_app(instance_path, suffix: str) -> Iterator[Flask]:
    """Yield an app on a freshly migrated PostgreSQL database of its own, dropped afterwards.

    For tests whose data must be committed and seen by many connections at once.
    """
    url = own_postgres_database(suffix)
    target = make_url(url)
    app = make_app(url, instance_path, FixedClock(START))
    try:
        yield app
    finally:
        app.extensions["vigil.db"].engine.dispose()
        admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{target.database}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request, tmp_path):
    """Yield an engine on an empty database of the test module's own, apart from the session's."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / f'{name}.sqlite3'}"
    else:
        target = make_url(POSTGRES_URL)
        url = target.set(database=f"{target.database}_{name}").render_as_string(
            hide_password=False)
        require_postgres(url)
        reset_postgres(url)
    engine = build_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(database_url, instance_path, clock, connection):
    """Return an app whose sessions commit into savepoints of the test's transaction."""
    app = make_app(database_url, instance_path, clock)
    app.extensions["vigil.db"].use_connection(connection)
    yield app
    app.extensions["vigil.db"].engine.dispose()


@pytest.fixture
def client(app):
    """Return a test client of `app`."""
    return app.test_client()


@pytest.fixture
def world(app) -> World:
    """Return a builder of organisations, users and logins inside the test's transaction."""
    return World(app)


def pytest_report_header(config) -> str:
    """Say which PostgreSQL the suite will use besides SQLite."""
    return f"databases: sqlite (temporary file), postgresql ({POSTGRES_URL})"


def pytest_terminal_summary(terminalreporter) -> None:
    """Say which databases the suite actually ran against."""
    ran = ", ".join(sorted(RAN_ON)) or "none"
    terminalreporter.write_line(f"database tests ran on: {ran}")
