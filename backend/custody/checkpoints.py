"""Sign the chain head, into the database and into an append-only file beside it."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.custody.chain import sign_checkpoint
from backend.custody.models import CustodyCheckpoint, CustodyHead
from backend.runtime import Runtime


def _export(export_dir: Path, checkpoint: CustodyCheckpoint) -> None:
    export_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"organisation_id": str(checkpoint.organisation_id),
                       "seq": checkpoint.seq, "head_hash": checkpoint.head_hash,
                       "signed_at": checkpoint.signed_at.isoformat(),
                       "signature": checkpoint.signature}, sort_keys=True)
    # O_APPEND: lines are only ever added; fsync: a checkpoint we report is on disk.
    fd = os.open(export_dir / f"{checkpoint.organisation_id}.jsonl",
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def sign_head(session: Session, rt: Runtime, organisation_id: uuid.UUID,
              export_dir: Path) -> CustodyCheckpoint | None:
    """Sign the organisation's chain head unless it is already signed; export the checkpoint."""
    head = session.get(CustodyHead, organisation_id)
    latest = session.scalar(select(func.max(CustodyCheckpoint.seq)).where(
        CustodyCheckpoint.organisation_id == organisation_id))
    if head is None or head.seq == latest:
        return None
    now = rt.clock.now()
    checkpoint = CustodyCheckpoint(
        organisation_id=organisation_id, seq=head.seq, head_hash=head.head_hash, signed_at=now,
        signature=sign_checkpoint(rt.keys.signing_key, organisation_id, head.seq,
                                  head.head_hash, now),
        public_key=base64.b64encode(rt.keys.signing_public_key()).decode())
    session.add(checkpoint)
    session.flush()
    _export(export_dir, checkpoint)
    return checkpoint


def sign_all(session: Session, rt: Runtime, export_dir: Path) -> int:
    """Sign every organisation's head that moved since its last checkpoint; return how many."""
    heads = session.scalars(select(CustodyHead.organisation_id)).all()
    return sum(sign_head(session, rt, org, export_dir) is not None for org in heads)
