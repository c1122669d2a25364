"""scheduling: products, plans, visits, evv, flags, jobs, patient details

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "job_run",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job", sa.String(length=60), nullable=False),
        sa.Column("slot", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_run")),
        sa.UniqueConstraint("job", "slot", name=op.f("uq_job_run_job")),
    )
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_lease")),
    )
    op.create_table(
        "drug_product",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active_ingredient", sa.String(length=100), nullable=False),
        sa.Column("dea_schedule", sa.String(length=3), nullable=False),
        sa.Column("form", sa.String(length=30), nullable=False),
        sa.Column("unit", sa.String(length=10), nullable=False),
        sa.Column("ug_per_unit", sa.Integer(), nullable=False),
        sa.Column("units_per_container", sa.Numeric(precision=10, scale=3), nullable=False),
        sa.Column("allowed_routes", sa.JSON(), nullable=False),
        sa.Column("home_administration_allowed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_drug_product_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drug_product")),
        sa.UniqueConstraint(
            "organisation_id", "name", name=op.f("uq_drug_product_organisation_id")
        ),
    )
    with op.batch_alter_table("drug_product", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_drug_product_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "flag",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.String(length=80), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_flag_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag")),
        sa.UniqueConstraint("organisation_id", "dedup_key", name=op.f("uq_flag_organisation_id")),
    )
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.create_index("ix_flag_org_status", ["organisation_id", "status"], unique=False)

    op.create_table(
        "notification",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("recipient_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject_type", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_notification_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["app_user.id"], name=op.f("fk_notification_recipient_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_notification_dedup_key")),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notification_recipient_id"), ["recipient_id"], unique=False
        )

    op.create_table(
        "patient_weight",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("weight_g", sa.Integer(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by_id", sa.Uuid(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_weight_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"],
            ["app_user.id"],
            name=op.f("fk_patient_weight_recorded_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_weight")),
    )
    with op.batch_alter_table("patient_weight", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_weight_patient_at", ["patient_id", "measured_at"], unique=False
        )

    op.create_table(
        "treatment_plan",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["app_user.id"],
            name=op.f("fk_treatment_plan_created_by_id_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_treatment_plan_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_treatment_plan_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_treatment_plan")),
    )
    with op.batch_alter_table("treatment_plan", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_treatment_plan_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_treatment_plan_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "plan_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("route", sa.String(length=20), nullable=False),
        sa.Column("dose_ug_per_kg", sa.Integer(), nullable=True),
        sa.Column("dose_ug", sa.Integer(), nullable=True),
        sa.Column("max_dose_ug", sa.Integer(), nullable=False),
        sa.Column("infusion_minutes", sa.Integer(), nullable=False),
        sa.Column("prescriber_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["treatment_plan.id"], name=op.f("fk_plan_version_plan_id_treatment_plan")
        ),
        sa.ForeignKeyConstraint(
            ["prescriber_id"], ["app_user.id"], name=op.f("fk_plan_version_prescriber_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["drug_product.id"],
            name=op.f("fk_plan_version_product_id_drug_product"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_version")),
        sa.UniqueConstraint("plan_id", "version", name=op.f("uq_plan_version_plan_id")),
    )
    with op.batch_alter_table("plan_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_version_plan_id"), ["plan_id"], unique=False)

    op.create_table(
        "plan_phase",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("dose_ug_per_kg", sa.Integer(), nullable=True),
        sa.Column("dose_ug", sa.Integer(), nullable=True),
        sa.Column("min_interval_hours", sa.Integer(), nullable=False),
        sa.Column("max_per_7_days", sa.Integer(), nullable=False),
        sa.Column("max_per_28_days", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["plan_version.id"], name=op.f("fk_plan_phase_version_id_plan_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_phase")),
        sa.UniqueConstraint("version_id", "ordinal", name=op.f("uq_plan_phase_version_id")),
    )
    with op.batch_alter_table("plan_phase", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_phase_version_id"), ["version_id"], unique=False)

    op.create_table(
        "visit",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("plan_version_id", sa.Uuid(), nullable=False),
        sa.Column("phase_ordinal", sa.Integer(), nullable=False),
        sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("series_id", sa.Uuid(), nullable=True),
        sa.Column("rescheduled_from_id", sa.Uuid(), nullable=True),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("override_reason", sa.Text(), nullable=True),
        sa.Column("override_by_id", sa.Uuid(), nullable=True),
        sa.Column("checked_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["app_user.id"], name=op.f("fk_visit_created_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_visit_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_visit_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["override_by_id"], ["app_user.id"], name=op.f("fk_visit_override_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_visit_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["plan_version_id"],
            ["plan_version.id"],
            name=op.f("fk_visit_plan_version_id_plan_version"),
        ),
        sa.ForeignKeyConstraint(
            ["rescheduled_from_id"], ["visit.id"], name=op.f("fk_visit_rescheduled_from_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit")),
    )
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.create_index("ix_visit_nurse_start", ["nurse_id", "scheduled_start"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_visit_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            "ix_visit_patient_start", ["patient_id", "scheduled_start"], unique=False
        )

    op.create_table(
        "evv_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("latitude", sa.Numeric(precision=9, scale=6), nullable=False),
        sa.Column("longitude", sa.Numeric(precision=9, scale=6), nullable=False),
        sa.Column("accuracy_m", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("distance_m", sa.Integer(), nullable=True),
        sa.Column("radius_m", sa.Integer(), nullable=False),
        sa.Column("within_radius", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_evv_event_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_evv_event_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_evv_event_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_evv_event_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evv_event")),
    )
    with op.batch_alter_table("evv_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evv_event_visit_id"), ["visit_id"], unique=False)
    make_append_only(op, "evv_event")

    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("phone_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("emergency_contact_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("notes_enc", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("home_latitude", sa.Numeric(precision=9, scale=6), nullable=True)
        )
        batch_op.add_column(
            sa.Column("home_longitude", sa.Numeric(precision=9, scale=6), nullable=True)
        )
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "policy_override",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("value", sa.String(length=40), nullable=False),
        sa.Column("set_by_id", sa.Uuid(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisation.id"],
            name=op.f("fk_policy_override_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["set_by_id"], ["app_user.id"], name=op.f("fk_policy_override_set_by_id_app_user")
        ),
        sa.PrimaryKeyConstraint("organisation_id", "name", name=op.f("pk_policy_override")),
    )
    op.create_index(
        "uq_patient_nurse_open", "patient_nurse", ["patient_id", "nurse_id"], unique=True,
        sqlite_where=sa.text("ended_at IS NULL"), postgresql_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("uq_patient_nurse_open", table_name="patient_nurse")
    op.drop_table("policy_override")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("home_longitude")
        batch_op.drop_column("home_latitude")
        batch_op.drop_column("notes_enc")
        batch_op.drop_column("emergency_contact_enc")
        batch_op.drop_column("phone_enc")
        batch_op.drop_column("address_enc")

    with op.batch_alter_table("evv_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evv_event_visit_id"))

    drop_append_only(op, "evv_event")
    op.drop_table("evv_event")
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.drop_index("ix_visit_patient_start")
        batch_op.drop_index(batch_op.f("ix_visit_organisation_id"))
        batch_op.drop_index("ix_visit_nurse_start")

    op.drop_table("visit")
    with op.batch_alter_table("plan_phase", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_phase_version_id"))

    op.drop_table("plan_phase")
    with op.batch_alter_table("plan_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_version_plan_id"))

    op.drop_table("plan_version")
    with op.batch_alter_table("treatment_plan", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_treatment_plan_patient_id"))
        batch_op.drop_index(batch_op.f("ix_treatment_plan_organisation_id"))

    op.drop_table("treatment_plan")
    with op.batch_alter_table("patient_weight", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_weight_patient_at")

    op.drop_table("patient_weight")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_recipient_id"))
        batch_op.drop_index(batch_op.f("ix_notification_organisation_id"))

    op.drop_table("notification")
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.drop_index("ix_flag_org_status")

    op.drop_table("flag")
    with op.batch_alter_table("drug_product", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drug_product_organisation_id"))

    op.drop_table("drug_product")
    op.drop_table("scheduler_lease")
    op.drop_table("job_run")
