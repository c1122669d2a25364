"""A pooled PostgreSQL connection the server closed is replaced before a request uses it."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from backend.db import build_engine
from tests.backend.conftest import POSTGRES_URL, require_postgres

BACKEND_PID = text("SELECT pg_backend_pid()")


def test_a_connection_the_server_closed_is_replaced_and_a_live_one_kept():
    require_postgres(POSTGRES_URL)
    engine = build_engine(POSTGRES_URL)
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            first = conn.scalar(BACKEND_PID)
        with engine.connect() as conn:
            assert conn.scalar(BACKEND_PID) == first, "a live idle connection is reused"
        with admin.connect() as conn:
            assert conn.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first})
        # As after a server restart: the next checkout gets a working connection, no error.
        with engine.connect() as conn:
            assert conn.scalar(BACKEND_PID) != first
            assert conn.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()
        admin.dispose()
