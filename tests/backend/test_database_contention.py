"""Contention between transactions: SQLite writers queue, and what the database refuses is mapped.

A SQLite transaction takes the write lock at BEGIN, so one that read before another writer
committed waits for its turn instead of failing. A key taken by a racing request answers 409,
a database still busy after the wait 503 with Retry-After, any other breach 500.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from backend import db, errors
from backend.db import build_engine
from tests.backend.sync.test_concurrent_phones import sqlite_app

HELD_SECONDS = 0.3


def test_a_sqlite_writer_waits_for_the_lock_instead_of_failing(tmp_path):
    engine = build_engine(f"sqlite:///{tmp_path / 'queue.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE visit_note (writer TEXT NOT NULL)"))
    first_read, first_done = threading.Event(), threading.Event()

    def first() -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT count(*) FROM visit_note")).scalar_one()
            first_read.set()
            # Long enough for the second writer to commit in between, were it not queued.
            time.sleep(HELD_SECONDS)
            conn.execute(text("INSERT INTO visit_note VALUES ('first')"))
        first_done.set()

    reader = threading.Thread(target=first)
    reader.start()
    assert first_read.wait(10)
    with engine.begin() as conn:
        assert first_done.is_set(), "the second transaction began while the first held it"
        conn.execute(text("INSERT INTO visit_note VALUES ('second')"))
    reader.join(10)
    with engine.connect() as conn:
        writers = conn.execute(text("SELECT writer FROM visit_note ORDER BY rowid")).scalars()
        assert list(writers) == ["first", "second"]
    engine.dispose()


def test_a_sqlite_lock_held_past_the_busy_timeout_answers_503(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    app = sqlite_app(tmp_path)
    holder = sqlite3.connect(tmp_path / "vigil.sqlite3", isolation_level=None)
    login = {"org": "nowhere", "username": "nobody", "password": "not the password"}
    try:
        holder.execute("BEGIN IMMEDIATE")
        busy = app.test_client().post("/api/v1/auth/login", json=login)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert busy.status_code == 503
    assert busy.json["error"]["code"] == "database_busy"
    assert busy.headers["Retry-After"] == "1"
    # Once the lock is free the same request is answered on its merits.
    assert app.test_client().post("/api/v1/auth/login", json=login).status_code == 401
    app.extensions["vigil.db"].engine.dispose()


def _refusal(connection, statement: str) -> DBAPIError:
    """Run `statement` in a savepoint and return what the database raised."""
    with pytest.raises(DBAPIError) as raised, connection.begin_nested():
        connection.execute(text(statement))
    return raised.value


def test_a_taken_key_answers_409_and_other_breaches_500(app: Flask, connection):
    connection.execute(text(
        "CREATE TEMPORARY TABLE probe (id INTEGER PRIMARY KEY, label TEXT NOT NULL)"))
    connection.execute(text("INSERT INTO probe VALUES (1, 'first')"))
    taken = _refusal(connection, "INSERT INTO probe VALUES (1, 'again')")
    missing = _refusal(connection, "INSERT INTO probe VALUES (2, NULL)")
    assert isinstance(taken, IntegrityError) and isinstance(missing, IntegrityError)
    with app.test_request_context():
        conflict = errors.handle_integrity_error(taken)
        breach = errors.handle_integrity_error(missing)
    assert conflict.status_code == 409
    assert conflict.json["error"]["code"] == "conflict"
    assert "again" not in conflict.get_data(as_text=True)
    assert breach.status_code == 500
    assert breach.json["error"]["code"] == "internal_error"


def test_an_operational_error_other_than_contention_answers_500(tmp_path):
    engine = build_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    with pytest.raises(OperationalError) as raised, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    engine.dispose()
    with Flask(__name__).test_request_context():
        answer = errors.handle_operational_error(raised.value)
    assert answer.status_code == 500
    assert answer.json["error"]["code"] == "internal_error"
