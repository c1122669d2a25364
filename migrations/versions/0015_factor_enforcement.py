"""second factors enforced: policy, grace, fresh factors per session, security keys, signed plans

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

Issue 19. An organisation says whether nurses need a second factor too, how many days a new
user has to enrol one, and how old a factor may be before a sensitive action asks again
(`mfa_policy_at` starts each user's grace: existing users get theirs from this upgrade). An
admin's reset makes a user's factor due at once (`app_user.factor_due_at`). A session (token
family) keeps when and how its user last proved a factor. A security key (WebAuthn) keeps its
credential id, public key and signature counter; each assertion answers a single-use
`factor_challenge`. A plan version keeps its prescriber's signature: when, with which factor,
and the SHA-256 of the order's canonical content. Versions written before this upgrade stay
unsigned, and say so.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("organisation") as batch:
        batch.add_column(sa.Column("mfa_nurses", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("mfa_grace_days", sa.Integer(), nullable=False,
                                   server_default="7"))
        batch.add_column(sa.Column("step_up_seconds", sa.Integer(), nullable=False,
                                   server_default="900"))
        batch.add_column(sa.Column("mfa_policy_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text("UPDATE organisation SET mfa_policy_at = CURRENT_TIMESTAMP"))
    with op.batch_alter_table("app_user") as batch:
        batch.add_column(sa.Column("factor_due_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("token_family") as batch:
        batch.add_column(sa.Column("factor_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("factor_method", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("factor_id", sa.Uuid(), nullable=True))
    with op.batch_alter_table("second_factor") as batch:
        batch.add_column(sa.Column("credential_id", sa.LargeBinary(length=1023), nullable=True))
        batch.add_column(sa.Column("public_key", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("sign_count", sa.BigInteger(), nullable=True))
        batch.create_unique_constraint(op.f("uq_second_factor_credential_id"), ["credential_id"])
    op.create_table(
        "factor_challenge",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("challenge", sa.LargeBinary(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"],
                                name=op.f("fk_factor_challenge_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_factor_challenge")),
    )
    op.create_index(op.f("ix_factor_challenge_user_id"), "factor_challenge", ["user_id"])
    with op.batch_alter_table("plan_version") as batch:
        batch.add_column(sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("signature_method", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("signature_factor_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("factor_proved_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("plan_version") as batch:
        for column in ("content_hash", "factor_proved_at", "signature_factor_id",
                       "signature_method", "signed_at"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_factor_challenge_user_id"), table_name="factor_challenge")
    op.drop_table("factor_challenge")
    with op.batch_alter_table("second_factor") as batch:
        batch.drop_constraint(op.f("uq_second_factor_credential_id"), type_="unique")
        for column in ("sign_count", "public_key", "credential_id"):
            batch.drop_column(column)
    with op.batch_alter_table("token_family") as batch:
        for column in ("factor_id", "factor_method", "factor_at"):
            batch.drop_column(column)
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("factor_due_at")
    with op.batch_alter_table("organisation") as batch:
        for column in ("mfa_policy_at", "step_up_seconds", "mfa_grace_days", "mfa_nurses"):
            batch.drop_column(column)
