"""safeguards: flag review workflow and history, rule modes, plan thresholds

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import uuid

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Just the columns the backfill reads and writes, as they are at this revision.
FLAG = sa.table(
    "flag", sa.column("id", sa.Uuid()), sa.column("organisation_id", sa.Uuid()),
    sa.column("subject_kind", sa.String()), sa.column("subject_id", sa.String()),
    sa.column("evidence", sa.JSON()), sa.column("status", sa.String()),
    sa.column("rule_version", sa.Integer()), sa.column("severity", sa.String()),
    sa.column("summary", sa.Text()), sa.column("shadow", sa.Boolean()),
    sa.column("first_seen_at", sa.DateTime(timezone=True)),
    sa.column("nurse_id", sa.Uuid()), sa.column("patient_id", sa.Uuid()))
FLAG_EVENT = sa.table(
    "flag_event", sa.column("id", sa.Uuid()), sa.column("flag_id", sa.Uuid()),
    sa.column("seq", sa.Integer()), sa.column("organisation_id", sa.Uuid()),
    sa.column("at", sa.DateTime(timezone=True)), sa.column("action", sa.String()),
    sa.column("to_status", sa.String()), sa.column("detail", sa.JSON()))
USER = sa.table("app_user", sa.column("id", sa.Uuid()), sa.column("organisation_id", sa.Uuid()))
PATIENT = sa.table("patient", sa.column("id", sa.Uuid()), sa.column("organisation_id", sa.Uuid()))
VISIT = sa.table("visit", sa.column("id", sa.Uuid()), sa.column("nurse_id", sa.Uuid()),
                 sa.column("patient_id", sa.Uuid()))


def _uuid(value):
    try:
        return None if value is None else uuid.UUID(str(value))
    except ValueError:
        return None


def _people(flag, users, patients, visits):
    """Return the nurse and patient an existing flag names, as `raise_flag` now records them."""
    evidence = flag.evidence or {}
    nurse = _uuid(flag.subject_id if flag.subject_kind == "nurse" else evidence.get("nurse_id"))
    patient = _uuid(flag.subject_id if flag.subject_kind == "patient"
                    else evidence.get("patient_id"))
    if flag.subject_kind == "visit":
        visit_nurse, visit_patient = visits.get(_uuid(flag.subject_id), (None, None))
        nurse, patient = nurse or visit_nurse, patient or visit_patient
    return (nurse if users.get(nurse) == flag.organisation_id else None,
            patient if patients.get(patient) == flag.organisation_id else None)


def _backfill() -> None:
    """Name the people of existing flags and give each the `raised` event it was born with."""
    bind = op.get_bind()
    users = dict(bind.execute(sa.select(USER.c.id, USER.c.organisation_id)).all())
    patients = dict(bind.execute(sa.select(PATIENT.c.id, PATIENT.c.organisation_id)).all())
    visits = {row.id: (row.nurse_id, row.patient_id) for row in bind.execute(sa.select(VISIT))}
    for flag in bind.execute(sa.select(FLAG)).all():
        nurse, patient = _people(flag, users, patients, visits)
        bind.execute(sa.update(FLAG).where(FLAG.c.id == flag.id)
                     .values(nurse_id=nurse, patient_id=patient))
        bind.execute(sa.insert(FLAG_EVENT).values(
            id=uuid.uuid4(), flag_id=flag.id, seq=1, organisation_id=flag.organisation_id,
            at=flag.first_seen_at, action="raised", to_status=flag.status,
            detail={"rule_version": flag.rule_version, "severity": flag.severity,
                    "summary": flag.summary, "evidence": flag.evidence,
                    "shadow": flag.shadow, "backfilled": True}))


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nurse_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("patient_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("assignee_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("resolution", sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_by_id", sa.Uuid(), nullable=True))
        # Nullable until the existing flags get their value below.
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_flag_org_status")
        batch_op.create_index(
            "ix_flag_queue", ["organisation_id", "status", "severity", "first_seen_at"],
            unique=False)
        batch_op.create_index(batch_op.f("ix_flag_assignee_id"), ["assignee_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_flag_nurse_id"), ["nurse_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_flag_patient_id"), ["patient_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_flag_nurse_id_app_user"), "app_user", ["nurse_id"], ["id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_flag_patient_id_patient"), "patient", ["patient_id"], ["id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_flag_assignee_id_app_user"), "app_user", ["assignee_id"], ["id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_flag_resolved_by_id_app_user"), "app_user", ["resolved_by_id"],
            ["id"])
    op.execute("UPDATE flag SET updated_at = last_seen_at")
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.alter_column("updated_at", existing_type=sa.DateTime(timezone=True),
                              nullable=False)

    op.create_table(
        "flag_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flag_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("from_status", sa.String(length=30), nullable=True),
        sa.Column("to_status", sa.String(length=30), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["app_user.id"], name=op.f("fk_flag_event_actor_id_app_user")
        ),
        sa.ForeignKeyConstraint(["flag_id"], ["flag.id"], name=op.f("fk_flag_event_flag_id_flag")),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_flag_event_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_event")),
        sa.UniqueConstraint("flag_id", "seq", name=op.f("uq_flag_event_flag_id")),
    )
    with op.batch_alter_table("flag_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_flag_event_organisation_id"), ["organisation_id"], unique=False
        )
    _backfill()
    make_append_only(op, "flag_event")

    op.create_table(
        "safeguard_rule_mode",
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.String(length=80), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_safeguard_rule_mode_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["app_user.id"],
            name=op.f("fk_safeguard_rule_mode_updated_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("organisation_id", "rule_id", name=op.f("pk_safeguard_rule_mode")),
    )

    with op.batch_alter_table("plan_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy_overrides", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert this revision (a flag's history and review fields go with it)."""
    with op.batch_alter_table("plan_version", schema=None) as batch_op:
        batch_op.drop_column("policy_overrides")

    op.drop_table("safeguard_rule_mode")

    drop_append_only(op, "flag_event")
    with op.batch_alter_table("flag_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flag_event_organisation_id"))
    op.drop_table("flag_event")

    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_flag_resolved_by_id_app_user"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_flag_assignee_id_app_user"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_flag_patient_id_patient"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_flag_nurse_id_app_user"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_flag_patient_id"))
        batch_op.drop_index(batch_op.f("ix_flag_nurse_id"))
        batch_op.drop_index(batch_op.f("ix_flag_assignee_id"))
        batch_op.drop_index("ix_flag_queue")
        batch_op.create_index("ix_flag_org_status", ["organisation_id", "status"], unique=False)
        batch_op.drop_column("updated_at")
        batch_op.drop_column("resolved_by_id")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("resolution")
        batch_op.drop_column("assignee_id")
        batch_op.drop_column("patient_id")
        batch_op.drop_column("nurse_id")
