"""window indexes: a nurse's doses and check-ins, and a holder's movements, read by window

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

The console's flag page reads the subject's week: a nurse's doses and check-ins, and the
movements of her bag and of the patient. Over 1,000,000 sessions those reads scanned whole
tables (`bench/console.py`: a nurse's flag page at p95 0.6–1.9 s). Each now has an index that
leads with the organisation and the holder or nurse and ends with the time read by window;
the ledger's two holder indexes gain `occurred_at` in place of the old two-column ones.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

HOLDERS = (("ix_custody_entry_org_from", "from_holder"), ("ix_custody_entry_org_to", "to_holder"))


def upgrade() -> None:
    """Apply this revision."""
    for name, holder in HOLDERS:
        op.drop_index(name, table_name="custody_entry")
        op.create_index(name, "custody_entry", ["organisation_id", holder, "occurred_at"])
    op.create_index("ix_dose_administration_org_nurse_started", "dose_administration",
                    ["organisation_id", "nurse_id", "infusion_started_at"])
    op.create_index("ix_evv_event_org_nurse_received", "evv_event",
                    ["organisation_id", "nurse_id", "received_at"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_evv_event_org_nurse_received", table_name="evv_event")
    op.drop_index("ix_dose_administration_org_nurse_started", table_name="dose_administration")
    for name, holder in HOLDERS:
        op.drop_index(name, table_name="custody_entry")
        op.create_index(name, "custody_entry", ["organisation_id", holder])
