"""second factors: TOTP authenticators and single-use recovery codes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09

A user may enrol a second factor (issue 19): a TOTP authenticator now, a security key later.
Its shared secret is sealed as PHI is (`secret_enc`, AES-GCM bound to organisation, table,
column and row), so key rotation covers it; `last_used_step` refuses a code used again within
its window. A factor is pending until a code confirms it, and removed rather than deleted.
Recovery codes are kept only as their HMAC-SHA256 under a key derived from the token secret.
Nothing is enforced yet: sign-in is unchanged.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "second_factor",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Enum("totp", "webauthn", name="factor_kind", native_enum=False,
                                  length=10, create_constraint=True), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_step", sa.Integer(), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisation.id"],
                                name=op.f("fk_second_factor_organisation_id_organisation")),
        sa.ForeignKeyConstraint(["removed_by_id"], ["app_user.id"],
                                name=op.f("fk_second_factor_removed_by_id_app_user")),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"],
                                name=op.f("fk_second_factor_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_second_factor")),
    )
    op.create_index(op.f("ix_second_factor_user_id"), "second_factor", ["user_id"])
    op.create_table(
        "recovery_code",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisation.id"],
                                name=op.f("fk_recovery_code_organisation_id_organisation")),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"],
                                name=op.f("fk_recovery_code_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_recovery_code_code_hash")),
    )
    op.create_index(op.f("ix_recovery_code_user_id"), "recovery_code", ["user_id"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_recovery_code_user_id"), table_name="recovery_code")
    op.drop_table("recovery_code")
    op.drop_index(op.f("ix_second_factor_user_id"), table_name="second_factor")
    op.drop_table("second_factor")
