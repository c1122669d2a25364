"""The push log: who pushed what from which phone, and the stored answer a retry gets again.

A push with an `Idempotency-Key` first claims the key in its own short unit of work, so a
second request with the key sees the claim at once: the same body while the first still runs is
409, a different body is 422, and after the first finished it gets the first's answer. The
answer is stored in the push's own transaction, so it exists exactly when the push applied.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Conflict, VigilError, error_body
from backend.runtime import Runtime
from backend.sync.models import SyncPush

# A claim older than this is taken to be from a push whose process died; its transaction
# rolled back with it, so taking the key over cannot apply anything twice.
LEASE = timedelta(minutes=5)


class KeyReused(VigilError):
    """The idempotency key was used for a different body."""

    status = 422
    code = "idempotency_key_reused"


class InFlight(Conflict):
    """A push with this key is still being applied."""

    code = "push_in_progress"


@dataclass(frozen=True)
class Replay:
    """The stored answer to an earlier push with the same key and body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """A push being applied: its log row."""

    push_id: uuid.UUID


def claim(session: Session, rt: Runtime, caller: Caller, key: str | None, body_sha256: str,
          last_pulled_at: int, schema_version: int) -> Claim | Replay:
    """Log the push and claim its key; return the earlier answer for a retried one."""
    now = rt.clock.now()
    push = SyncPush(organisation_id=caller.organisation_id, user_id=caller.user_id,
                    device_id=caller.device_id, idempotency_key=key, body_sha256=body_sha256,
                    last_pulled_at=last_pulled_at, schema_version=schema_version,
                    state="running", started_at=now)
    try:
        with session.begin_nested():
            session.add(push)
    except IntegrityError:
        return _earlier(session, rt, caller, key, body_sha256)
    return Claim(push.id)


def _earlier(session: Session, rt: Runtime, caller: Caller, key: str,
             body_sha256: str) -> Claim | Replay:
    earlier = session.scalars(select(SyncPush).where(
        SyncPush.user_id == caller.user_id, SyncPush.idempotency_key == key)).one()
    if earlier.body_sha256 != body_sha256:
        raise KeyReused("This Idempotency-Key was used for a different push body; use a new "
                        "key for new changes.", {"idempotency_key": key,
                                                 "first_used_at": earlier.started_at.isoformat()})
    if earlier.state == "done":
        return Replay(earlier.response_status, earlier.response_body)
    now = rt.clock.now()
    # A claim past its lease is taken over, by one taker only.
    taken = earlier.started_at <= now - LEASE and session.execute(update(SyncPush).where(
        SyncPush.id == earlier.id, SyncPush.state == "running",
        SyncPush.started_at == earlier.started_at).values(started_at=now)).rowcount
    if not taken:
        raise InFlight("A push with this Idempotency-Key is still being applied; retry "
                       "shortly.", {"idempotency_key": key})
    return Claim(earlier.id)


def finish(session: Session, rt: Runtime, caller: Caller, push_id: uuid.UUID, status: int,
           body: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
    """Store the push's answer and audit it, in the transaction that applied it."""
    now = rt.clock.now()
    session.execute(update(SyncPush).where(SyncPush.id == push_id).values(
        state="done", finished_at=now, response_status=status, response_body=body,
        summary=summary))
    push = session.get(SyncPush, push_id)
    audit.record(session, now, caller, "sync.push", "sync_push", push_id, detail={
        "idempotency_key": push.idempotency_key, "body_sha256": push.body_sha256,
        "last_pulled_at": push.last_pulled_at, "status": status, **(summary or {})})


def refused(session: Session, rt: Runtime, caller: Caller, push_id: uuid.UUID,
            error: VigilError) -> None:
    """Record a refused push (nothing of it applied); a conflict frees its key for a retry."""
    summary = {"refused": error.code}
    if error.status == 409:
        # The phone pulls and pushes again, maybe with the same key: let it. The log keeps it.
        push = session.get(SyncPush, push_id)
        summary["idempotency_key"], push.idempotency_key = push.idempotency_key, None
    finish(session, rt, caller, push_id, error.status,
           error_body(error.code, error.message, error.details), summary)


def failed(session: Session, rt: Runtime, push_id: uuid.UUID) -> None:
    """Mark a push that failed unexpectedly, freeing its key so its retry runs afresh."""
    push = session.get(SyncPush, push_id)
    push.summary = {"failed": True, "idempotency_key": push.idempotency_key}
    push.state, push.idempotency_key, push.finished_at = "failed", None, rt.clock.now()
