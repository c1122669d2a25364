"""Alembic builds the whole schema, and every revision can be undone, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, insert, inspect, text, update
from sqlalchemy.exc import DBAPIError

from backend import schema

TABLES = {"organisation", "app_user", "device", "token_family", "refresh_token",
          "login_failure", "audit_event", "patient", "patient_nurse"}
AUDIT_EVENT = schema.metadata.tables["audit_event"]


def revisions_from_base() -> list[str]:
    """Return every revision id in the order they apply."""
    script = ScriptDirectory(str(schema.MIGRATIONS))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def app_tables(engine) -> set[str]:
    """Return the tables in the database, apart from Alembic's own bookkeeping."""
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def leftover_functions(engine) -> list[str]:
    """Return the functions left in PostgreSQL's public schema (none exist on SQLite)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        return list(conn.scalars(text(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'")))


def record_audit_event(engine) -> uuid.UUID:
    """Insert one audit event and return its id."""
    event_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert(AUDIT_EVENT).values(
            id=event_id, action="test.event", object_type="test",
            occurred_at=datetime(2026, 11, 2, 14, 0, tzinfo=UTC), detail={}))
    return event_id


def test_upgrade_creates_every_table(empty_engine):
    schema.upgrade(empty_engine)
    assert app_tables(empty_engine) >= TABLES
    assert schema.current(empty_engine) == revisions_from_base()[-1]


def test_downgrade_to_base_empties_the_database(empty_engine):
    schema.upgrade(empty_engine)
    # A stored event proves the append-only triggers do not block dropping the table.
    record_audit_event(empty_engine)
    schema.downgrade(empty_engine, "base")
    assert app_tables(empty_engine) == set()
    assert leftover_functions(empty_engine) == []
    assert schema.current(empty_engine) is None

    schema.upgrade(empty_engine)
    assert app_tables(empty_engine) >= TABLES


def test_every_revision_steps_up_and_down(empty_engine):
    revisions = revisions_from_base()
    for revision in revisions:
        schema.upgrade(empty_engine, revision)
        assert schema.current(empty_engine) == revision
    for below in [*reversed(revisions[:-1]), None]:
        schema.downgrade(empty_engine, below or "base")
        assert schema.current(empty_engine) == below
    assert app_tables(empty_engine) == set()
    assert leftover_functions(empty_engine) == []


@pytest.mark.parametrize("change", [
    pytest.param(lambda event_id: update(AUDIT_EVENT).where(AUDIT_EVENT.c.id == event_id)
                 .values(action="tampered"), id="update"),
    pytest.param(lambda event_id: delete(AUDIT_EVENT).where(AUDIT_EVENT.c.id == event_id),
                 id="delete"),
])
def test_audit_events_are_append_only(empty_engine, change):
    schema.upgrade(empty_engine)
    event_id = record_audit_event(empty_engine)
    with pytest.raises(DBAPIError, match="append_only"), empty_engine.begin() as conn:
        conn.execute(change(event_id))
    with empty_engine.connect() as conn:
        stored = conn.execute(AUDIT_EVENT.select()).one()
    assert (stored.id, stored.action) == (event_id, "test.event")


@pytest.mark.parametrize("empty_engine", ["postgresql"], indirect=True)
def test_audit_events_refuse_truncate_on_postgresql(empty_engine):
    schema.upgrade(empty_engine)
    record_audit_event(empty_engine)
    with pytest.raises(DBAPIError, match="append_only"), empty_engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_event"))
    with empty_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM audit_event")) == 1


def test_migrations_match_the_models(empty_engine):
    """The models and the migrated schema agree, so no change is left out of a revision."""
    schema.upgrade(empty_engine)
    with empty_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), schema.metadata)
    assert differences == []
