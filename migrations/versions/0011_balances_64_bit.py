"""balances 64-bit: what a holder holds of a lot no longer overflows at 2,147,483,647 µg

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-08

A third receipt of 1,000,000,000 µg into one lot overflowed `custody_balance.quantity_ug`, a
32-bit integer, and answered 500. The column becomes 64-bit; the ledger refuses a deposit
that would take a balance past 2^53 − 1 µg (what a phone's JavaScript holds exactly) with 409
`balance_limit`. Each entry still moves at most 1,000,000,000 µg, so `custody_entry` keeps
its 32-bit quantity (and its append-only triggers: it is not copied). On SQLite an INTEGER is
already 64-bit: the table is rebuilt only for the declared type.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("custody_balance", schema=None) as batch_op:
        batch_op.alter_column("quantity_ug", existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    """Revert this revision; a balance beyond 32 bits makes it fail rather than truncate."""
    with op.batch_alter_table("custody_balance", schema=None) as batch_op:
        batch_op.alter_column("quantity_ug", existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=False)
