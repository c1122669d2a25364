"""Push: apply a phone's changes in one transaction, by WatermelonDB's rules, losing nothing.

Mutable records (visits) follow WatermelonDB: one changed on the server since the phone's
cursor aborts the whole push with 409, so the phone pulls first. Append-only records (the
clinical session, check-ins and check-outs, custody entries) are signed by the phone; one that
cannot be trusted or fails validation is quarantined with its reason and flagged, and the rest
of the push still applies. The records come read and validated by `backend.sync.pushed`.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from backend import synced
from backend.administration import service as clinical
from backend.administration.models import QuarantinedEvent
from backend.auth.caller import Caller
from backend.client_ids import stored_twin
from backend.custody import service as custody
from backend.errors import Conflict, Forbidden, NotFound, SignatureInvalid, VigilError
from backend.metrics import committed
from backend.metrics.registry import SYNC_PUSHES, SYNC_RECORDS
from backend.phi.sealed import cipher_of, digest, sealed_values
from backend.runtime import Runtime
from backend.sync import checks, origin
from backend.sync.models import SyncRow
from backend.sync.pull import check_schema, checked_cursor, require_nurse
from backend.sync.pushed import PushRequest, Record
from backend.sync.tables import (
    BY_NAME,
    Access,
    SyncTable,
)
from backend.tenancy import of_organisation
from backend.visits import evv
from backend.visits.models import EvvEvent, Visit

# Order of application, whatever order the phone listed them in: check-ins, the session, then
# check-outs (each EVV step needs the one before), then custody. Each step is a table and, for
# EVV, which records of it.
STEPS: tuple[tuple[str, Callable[[Record], bool]], ...] = (
    ("evv_events", lambda record: record.raw.get("kind") != "check_out"),
    ("pre_doses", lambda _record: True), ("doses", lambda _record: True),
    ("observations", lambda _record: True), ("discharges", lambda _record: True),
    ("outcome_scores", lambda _record: True),
    ("evv_events", lambda record: record.raw.get("kind") == "check_out"),
    ("custody_entries", lambda _record: True))
CLINICAL = {"pre_doses": "pre_dose", "doses": "dose", "observations": "observations",
            "discharges": "discharge", "outcome_scores": "outcomes"}
# What makes a record go to quarantine rather than fail the push.
REFUSALS = (clinical.Untrusted, ValidationError, VigilError, json.JSONDecodeError)
# Records that may come by the hundred and need no query to build: stored in one batch.
MANY = {"observations": clinical.observation_columns,
        "outcome_scores": clinical.outcome_columns}


class ConcurrentPush(Conflict):
    """Another push stored the same records first; a retry finds them and changes nothing."""

    code = "concurrent_push"


class SyncConflict(Conflict):
    """A record the phone changed was changed on the server after its last pull."""

    code = "sync_conflict"


def apply(session: Session, rt: Runtime, caller: Caller, request: PushRequest) -> dict[str, Any]:
    """Apply the push; return what was applied and what was quarantined."""
    require_nurse(caller)
    mutable = any(BY_NAME[name].access is not Access.APPEND_ONLY and changes
                  for name, changes in request.changes.items())
    check_schema(request.schema_version, mutable=mutable)
    checked_cursor(session, caller.organisation_id, request.last_pulled_at)
    _refuse_reference_changes(request)
    pushed_visits = _lock_visits(session, caller, request)
    summary = Summary()
    for name, wanted in STEPS:
        records = sorted(filter(wanted, request.created(name)), key=_when)
        if name in MANY:
            _append_many(session, rt, caller, BY_NAME[name], records, summary)
            continue
        for record in records:
            _append(session, rt, caller, BY_NAME[name], record, summary)
    _visit_fields(session, rt, pushed_visits, summary)
    summary.queued = checks.enqueue(session, rt.clock.now(), caller.organisation_id,
                                    summary.sessions)
    summary.count_when_committed(session)
    return summary.body()


def _when(record: Record) -> datetime:
    """Return when the phone says a record happened, for applying records in that order."""
    try:
        moment = datetime.fromisoformat(record.raw.get("occurred_at") or "")
    except (TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _refuse_reference_changes(request: PushRequest) -> None:
    for name, changes in request.changes.items():
        if BY_NAME[name].access is Access.REFERENCE and changes:
            raise Forbidden(f"{name} is read-only on the phone.", {"table": name})


def _lock_visits(session: Session, caller: Caller, request: PushRequest) -> dict[uuid.UUID, dict]:
    """Lock the visits the phone changed; refuse the push if any changed since its pull."""
    changes = request.changes.get("visits")
    if not changes:
        return {}
    pushed = {record.id: record.raw for record in changes.created + changes.updated}
    wanted = set(pushed) | set(changes.deleted)
    found = {visit.id: visit for visit in session.scalars(
        select(Visit).where(Visit.id.in_(wanted),
                            Visit.organisation_id == caller.organisation_id)
        .order_by(Visit.id).with_for_update())}
    for visit_id in sorted(pushed, key=str):
        visit = found.get(visit_id)
        if visit is None or visit.nurse_id != caller.user_id:
            # WatermelonDB would create an updated record it lacks: nurses never create visits.
            raise Forbidden("Visits are scheduled on the server; this phone may only update "
                            "its own.", {"table": "visits", "record_id": str(visit_id)})
    for visit_id in changes.deleted:
        if visit_id in found:
            raise Forbidden("Visits are never deleted from a phone; cancel them on the server.",
                            {"table": "visits", "record_id": str(visit_id)})
    seqs = dict(session.execute(select(SyncRow.record_id, SyncRow.seq).where(
        SyncRow.table_name == "visits", SyncRow.record_id.in_(pushed))).all())
    for visit_id in sorted(pushed, key=str):
        if seqs.get(visit_id, 0) > request.last_pulled_at:
            raise SyncConflict("This visit changed on the server after the phone's last pull; "
                               "pull, then push again.", {
                                   "table": "visits", "record_id": str(visit_id),
                                   "changed_at_seq": seqs[visit_id],
                                   "last_pulled_at": request.last_pulled_at})
    return pushed


class Summary:
    """What a push did, record by record."""

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}
        self.unchanged: dict[str, int] = {}
        self.quarantined: list[dict[str, Any]] = []
        self.kept_server_values: list[dict[str, Any]] = []
        self.sessions: set[uuid.UUID] = set()
        self.queued = 0

    def count(self, into: dict[str, int], table: str) -> None:
        """Count one record of `table`."""
        into[table] = into.get(table, 0) + 1

    def count_when_committed(self, session: Session) -> None:
        """Count the push and its records in the metrics once its transaction commits."""
        committed.count(session, SYNC_PUSHES)
        for outcome, tables in (("applied", self.applied), ("unchanged", self.unchanged),
                                ("quarantined", Counter(q["table"] for q in self.quarantined))):
            for table, records in tables.items():
                committed.count(session, SYNC_RECORDS, records, table=table, outcome=outcome)

    def body(self) -> dict[str, Any]:
        """Return the push's answer."""
        return {"ok": True, "applied": self.applied, "unchanged": self.unchanged,
                "quarantined": self.quarantined, "kept_server_values": self.kept_server_values,
                "sessions_queued": self.queued}


def _untrusted(table: SyncTable, raw: dict[str, Any], refused: Exception) -> clinical.Untrusted:
    """Return why a record goes to quarantine, in one shape whatever refused it."""
    if isinstance(refused, clinical.Untrusted):
        return clinical.Untrusted(refused.code, refused.message, table.name, raw,
                                  refused.reason)
    if isinstance(refused, ValidationError):
        return clinical.Untrusted("invalid", "The record failed validation.", table.name, raw,
                                  f"invalid: {json.dumps(refused.messages, sort_keys=True)}")
    if isinstance(refused, VigilError):
        return clinical.Untrusted(refused.code, refused.message, table.name, raw,
                                  f"{refused.code}: {refused.message}")
    return clinical.Untrusted("invalid_json", str(refused), table.name, raw,
                              f"invalid_json: {refused}")


def _append(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
            record: Record, summary: Summary) -> None:
    raw = record.raw
    visit_id, _patient_id = _nurse_visits(session, caller, {raw.get("visit_id")}).get(
        raw.get("visit_id"), (None, None))
    try:
        # A savepoint per record: one that is refused leaves no trace but its quarantine.
        with session.begin_nested():
            done = _APPLY[table.name](session, rt, caller, table, record, visit_id)
    except REFUSALS as refused:
        _hold(session, rt, caller, table, visit_id, _untrusted(table, raw, refused), summary)
        return
    summary.count(summary.applied if done else summary.unchanged, table.name)
    if done:
        origin.pushed(session, rt, caller, table, raw)
    if visit_id is not None and table.name in CLINICAL:
        summary.sessions.add(visit_id)


def _append_many(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
                 records: list[Record], summary: Summary) -> None:
    """Verify, check and store a batch of records with a few queries, not a few per record."""
    if not records:
        return
    mine = _nurse_visits(session, caller, {record.raw.get("visit_id") for record in records})
    # Digests of what is stored: a re-sent record is recognised without decrypting anything.
    stored = dict(session.execute(select(table.model.id, table.model.signed_body_sha256).where(
        table.model.id.in_([record.id for record in records]))).all())
    columns = MANY[table.name]
    # Every signature at once, on two threads; each refusal is raised in its record's turn.
    checked = clinical.verify_records(session, caller, table.name,
                                      [record.raw for record in records])
    fresh: list[dict[str, Any]] = []
    patients: dict[uuid.UUID, uuid.UUID] = {}
    for record, signed in zip(records, checked, strict=True):
        raw = record.raw
        visit_id, patient_id = mine.get(raw.get("visit_id"), (None, None))
        try:
            if isinstance(signed, clinical.Untrusted):
                raise signed
            signed_sha256 = digest(signed)
            if stored_twin(stored.get(record.id), signed_sha256, content=lambda body: body,
                           conflict=clinical.id_taken(table.name, raw)) is not None:
                summary.count(summary.unchanged, table.name)
                continue
            if visit_id is None:
                raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
            data = record.loaded()
            fresh.append({**clinical.signed_columns(
                caller, visit_id, clinical.Received(raw=raw, data=data), rt), **columns(data)})
            patients[record.id] = patient_id
            stored[record.id] = signed_sha256
        except REFUSALS as refused:
            _hold(session, rt, caller, table, visit_id, _untrusted(table, raw, refused),
                  summary)
            continue
        summary.count(summary.applied, table.name)
        summary.sessions.add(visit_id)
    if fresh:
        # One multi-row Core INSERT (the ORM's bulk path costs as much again in Python); the
        # ORM does not see these rows, so number them here.
        box = cipher_of(session)
        session.execute(insert(table.model.__table__),
                        [sealed_values(box, table.model, row) for row in fresh])
        for row in fresh:
            # Who sees it is known here (its visit's patient): the commit need not read it back.
            synced.note(session, table.name, row["id"], seen_by=(
                caller.organisation_id, patients[row["id"]], None, None))
            # Stored as exactly what the phone signed, so its copy is the server's.
            synced.pushed(session, table.name, row["id"], caller.device_id, amended=False)


def _nurse_visits(session: Session, caller: Caller,
                  values: set[Any]) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    """Return the nurse's own visits among the pushed visit ids, by their text, with patients."""
    wanted = {}
    for value in values:
        try:
            wanted[uuid.UUID(value)] = value
        except (TypeError, ValueError, AttributeError):
            continue
    if not wanted:
        return {}
    return {wanted[visit_id]: (visit_id, patient_id) for visit_id, patient_id in session.execute(
        select(Visit.id, Visit.patient_id).where(
            Visit.id.in_(wanted), Visit.organisation_id == caller.organisation_id,
            Visit.nurse_id == caller.user_id))}


def _hold(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
          visit_id: uuid.UUID | None, untrusted: clinical.Untrusted, summary: Summary) -> None:
    held: QuarantinedEvent = clinical.quarantine(session, rt, caller, visit_id, untrusted)
    record_id = uuid.UUID(untrusted.raw["id"])
    # The phone marks the record synced; make its next pull show what the server holds under
    # the id in her organisation, or delete it. Another organisation's record is left untouched.
    if of_organisation(session, table.model, record_id, caller.organisation_id) is None:
        synced.drop(session, table.name, record_id, caller.user_id, caller.organisation_id)
    else:
        synced.note(session, table.name, record_id)
    summary.quarantined.append({"table": table.name, "record_id": held.record_id,
                                "quarantine_id": str(held.id), "reason": held.reason})


def _apply_clinical(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
                    record: Record, visit_id: uuid.UUID | None) -> bool:
    clinical.verify_record(session, caller, table.name, record.raw)
    if visit_id is None:
        raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
    existed = session.get(table.model, record.id) is not None
    clinical.RECORDERS[CLINICAL[table.name]](session, rt, caller, visit_id, clinical.Received(
        raw=record.raw, data=record.loaded()))
    return not existed


def _apply_evv(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
               record: Record, visit_id: uuid.UUID | None) -> bool:
    raw = record.raw
    signed = clinical.verify_record(session, caller, table.name, raw)
    if stored_twin(session.get(EvvEvent, record.id), (digest(signed), raw.get("signature")),
                   content=lambda event: (event.signed_body_sha256, event.device_signature),
                   conflict=clinical.id_taken(table.name, raw)) is not None:
        return False
    if visit_id is None:
        raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
    position = record.loaded()
    evv.verify_presence(session, rt, caller, visit_id, raw["kind"], evv.Position(
        **position, id=record.id, signed_body=signed, signature=raw["signature"]))
    return True


def _apply_custody(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
                   record: Record, visit_id: uuid.UUID | None) -> bool:
    if record.raw.get("visit_id") is not None and visit_id is None:
        raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
    request: custody.EntryRequest = record.loaded()
    existed = session.get(table.model, record.id) is not None
    try:
        custody.record(session, rt, caller, request)
    except SignatureInvalid as exc:
        raise clinical.Untrusted("signature_invalid", exc.message, table.name, record.raw,
                                 f"signature_invalid: {exc.details.get('reason', exc.message)}"
                                 ) from exc
    return not existed


_APPLY = {"evv_events": _apply_evv, "custody_entries": _apply_custody,
          **{name: _apply_clinical for name in CLINICAL}}


def _visit_fields(session: Session, rt: Runtime, pushed: dict[uuid.UUID, dict],
                  summary: Summary) -> None:
    """Note the visit columns where the server's value, derived from EVV events, stands."""
    table = BY_NAME["visits"]
    for server in table.read(session, rt, sorted(pushed, key=str)):
        item = pushed[uuid.UUID(server["id"])]
        differing = sorted(name for name in table.writable
                           if name in item and item[name] != server[name])
        summary.count(summary.unchanged if differing else summary.applied, "visits")
        if differing:
            # The phone marks its change synced: renumber the visit so its next pull corrects it.
            synced.note(session, "visits", uuid.UUID(server["id"]))
            summary.kept_server_values.append({"table": "visits", "record_id": server["id"],
                                               "fields": differing})
