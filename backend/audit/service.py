"""Write and read the audit trail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.models import AuditEvent
from backend.auth.caller import Caller


def record(session: Session, now: datetime, caller: Caller | None, action: str,
           object_type: str, object_id: object | None = None, *,
           organisation_id: uuid.UUID | None = None, address: str | None = None,
           detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append one audit event, attributed to `caller` when there is one."""
    event = AuditEvent(
        organisation_id=caller.organisation_id if caller else organisation_id,
        user_id=caller.user_id if caller else None,
        device_id=caller.device_id if caller else None,
        address=caller.address if caller else address,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        occurred_at=now,
        detail=detail or {},
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class AuditFilter:
    """The filters a reviewer may combine when listing the trail."""

    user_id: uuid.UUID | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


def list_events(session: Session, caller: Caller, where: AuditFilter) -> list[AuditEvent]:
    """Return the caller's organisation's events matching `where`, newest first."""
    query = select(AuditEvent).where(AuditEvent.organisation_id == caller.organisation_id)
    if where.user_id:
        query = query.where(AuditEvent.user_id == where.user_id)
    if where.action:
        query = query.where(AuditEvent.action == where.action)
    if where.object_type:
        query = query.where(AuditEvent.object_type == where.object_type)
    if where.object_id:
        query = query.where(AuditEvent.object_id == where.object_id)
    if where.since:
        query = query.where(AuditEvent.occurred_at >= where.since)
    if where.until:
        query = query.where(AuditEvent.occurred_at < where.until)
    query = query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id)
    return list(session.scalars(query.limit(where.limit).offset(where.offset)))
