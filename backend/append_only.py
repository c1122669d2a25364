"""DDL that makes a table append-only in the database itself, on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from alembic.operations import Operations

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION vigil_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'append_only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$
"""


def _update_of(op: Operations, table: str, rewritable: Collection[str]) -> str:
    """Return `UPDATE`, or `UPDATE OF` every column but the rewritable ones."""
    if not rewritable:
        return "UPDATE"
    columns = [column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)]
    return "UPDATE OF " + ", ".join(name for name in columns if name not in rewritable)


def make_append_only(op: Operations, table: str, rewritable: Collection[str] = ()) -> None:
    """Refuse every UPDATE and DELETE (and TRUNCATE on PostgreSQL) on `table`.

    `rewritable` names PHI ciphertext columns that key rotation re-encrypts in place: an
    UPDATE that sets only those passes; one that names any other column is refused. The
    trigger lists the table's columns as they are now, so a revision that adds a column to
    such a table makes the table append-only again.
    """
    update = _update_of(op, table, rewritable)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE {update} OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION vigil_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION vigil_refuse_change()")
        return
    for verb, event in (("UPDATE", update), ("DELETE", "DELETE")):
        op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {event} ON {table} BEGIN "
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
