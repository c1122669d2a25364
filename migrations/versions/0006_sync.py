"""sync: the change sequence, the change index, revocations, the push log, device clocks

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 5000
SYNC_ROW = sa.table(
    "sync_row",
    sa.column("table_name", sa.String()),
    sa.column("record_id", sa.Uuid()),
    sa.column("organisation_id", sa.Uuid()),
    sa.column("seq", sa.BigInteger()),
    sa.column("created_seq", sa.BigInteger()),
    sa.column("deleted", sa.Boolean()),
    sa.column("patient_id", sa.Uuid()),
    sa.column("nurse_id", sa.Uuid()),
    sa.column("peer_nurse_id", sa.Uuid()),
    sa.column("changed_at", sa.DateTime(timezone=True)),
)
SYNC_COUNTER = sa.table(
    "sync_counter",
    sa.column("organisation_id", sa.Uuid()),
    sa.column("value", sa.BigInteger()),
    sa.column("horizon", sa.BigInteger()),
)


def _t(name, *columns):
    return sa.table(
        name,
        *(
            sa.column(c, sa.Uuid()) if c.endswith("id") else sa.column(c, sa.String())
            for c in columns
        ),
    )


ORG = _t("organisation", "id")
PRODUCT = _t("drug_product", "id", "organisation_id")
PATIENT = _t("patient", "id", "organisation_id")
PLAN = _t("treatment_plan", "id", "organisation_id", "patient_id")
VERSION = _t("plan_version", "id", "plan_id")
VISIT = _t("visit", "id", "organisation_id", "patient_id")
CUSTODY = _t("custody_entry", "id", "organisation_id", "from_holder", "to_holder")
SIGNED = (
    ("evv_event", "evv_events"),
    ("pre_dose", "pre_doses"),
    ("dose_administration", "doses"),
    ("monitoring_observation", "observations"),
    ("discharge", "discharges"),
    ("outcome_score", "outcome_scores"),
)


def _bag(holder):
    return uuid.UUID(holder[4:]) if holder and holder.startswith("bag:") else None


def _existing(connection):
    """Yield (table, id, organisation, patient, nurse, peer nurse) for every synced row."""
    for row in connection.execute(sa.select(PRODUCT.c.id, PRODUCT.c.organisation_id)):
        yield "products", row[0], row[1], None, None, None
    for row in connection.execute(sa.select(PATIENT.c.id, PATIENT.c.organisation_id)):
        yield "patients", row[0], row[1], row[0], None, None
    for row in connection.execute(
        sa.select(VERSION.c.id, PLAN.c.organisation_id, PLAN.c.patient_id).join(
            PLAN, PLAN.c.id == VERSION.c.plan_id
        )
    ):
        yield "plan_versions", row[0], row[1], row[2], None, None
    for row in connection.execute(
        sa.select(VISIT.c.id, VISIT.c.organisation_id, VISIT.c.patient_id)
    ):
        yield "visits", row[0], row[1], row[2], None, None
    for name, phone in SIGNED:
        table = _t(name, "id", "visit_id")
        for row in connection.execute(
            sa.select(table.c.id, VISIT.c.organisation_id, VISIT.c.patient_id).join(
                VISIT, VISIT.c.id == table.c.visit_id
            )
        ):
            yield phone, row[0], row[1], row[2], None, None
    for row in connection.execute(
        sa.select(
            CUSTODY.c.id, CUSTODY.c.organisation_id, CUSTODY.c.from_holder, CUSTODY.c.to_holder
        ).order_by(CUSTODY.c.organisation_id)
    ):
        yield "custody_entries", row[0], row[1], None, _bag(row[2]), _bag(row[3])


def _backfill() -> None:
    """Number every row that existed before sync, so a first pull finds them."""
    connection = op.get_bind()
    now, seq, batch = datetime.now(UTC), 0, []
    for table, record_id, organisation_id, patient_id, nurse_id, peer in _existing(connection):
        seq += 1
        batch.append(
            {
                "table_name": table,
                "record_id": record_id,
                "organisation_id": organisation_id,
                "seq": seq,
                "created_seq": seq,
                "deleted": False,
                "patient_id": patient_id,
                "nurse_id": nurse_id,
                "peer_nurse_id": peer,
                "changed_at": now,
            }
        )
        if len(batch) == BATCH:
            connection.execute(SYNC_ROW.insert(), batch)
            batch = []
    if batch:
        connection.execute(SYNC_ROW.insert(), batch)
    # One numbering for the backfill; each organisation's sequence carries on above it.
    organisations = [row[0] for row in connection.execute(sa.select(ORG.c.id))]
    if organisations:
        connection.execute(
            SYNC_COUNTER.insert(),
            [{"organisation_id": org, "value": seq, "horizon": 0} for org in organisations],
        )


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "sync_counter",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_sync_counter_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("organisation_id", name=op.f("pk_sync_counter")),
    )
    op.create_table(
        "sync_row",
        sa.Column("table_name", sa.String(length=30), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("created_seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=True),
        sa.Column("nurse_id", sa.Uuid(), nullable=True),
        sa.Column("peer_nurse_id", sa.Uuid(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_sync_row_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("table_name", "record_id", name=op.f("pk_sync_row")),
    )
    with op.batch_alter_table("sync_row", schema=None) as batch_op:
        batch_op.create_index("ix_sync_row_org_seq", ["organisation_id", "seq"], unique=False)
        batch_op.create_index("ix_sync_row_patient", ["patient_id"], unique=False)

    op.create_table(
        "sync_push",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("last_pulled_at", sa.BigInteger(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_sync_push_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_sync_push_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_sync_push_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_push")),
        sa.UniqueConstraint("user_id", "idempotency_key", name=op.f("uq_sync_push_user_id")),
    )
    with op.batch_alter_table("sync_push", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_push_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "sync_revocation",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("nurse_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["nurse_id"], ["app_user.id"], name=op.f("fk_sync_revocation_nurse_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_sync_revocation_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_sync_revocation_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_revocation")),
    )
    with op.batch_alter_table("sync_revocation", schema=None) as batch_op:
        batch_op.create_index("ix_sync_revocation_nurse_seq", ["nurse_id", "seq"], unique=False)

    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clock_offset_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("clock_reported_at", sa.DateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("evv_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signed_body", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("device_signature", sa.String(length=100), nullable=True))

    op.create_table(
        "sync_pending_check",
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_sync_pending_check_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visit.id"], name=op.f("fk_sync_pending_check_visit_id_visit")
        ),
        sa.PrimaryKeyConstraint("visit_id", name=op.f("pk_sync_pending_check")),
    )
    with op.batch_alter_table("custody_entry", schema=None) as batch_op:
        batch_op.create_index("ix_custody_entry_visit", ["visit_id"], unique=False)

    _backfill()


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("custody_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_custody_entry_visit")

    op.drop_table("sync_pending_check")
    with op.batch_alter_table("evv_event", schema=None) as batch_op:
        batch_op.drop_column("device_signature")
        batch_op.drop_column("signed_body")

    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("clock_reported_at")
        batch_op.drop_column("clock_offset_ms")

    with op.batch_alter_table("sync_revocation", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_revocation_nurse_seq")

    op.drop_table("sync_revocation")
    with op.batch_alter_table("sync_push", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_push_organisation_id"))

    op.drop_table("sync_push")
    with op.batch_alter_table("sync_row", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_row_patient")
        batch_op.drop_index("ix_sync_row_org_seq")

    op.drop_table("sync_row")
    op.drop_table("sync_counter")
