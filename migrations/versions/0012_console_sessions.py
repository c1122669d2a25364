"""console sessions: the server side of a desk user's browser sign-in

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-07

The console (`/console`) signs desk users in with the same accounts and lockout as the API. Its
cookie carries a random id; the server keeps only the id's SHA-256, the token family the
sign-in opened (so a sign-out, an idle timeout or a deactivation revokes it as it revokes an
API session) and when the browser was last active, for the 15-minute idle sign-out.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "console_session",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["family_id"], ["token_family.id"],
                                name=op.f("fk_console_session_family_id_token_family")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_session_token_hash")),
    )
    op.create_index(op.f("ix_console_session_family_id"), "console_session", ["family_id"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_console_session_family_id"), table_name="console_session")
    op.drop_table("console_session")
