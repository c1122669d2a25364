"""ledger signatures: every custody entry signed by the server, checkpoints append-only

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

Entries get the server's signature over their hash and its key id, and the record a phone
signed when the movement follows from it (a dose). Entries already stored stay unsigned: a
migration holds no key, and signing them now would vouch for whatever the table holds today.
`vigil ledger verify` accepts an unsigned entry only below a signed checkpoint, so run
`vigil ledger checkpoint` (or let the `ledger_checkpoint` job run) once after upgrading.

Checkpoints name their key id, filled in here from the public key each stored row names, and
become append-only like the ledger.
"""

import base64
import hashlib

import sqlalchemy as sa
from alembic import op

from backend.append_only import drop_append_only, make_append_only

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CHECKPOINT = sa.table("custody_checkpoint", sa.column("public_key", sa.String),
                      sa.column("key_id", sa.String))


def _key_id(public_key_b64: str) -> str:
    """Return the key id `backend.keys.key_id_of` gives the key, as it was at this revision."""
    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:16]


def upgrade() -> None:
    """Apply this revision."""
    # Plain ADD COLUMN, not a batch copy: the ledger's append-only triggers stay in place.
    op.add_column("custody_entry", sa.Column("server_key_id", sa.String(length=16),
                                             nullable=True))
    op.add_column("custody_entry", sa.Column("server_signature", sa.String(length=100),
                                             nullable=True))
    op.add_column("custody_entry", sa.Column("signed_record", sa.JSON(), nullable=True))

    with op.batch_alter_table("custody_checkpoint", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
    connection = op.get_bind()
    for public_key in connection.scalars(sa.select(CHECKPOINT.c.public_key).distinct()).all():
        connection.execute(CHECKPOINT.update().where(CHECKPOINT.c.public_key == public_key)
                           .values(key_id=_key_id(public_key)))
    with op.batch_alter_table("custody_checkpoint", schema=None) as batch_op:
        batch_op.alter_column("key_id", existing_type=sa.String(length=16), nullable=False)
    make_append_only(op, "custody_checkpoint")


def downgrade() -> None:
    """Revert this revision."""
    drop_append_only(op, "custody_checkpoint")
    with op.batch_alter_table("custody_checkpoint", schema=None) as batch_op:
        batch_op.drop_column("key_id")
    op.drop_column("custody_entry", "signed_record")
    op.drop_column("custody_entry", "server_signature")
    op.drop_column("custody_entry", "server_key_id")
