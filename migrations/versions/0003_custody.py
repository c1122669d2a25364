"""custody ledger

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "custody_checkpoint",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_custody_checkpoint_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_checkpoint")),
        sa.UniqueConstraint(
            "organisation_id", "seq", name=op.f("uq_custody_checkpoint_organisation_id")
        ),
    )
    op.create_table(
        "custody_head",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_custody_head_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("organisation_id", name=op.f("pk_custody_head")),
    )
    op.create_table(
        "custody_balance",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("holder", sa.String(length=60), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("lot", sa.String(length=40), nullable=False),
        sa.Column("expiry", sa.Date(), nullable=False),
        sa.Column("quantity_ug", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_custody_balance_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["drug_product.id"],
            name=op.f("fk_custody_balance_product_id_drug_product"),
        ),
        sa.PrimaryKeyConstraint(
            "organisation_id", "holder", "product_id", "lot", name=op.f("pk_custody_balance")
        ),
    )
    op.create_table(
        "custody_entry",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("lot", sa.String(length=40), nullable=False),
        sa.Column("expiry", sa.Date(), nullable=False),
        sa.Column("quantity_ug", sa.Integer(), nullable=False),
        sa.Column("from_holder", sa.String(length=60), nullable=False),
        sa.Column("to_holder", sa.String(length=60), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("device_signature", sa.String(length=100), nullable=True),
        sa.Column("visit_id", sa.Uuid(), nullable=True),
        sa.Column("corrects_id", sa.Uuid(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("confirmations", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["app_user.id"], name=op.f("fk_custody_entry_actor_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["corrects_id"],
            ["custody_entry.id"],
            name=op.f("fk_custody_entry_corrects_id_custody_entry"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_custody_entry_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_custody_entry_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["drug_product.id"],
            name=op.f("fk_custody_entry_product_id_drug_product"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_custody_entry_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_entry")),
        sa.UniqueConstraint(
            "organisation_id", "seq", name=op.f("uq_custody_entry_organisation_id")
        ),
    )
    with op.batch_alter_table("custody_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_custody_entry_org_from", ["organisation_id", "from_holder"], unique=False
        )
        batch_op.create_index(
            "ix_custody_entry_org_occurred", ["organisation_id", "occurred_at"], unique=False
        )
        batch_op.create_index(
            "ix_custody_entry_org_to", ["organisation_id", "to_holder"], unique=False
        )
    make_append_only(op, "custody_entry")

    op.create_table(
        "loss_report",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("discovered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notice_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("form_106_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notice_filed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("form_106_filed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("circumstances", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["custody_entry.id"], name=op.f("fk_loss_report_entry_id_custody_entry")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_loss_report_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loss_report")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_loss_report_entry_id")),
    )
    with op.batch_alter_table("loss_report", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loss_report_organisation_id"), ["organisation_id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("loss_report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loss_report_organisation_id"))

    op.drop_table("loss_report")
    with op.batch_alter_table("custody_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_custody_entry_org_to")
        batch_op.drop_index("ix_custody_entry_org_occurred")
        batch_op.drop_index("ix_custody_entry_org_from")

    drop_append_only(op, "custody_entry")
    op.drop_table("custody_entry")
    op.drop_table("custody_balance")
    op.drop_table("custody_head")
    op.drop_table("custody_checkpoint")
