"""sync origin: the phone that pushed each synced row, and when each phone last began from zero

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Nothing is backfilled. A row synced before this revision has no known origin, so its phone
gets it as created, as before; a phone that has not pulled from zero since holds everything it
pushed after this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("sync_row", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin_device_id", sa.Uuid(), nullable=True))

    op.create_table(
        "sync_device",
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("first_pull_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_sync_device_device_id_device")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_sync_device")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("sync_device")
    with op.batch_alter_table("sync_row", schema=None) as batch_op:
        batch_op.drop_column("origin_device_id")
