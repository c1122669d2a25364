"""cases and refusals: a flag counts the distinct occurrences of its case; refused custody writes

Revision ID: 0018_cases_refusals
Revises: 0017_plan_justification
Create Date: 2026-12-07

Issue 17 items 5 and 8. A flag is a case (a rule and its root cause: a plan, a nurse and a
patient's home, a bag); `flag_occurrence` holds each distinct event of it once (unique on the
flag and the event's key), so the nightly re-check of the same dose counts nothing, and
`flag.occurrence_key` names the event whose evidence the flag shows. An existing flag becomes
a case of one occurrence, its own key: its old count was of re-checks, not of events.
`custody_refusal` keeps each custody write refused at the door (wrong seal, too little stock,
no witness) after its rollback, append-only, with ids and quantities only (no PHI).
"""

import uuid

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

revision = "0018_cases_refusals"
down_revision = "0017_plan_justification"
branch_labels = None
depends_on = None

FLAG = sa.table("flag", sa.column("id", sa.Uuid()), sa.column("organisation_id", sa.Uuid()),
                sa.column("dedup_key", sa.String()), sa.column("severity", sa.String()),
                sa.column("first_seen_at", sa.DateTime(timezone=True)),
                sa.column("occurrences", sa.Integer()),
                sa.column("occurrence_key", sa.String()))


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("flag") as batch:
        batch.add_column(sa.Column("occurrence_key", sa.String(length=64), nullable=True))
    occurrence = op.create_table(
        "flag_occurrence",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flag_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("occurrence_key", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["flag_id"], ["flag.id"]),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("flag_id", "occurrence_key"),
    )
    op.create_index("ix_flag_occurrence_organisation_id", "flag_occurrence",
                    ["organisation_id"])
    _one_occurrence_each(occurrence)
    op.create_table(
        "custody_refusal",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("nurse_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=60), nullable=True),
        sa.Column("product_id", sa.Uuid(), nullable=True),
        sa.Column("lot", sa.String(length=40), nullable=True),
        sa.Column("visit_id", sa.Uuid(), nullable=True),
        sa.Column("quantity_ug", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisation.id"]),
        sa.ForeignKeyConstraint(["actor_id"], ["app_user.id"]),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"]),
        sa.ForeignKeyConstraint(["nurse_id"], ["app_user.id"]),
        sa.ForeignKeyConstraint(["product_id"], ["drug_product.id"]),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_custody_refusal_org_nurse_at", "custody_refusal",
                    ["organisation_id", "nurse_id", "at"])
    make_append_only(op, "custody_refusal")


def _one_occurrence_each(occurrence: sa.Table) -> None:
    """Make each existing flag a case of one occurrence, keyed by its own dedup key."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(FLAG.c.id, FLAG.c.organisation_id, FLAG.c.dedup_key,
                                  FLAG.c.severity, FLAG.c.first_seen_at)).all()
    if rows:
        op.bulk_insert(occurrence, [
            {"id": uuid.uuid4(), "flag_id": row.id, "organisation_id": row.organisation_id,
             "occurrence_key": row.dedup_key, "severity": row.severity,
             "first_seen_at": row.first_seen_at} for row in rows])
    bind.execute(FLAG.update().values(occurrences=1, occurrence_key=FLAG.c.dedup_key))


def downgrade() -> None:
    """Revert this revision."""
    drop_append_only(op, "custody_refusal")
    op.drop_index("ix_custody_refusal_org_nurse_at", table_name="custody_refusal")
    op.drop_table("custody_refusal")
    op.drop_index("ix_flag_occurrence_organisation_id", table_name="flag_occurrence")
    op.drop_table("flag_occurrence")
    with op.batch_alter_table("flag") as batch:
        batch.drop_column("occurrence_key")
