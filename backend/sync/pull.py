"""Pull: what changed for one nurse since her phone's cursor, in WatermelonDB's shape."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from backend.accounts.models import Role
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import Forbidden, InvalidField, VigilError
from backend.patients.models import PatientNurse
from backend.runtime import Runtime
from backend.sync import origin
from backend.sync.models import SyncCounter, SyncRevocation, SyncRow
from backend.sync.tables import BY_NAME, MUTABLE_SINCE, ORG_WIDE, SCHEMA_VERSION, TABLES


class ResetRequired(VigilError):
    """The cursor is older than the tombstones kept: the phone must start again from zero."""

    status = 410
    code = "sync_reset_required"


class SchemaTooOld(VigilError):
    """The phone's schema is older than the server still syncs for this request."""

    status = 426
    code = "schema_too_old"


@dataclass(frozen=True)
class Migration:
    """WatermelonDB's note of the phone's schema migration: tables and columns to refill."""

    from_version: int
    tables: frozenset[str] = frozenset()
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PullRequest:
    """A pull: the phone's cursor and schema, and the optional page size and migration."""

    last_pulled_at: int
    schema_version: int
    limit: int | None = None
    migration: Migration | None = None


def check_schema(schema_version: int, *, mutable: bool) -> None:
    """Refuse a phone schema the server does not know, or too old for mutable tables."""
    if schema_version > SCHEMA_VERSION:
        raise InvalidField("schema_version", f"unknown: the server's schema is {SCHEMA_VERSION}")
    if mutable and schema_version < MUTABLE_SINCE:
        raise SchemaTooOld(
            f"Phone schema {schema_version} is too old to sync schedules and visits; update "
            f"the app (schema {MUTABLE_SINCE} or later). Recorded clinical events are still "
            "accepted.", {"schema_version": schema_version, "minimum": MUTABLE_SINCE,
                          "current": SCHEMA_VERSION})


def require_nurse(caller: Caller) -> None:
    """Allow only nurses: sync is the nurse's phone."""
    if caller.role != Role.NURSE:
        raise Forbidden("Sync is for nurses' phones.", {"role": caller.role})


def counter(session: Session, organisation_id: uuid.UUID) -> tuple[int, int]:
    """Return the organisation's last committed change number and its tombstone horizon."""
    row = session.execute(select(SyncCounter.value, SyncCounter.horizon).where(
        SyncCounter.organisation_id == organisation_id)).first()
    return (row[0], row[1]) if row else (0, 0)


def checked_cursor(session: Session, organisation_id: uuid.UUID,
                   last_pulled_at: int) -> tuple[int, int]:
    """Return the counter and horizon; refuse a cursor the server never handed out."""
    top, horizon = counter(session, organisation_id)
    if last_pulled_at > top:
        raise InvalidField("last_pulled_at", f"ahead of the server's sequence ({top})")
    return top, horizon


def assigned_patients(session: Session, nurse_id: uuid.UUID) -> set[uuid.UUID]:
    """Return the patients the nurse is assigned to now."""
    return set(session.scalars(select(PatientNurse.patient_id).where(
        PatientNurse.nurse_id == nurse_id, PatientNurse.ended_at.is_(None))))


def entitled(nurse_id: uuid.UUID, patients: set[uuid.UUID]) -> Any:
    """Return the condition for the change-index rows a nurse may see."""
    return or_(SyncRow.table_name.in_(ORG_WIDE),
               SyncRow.patient_id.in_(patients), SyncRow.nurse_id == nurse_id,
               SyncRow.peer_nurse_id == nurse_id)


def pull(session: Session, rt: Runtime, caller: Caller, request: PullRequest) -> dict[str, Any]:
    """Return the changes the nurse may see after her cursor, and the cursor to keep."""
    require_nurse(caller)
    check_schema(request.schema_version, mutable=True)
    # Every change numbered up to `top` is committed: numbers are taken in commit order.
    since = request.last_pulled_at
    top, horizon = checked_cursor(session, caller.organisation_id, since)
    if 0 < since < horizon:
        raise ResetRequired(
            "This phone has been away longer than deletions are kept; pull again from zero "
            "(last_pulled_at=0) after pushing what it holds.",
            {"last_pulled_at": since, "oldest_cursor": horizon})
    patients = assigned_patients(session, caller.user_id)
    phone = origin.pulling(session, caller, since, top)
    refill = _refill(request.migration)
    fresh = SyncRow.seq > since
    if refill:
        fresh = or_(fresh, SyncRow.table_name.in_(refill))
    query = (select(SyncRow).where(SyncRow.organisation_id == caller.organisation_id, fresh,
                                   SyncRow.seq <= top, entitled(caller.user_id, patients))
             .order_by(SyncRow.seq))
    if request.limit:
        query = query.limit(request.limit + 1)
    rows = list(session.scalars(query))
    has_more = bool(request.limit) and len(rows) > request.limit
    if has_more:
        rows = rows[:request.limit]
        top = rows[-1].seq
    changes = _changes(session, rt, rows, since, refill, phone)
    _revocations(session, caller, patients, since, top, changes)
    disclosed = [r["id"] for r in changes["patients"]["created"] + changes["patients"]["updated"]]
    audit.record(session, rt.clock.now(), caller, "sync.pull", "sync", None, detail={
        "last_pulled_at": since, "timestamp": top, "has_more": has_more,
        "records": sum(len(c["created"]) + len(c["updated"]) for c in changes.values()),
        "deleted": sum(len(c["deleted"]) for c in changes.values()),
        "patients_disclosed": disclosed})
    return {"changes": changes, "timestamp": top, "has_more": has_more}


def _refill(migration: Migration | None) -> set[str]:
    if migration is None:
        return set()
    return {name for name in migration.tables | set(migration.columns) if name in BY_NAME}


def _changes(session: Session, rt: Runtime, rows: list[SyncRow], since: int,
             refill: set[str], phone: origin.Phone | None) -> dict[str, dict[str, list]]:
    changes: dict[str, dict[str, list]] = {
        t.name: {"created": [], "updated": [], "deleted": []} for t in TABLES}
    live: dict[str, dict[uuid.UUID, str]] = defaultdict(dict)
    for row in rows:
        if row.deleted:
            changes[row.table_name]["deleted"].append(str(row.record_id))
        elif action := _action(row, since, refill, phone):
            live[row.table_name][row.record_id] = action
    for table in TABLES:
        wanted = live.get(table.name)
        if not wanted:
            continue
        for record in table.read(session, rt, list(wanted)):
            changes[table.name][wanted[uuid.UUID(record["id"])]].append(record)
    return changes


def _action(row: SyncRow, since: int, refill: set[str],
            phone: origin.Phone | None) -> str | None:
    """Return whether the phone gets a live row as created or updated, or None: it holds it."""
    if row.table_name in refill:
        return "created"
    if phone is not None and phone.holds(row):
        # The phone's own record: sent once the server changed it, to the copy it holds.
        return "updated" if row.seq > row.created_seq else None
    return "created" if row.created_seq > since else "updated"


def _revocations(session: Session, caller: Caller, patients: set[uuid.UUID], since: int,
                 top: int, changes: dict[str, dict[str, list]]) -> None:
    """Delete on the phone every row of a patient the nurse no longer looks after."""
    lost = set(session.scalars(select(SyncRevocation.patient_id).where(
        SyncRevocation.nurse_id == caller.user_id, SyncRevocation.seq > since,
        SyncRevocation.seq <= top))) - patients
    if not lost:
        return
    for name, record_id in session.execute(select(SyncRow.table_name, SyncRow.record_id).where(
            SyncRow.patient_id.in_(lost), SyncRow.deleted.is_(False))):
        changes[name]["deleted"].append(str(record_id))
