"""DDL that makes a table append-only in the database itself, on PostgreSQL and SQLite."""

from __future__ import annotations

from alembic.operations import Operations

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION vigil_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'append_only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$
"""


def make_append_only(op: Operations, table: str) -> None:
    """Refuse every UPDATE and DELETE (and TRUNCATE on PostgreSQL) on `table`."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION vigil_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION vigil_refuse_change()")
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                   f"SELECT RAISE(ABORT, 'append_only: {verb} on {table} is not allowed'); END")


def drop_append_only(op: Operations, table: str) -> None:
    """Remove the triggers `make_append_only` created on `table`."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        return
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")


def drop_refuse_function(op: Operations) -> None:
    """Remove the PostgreSQL function behind the triggers, once no table uses it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS vigil_refuse_change()")
