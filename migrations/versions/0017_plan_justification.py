"""plan justification: why a plan version's dose is above the protocol dose

Revision ID: 0017_plan_justification
Revises: 0016
Create Date: 2026-12-07

Issue 17 item 4. A plan version whose dose (or any phase's dose) is above the protocol dose
carries the prescriber's justification, written as PHI: `dose_justification_enc`, AES-GCM
ciphertext under the active PHI key bound to (organisation, plan_version, dose_justification,
row), like the change reason beside it, so key rotation re-encrypts it. Nullable: versions from
before this upgrade, and versions at or below the protocol dose, carry none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_plan_justification"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("plan_version") as batch:
        batch.add_column(sa.Column("dose_justification_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("plan_version") as batch:
        batch.drop_column("dose_justification_enc")
