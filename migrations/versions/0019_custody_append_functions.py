"""custody append functions: take the chain head and move the balances in one round trip

Revision ID: 0019_custody_append_functions
Revises: 0018_cases_refusals
Create Date: 2026-12-07

Issue 16. On PostgreSQL, `custody_lock_head` locks an organisation's chain head (creating it at
genesis) and returns its seq and hash; `custody_take_head` does that, looks for an entry
already stored under the new entry's id, withdraws and deposits, and says what it found, so an
append holds the head's lock for two statements and its commit instead of nine. The statements
are those `backend.custody.ledger` runs on SQLite, in the same order with the same conditions.
A no-op on SQLite.
"""

from alembic import op

revision = "0019_custody_append_functions"
down_revision = "0018_cases_refusals"
branch_labels = None
depends_on = None

# FOR NO KEY UPDATE is the lock an UPDATE of the row takes, as the SQLite path's lock does.
LOCK_HEAD = """
CREATE OR REPLACE FUNCTION custody_lock_head(
    p_organisation uuid, OUT locked_seq integer, OUT locked_hash varchar)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT h.seq, h.head_hash INTO locked_seq, locked_hash FROM custody_head h
        WHERE h.organisation_id = p_organisation FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO custody_head (organisation_id, seq, head_hash)
            VALUES (p_organisation, 0, repeat('0', 64)) ON CONFLICT DO NOTHING;
        SELECT h.seq, h.head_hash INTO locked_seq, locked_hash FROM custody_head h
            WHERE h.organisation_id = p_organisation FOR NO KEY UPDATE;
    END IF;
END $$
"""

# `p_from` and `p_to` are null for holders that keep no balance. The outcome is `stored` (the
# id holds an entry: nothing moved), `short` (with what the holder holds), `full`, or `taken`.
TAKE_HEAD = """
CREATE OR REPLACE FUNCTION custody_take_head(
    p_organisation uuid, p_entry uuid, p_product uuid, p_lot varchar, p_expiry date,
    p_quantity bigint, p_from varchar, p_to varchar, p_limit bigint,
    OUT locked_seq integer, OUT locked_hash varchar, OUT outcome text, OUT held_ug bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO locked_seq, locked_hash FROM custody_lock_head(p_organisation);
    IF EXISTS (SELECT 1 FROM custody_entry e WHERE e.id = p_entry) THEN
        outcome := 'stored';
        RETURN;
    END IF;
    IF p_from IS NOT NULL THEN
        UPDATE custody_balance b SET quantity_ug = b.quantity_ug - p_quantity
            WHERE b.organisation_id = p_organisation AND b.holder = p_from
              AND b.product_id = p_product AND b.lot = p_lot AND b.quantity_ug >= p_quantity;
        IF NOT FOUND THEN
            SELECT b.quantity_ug INTO held_ug FROM custody_balance b
                WHERE b.organisation_id = p_organisation AND b.holder = p_from
                  AND b.product_id = p_product AND b.lot = p_lot;
            held_ug := coalesce(held_ug, 0);
            outcome := 'short';
            RETURN;
        END IF;
    END IF;
    IF p_to IS NOT NULL THEN
        INSERT INTO custody_balance AS b (organisation_id, holder, product_id, lot, expiry,
                                          quantity_ug)
            VALUES (p_organisation, p_to, p_product, p_lot, p_expiry, p_quantity)
            ON CONFLICT (organisation_id, holder, product_id, lot)
            DO UPDATE SET quantity_ug = b.quantity_ug + p_quantity
                WHERE b.quantity_ug <= p_limit - p_quantity
            RETURNING b.quantity_ug INTO held_ug;
        IF NOT FOUND THEN
            outcome := 'full';
            RETURN;
        END IF;
    END IF;
    outcome := 'taken';
END $$
"""


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(LOCK_HEAD)
    op.execute(TAKE_HEAD)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION custody_take_head(uuid, uuid, uuid, varchar, date, bigint, "
               "varchar, varchar, bigint)")
    op.execute("DROP FUNCTION custody_lock_head(uuid)")
