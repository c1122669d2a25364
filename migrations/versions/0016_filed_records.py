"""records that file as they are: registrant address, NDCs, contacts, sex, Form 106, inventories

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

Issue 15. The registrant carries its address, phone and registration expiry, which every DEA
record prints; users carry a phone and email (the REMS form names how to reach the clinician);
a product carries its NDC (11 digits), package description and RxNorm code; a patient carries
administrative sex as ciphertext; a discharge keeps when the patient was ready to leave and
whether breathing was depressed; a loss report keeps what Form 106 asks beyond the entry (type
of loss, police report). An inventory taken under 21 CFR 1304.11 is kept as signed, line by
line, with its hash. Every new column is nullable: rows from before this upgrade show the
fields blank.
"""

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ORGANISATION = (("address_line", sa.String(length=200)), ("city", sa.String(length=100)),
                ("state", sa.String(length=2)), ("postal_code", sa.String(length=10)),
                ("phone", sa.String(length=30)), ("dea_expires_on", sa.Date()))
USER = (("phone", sa.String(length=30)), ("email", sa.String(length=254)))
PRODUCT = (("ndc", sa.String(length=11)), ("package_description", sa.String(length=200)),
           ("rxnorm_code", sa.String(length=12)))
DISCHARGE = (("ready_to_leave_at", sa.DateTime(timezone=True)),
             ("respiratory_depression", sa.Boolean()))
LOSS = (("loss_type", sa.String(length=40)), ("police_report_number", sa.String(length=60)),
        ("police_agency", sa.String(length=200)),
        ("police_reported_at", sa.DateTime(timezone=True)))
# The discharge's append-only trigger lists every column but its ciphertext (which key rotation
# rewrites), as they stood when it was made: made again, it covers the new columns too.
DISCHARGE_REWRITABLE = ("signed_body_enc", "adverse_events_enc")
COLUMNS = {"organisation": ORGANISATION, "app_user": USER, "drug_product": PRODUCT,
           "patient": (("sex_enc", sa.Text()),), "discharge": DISCHARGE, "loss_report": LOSS}


def upgrade() -> None:
    """Apply this revision."""
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name, type_ in columns:
                batch.add_column(sa.Column(name, type_, nullable=True))
    drop_append_only(op, "discharge")
    make_append_only(op, "discharge", DISCHARGE_REWRITABLE)
    op.create_table(
        "inventory_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.String(length=10), nullable=False),
        sa.Column("taken_by_id", sa.Uuid(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature_method", sa.String(length=20), nullable=True),
        sa.Column("signature_factor_id", sa.Uuid(), nullable=True),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisation.id"],
                                name=op.f("fk_inventory_record_organisation_id_organisation")),
        sa.ForeignKeyConstraint(["taken_by_id"], ["app_user.id"],
                                name=op.f("fk_inventory_record_taken_by_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_record")),
    )
    op.create_index("ix_inventory_record_organisation_as_of", "inventory_record",
                    ["organisation_id", "as_of"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_inventory_record_organisation_as_of", table_name="inventory_record")
    op.drop_table("inventory_record")
    # A trigger that names a column keeps it from being dropped.
    drop_append_only(op, "discharge")
    for table, columns in reversed(COLUMNS.items()):
        with op.batch_alter_table(table) as batch:
            for name, _type in reversed(columns):
                batch.drop_column(name)
    make_append_only(op, "discharge", DISCHARGE_REWRITABLE)
