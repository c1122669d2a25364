"""administration sessions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

APPEND_ONLY = (
    "pre_dose",
    "dose_administration",
    "monitoring_observation",
    "discharge",
    "outcome_score",
    "quarantined_event",
)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "discharge",
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("adverse_event_category", sa.String(length=40), nullable=False),
        sa.Column("adverse_events_enc", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_signature", sa.String(length=100), nullable=False),
        sa.Column("signed_body", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("systolic", sa.Integer(), nullable=True),
        sa.Column("diastolic", sa.Integer(), nullable=True),
        sa.Column("heart_rate", sa.Integer(), nullable=True),
        sa.Column("spo2", sa.Integer(), nullable=True),
        sa.Column("respiratory_rate", sa.Integer(), nullable=True),
        sa.Column("moaas", sa.Integer(), nullable=True),
        sa.Column("cadss_items", sa.JSON(), nullable=True),
        sa.Column("cadss_total", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_discharge_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_discharge_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_discharge_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_discharge_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discharge")),
        sa.UniqueConstraint("visit_id", name=op.f("uq_discharge_visit_id")),
    )
    with op.batch_alter_table("discharge", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_discharge_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_discharge_visit_id"), ["visit_id"], unique=False)

    op.create_table(
        "monitoring_observation",
        sa.Column("bprs_items", sa.JSON(), nullable=True),
        sa.Column("bprs_total", sa.Integer(), nullable=True),
        sa.Column("client_totals", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_signature", sa.String(length=100), nullable=False),
        sa.Column("signed_body", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("systolic", sa.Integer(), nullable=True),
        sa.Column("diastolic", sa.Integer(), nullable=True),
        sa.Column("heart_rate", sa.Integer(), nullable=True),
        sa.Column("spo2", sa.Integer(), nullable=True),
        sa.Column("respiratory_rate", sa.Integer(), nullable=True),
        sa.Column("moaas", sa.Integer(), nullable=True),
        sa.Column("cadss_items", sa.JSON(), nullable=True),
        sa.Column("cadss_total", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_monitoring_observation_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_monitoring_observation_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_monitoring_observation_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_monitoring_observation_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_observation")),
    )
    with op.batch_alter_table("monitoring_observation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_monitoring_observation_organisation_id"),
            ["organisation_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_monitoring_observation_visit_id"), ["visit_id"], unique=False
        )

    op.create_table(
        "outcome_score",
        sa.Column("instrument", sa.String(length=10), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_signature", sa.String(length=100), nullable=False),
        sa.Column("signed_body", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_outcome_score_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_outcome_score_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_outcome_score_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_outcome_score_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome_score")),
    )
    with op.batch_alter_table("outcome_score", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outcome_score_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outcome_score_visit_id"), ["visit_id"], unique=False)

    op.create_table(
        "pre_dose",
        sa.Column("co_medications", sa.JSON(), nullable=False),
        sa.Column("weight_g", sa.Integer(), nullable=True),
        sa.Column("weight_measured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("bp_justification", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_signature", sa.String(length=100), nullable=False),
        sa.Column("signed_body", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("systolic", sa.Integer(), nullable=True),
        sa.Column("diastolic", sa.Integer(), nullable=True),
        sa.Column("heart_rate", sa.Integer(), nullable=True),
        sa.Column("spo2", sa.Integer(), nullable=True),
        sa.Column("respiratory_rate", sa.Integer(), nullable=True),
        sa.Column("moaas", sa.Integer(), nullable=True),
        sa.Column("cadss_items", sa.JSON(), nullable=True),
        sa.Column("cadss_total", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_pre_dose_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_pre_dose_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_pre_dose_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_pre_dose_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pre_dose")),
        sa.UniqueConstraint("visit_id", name=op.f("uq_pre_dose_visit_id")),
    )
    with op.batch_alter_table("pre_dose", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pre_dose_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_pre_dose_visit_id"), ["visit_id"], unique=False)

    op.create_table(
        "quarantined_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("record_type", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=True),
        sa.Column("visit_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_quarantined_event_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_quarantined_event_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_quarantined_event_user_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_quarantined_event_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_event")),
    )
    with op.batch_alter_table("quarantined_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantined_event_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "dose_administration",
        sa.Column("plan_version_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("lot", sa.String(length=40), nullable=False),
        sa.Column("expiry", sa.Date(), nullable=False),
        sa.Column("quantity_ug", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(length=20), nullable=False),
        sa.Column("infusion_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("infusion_ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("weight_g", sa.Integer(), nullable=True),
        sa.Column("ug_per_kg", sa.Numeric(precision=10, scale=3), nullable=True),
        sa.Column("custody_entry_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_signature", sa.String(length=100), nullable=False),
        sa.Column("signed_body", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["custody_entry_id"],
            ["custody_entry.id"],
            name=op.f("fk_dose_administration_custody_entry_id_custody_entry"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_dose_administration_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_dose_administration_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_dose_administration_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_version_id"],
            ["plan_version.id"],
            name=op.f("fk_dose_administration_plan_version_id_plan_version"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["drug_product.id"],
            name=op.f("fk_dose_administration_product_id_drug_product"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_dose_administration_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dose_administration")),
        sa.UniqueConstraint("visit_id", name=op.f("uq_dose_administration_visit_id")),
    )
    with op.batch_alter_table("dose_administration", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dose_administration_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dose_administration_visit_id"), ["visit_id"], unique=False
        )
    for table in APPEND_ONLY:
        make_append_only(op, table)


def downgrade() -> None:
    """Revert this revision."""
    for table in APPEND_ONLY:
        drop_append_only(op, table)
    with op.batch_alter_table("dose_administration", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dose_administration_visit_id"))
        batch_op.drop_index(batch_op.f("ix_dose_administration_organisation_id"))

    op.drop_table("dose_administration")
    with op.batch_alter_table("quarantined_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantined_event_organisation_id"))

    op.drop_table("quarantined_event")
    with op.batch_alter_table("pre_dose", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pre_dose_visit_id"))
        batch_op.drop_index(batch_op.f("ix_pre_dose_organisation_id"))

    op.drop_table("pre_dose")
    with op.batch_alter_table("outcome_score", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outcome_score_visit_id"))
        batch_op.drop_index(batch_op.f("ix_outcome_score_organisation_id"))

    op.drop_table("outcome_score")
    with op.batch_alter_table("monitoring_observation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitoring_observation_visit_id"))
        batch_op.drop_index(batch_op.f("ix_monitoring_observation_organisation_id"))

    op.drop_table("monitoring_observation")
    with op.batch_alter_table("discharge", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_discharge_visit_id"))
        batch_op.drop_index(batch_op.f("ix_discharge_organisation_id"))

    op.drop_table("discharge")
