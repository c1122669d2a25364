"""Sign the chain head, into the database and into an append-only file beside it."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import ScalarSelect, func, select
from sqlalchemy.orm import Session

from backend.custody.chain import sign_checkpoint
from backend.custody.models import CustodyCheckpoint, CustodyHead
from backend.runtime import Runtime


def _export(export_dir: Path, checkpoint: CustodyCheckpoint) -> None:
    export_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"organisation_id": str(checkpoint.organisation_id),
                       "seq": checkpoint.seq, "head_hash": checkpoint.head_hash,
                       "signed_at": checkpoint.signed_at.isoformat(),
                       "signature": checkpoint.signature, "key_id": checkpoint.key_id},
                      sort_keys=True)
    # O_APPEND: lines are only ever added; fsync: a checkpoint we report is on disk.
    fd = os.open(export_dir / f"{checkpoint.organisation_id}.jsonl",
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _latest_seq(organisation_id: Any) -> ScalarSelect:
    """Return the seq of the organisation's last checkpoint, 0 before its first."""
    return select(func.coalesce(func.max(CustodyCheckpoint.seq), 0)).where(
        CustodyCheckpoint.organisation_id == organisation_id).scalar_subquery()


def sign_head(session: Session, rt: Runtime, organisation_id: uuid.UUID,
              export_dir: Path) -> CustodyCheckpoint | None:
    """Sign the organisation's chain head unless it is already signed; export the checkpoint."""
    head = session.scalar(select(CustodyHead).where(
        CustodyHead.organisation_id == organisation_id,
        CustodyHead.seq > _latest_seq(organisation_id)))
    return _sign(session, rt, head, export_dir) if head is not None else None


def _sign(session: Session, rt: Runtime, head: CustodyHead,
          export_dir: Path) -> CustodyCheckpoint:
    now = rt.clock.now()
    checkpoint = CustodyCheckpoint(
        organisation_id=head.organisation_id, seq=head.seq, head_hash=head.head_hash,
        signed_at=now, signature=sign_checkpoint(rt.keys.signing_key, head.organisation_id,
                                                 head.seq, head.head_hash, now),
        public_key=base64.b64encode(rt.keys.signing_public_key()).decode(),
        key_id=rt.keys.signing_key_id)
    session.add(checkpoint)
    session.flush()
    _export(export_dir, checkpoint)
    return checkpoint


def sign_all(session: Session, rt: Runtime, export_dir: Path) -> int:
    """Sign every organisation's head that moved since its last checkpoint; return how many.

    One indexed look-up per organisation finds the heads that moved, so the job can run every
    minute however many checkpoints are stored.
    """
    moved = session.scalars(select(CustodyHead).where(
        CustodyHead.seq > _latest_seq(CustodyHead.organisation_id))).all()
    return len([_sign(session, rt, head, export_dir) for head in moved])
