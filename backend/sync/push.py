"""Push: apply a phone's changes in one transaction, by WatermelonDB's rules, losing nothing.

Mutable records (visits) follow WatermelonDB: one changed on the server since the phone's
cursor aborts the whole push with 409, so the phone pulls first. Append-only records (the
clinical session, check-ins and check-outs, custody entries) are signed by the phone; one that
cannot be trusted or fails validation is quarantined with its reason and flagged, and the rest
of the push still applies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from backend.administration import service as clinical
from backend.administration.models import QuarantinedEvent
from backend.auth.caller import Caller
from backend.custody import service as custody
from backend.custody.models import Kind
from backend.devices.models import Device
from backend.errors import (
    Conflict,
    Forbidden,
    NotFound,
    SignatureInvalid,
    VigilError,
)
from backend.runtime import Runtime
from backend.sync import checks, origin, pending
from backend.sync.models import SyncRow
from backend.sync.pull import check_schema, checked_cursor, require_nurse
from backend.sync.tables import (
    BOOKKEEPING,
    BY_NAME,
    PUSH_SCHEMAS,
    Access,
    SyncTable,
    bag_nurse,
)
from backend.visits import service as visits
from backend.visits.models import EvvEvent, Visit

ACTIONS = ("created", "updated", "deleted")
# Order of application, whatever order the phone listed them in: check-ins, the session, then
# check-outs (each EVV step needs the one before), then custody. Each step is a table and, for
# EVV, which records of it.
STEPS: tuple[tuple[str, Callable[[dict], bool]], ...] = (
    ("evv_events", lambda item: item.get("kind") != "check_out"),
    ("pre_doses", lambda _item: True), ("doses", lambda _item: True),
    ("observations", lambda _item: True), ("discharges", lambda _item: True),
    ("outcome_scores", lambda _item: True),
    ("evv_events", lambda item: item.get("kind") == "check_out"),
    ("custody_entries", lambda _item: True))
CLINICAL = {"pre_doses": "pre_dose", "doses": "dose", "observations": "observations",
            "discharges": "discharge", "outcome_scores": "outcomes"}
TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,)}
# What makes a record go to quarantine rather than fail the push.
REFUSALS = (clinical.Untrusted, ValidationError, VigilError, json.JSONDecodeError)
# Records that may come by the hundred and need no query to build: stored in one batch.
MANY = {"observations": clinical.observation_columns,
        "outcome_scores": clinical.outcome_columns}


class Malformed(VigilError):
    """The push is not in WatermelonDB's shape; nothing of it was applied."""

    status = 400
    code = "malformed_push"


class TooLarge(VigilError):
    """The push holds more records than one push may."""

    status = 413
    code = "push_too_large"


class ConcurrentPush(Conflict):
    """Another push stored the same records first; a retry finds them and changes nothing."""

    code = "concurrent_push"


class SyncConflict(Conflict):
    """A record the phone changed was changed on the server after its last pull."""

    code = "sync_conflict"


@dataclass(frozen=True)
class PushRequest:
    """A parsed push: the phone's cursor and schema, and its changes by table and action."""

    last_pulled_at: int
    schema_version: int
    changes: dict[str, dict[str, list]]

    def records(self) -> int:
        """Return how many records the push carries."""
        return sum(len(items) for actions in self.changes.values()
                   for items in actions.values())


def parse(body: Any, last_pulled_at: int, schema_version: int,
          max_records: int) -> PushRequest:
    """Check the push's shape, tables, columns and types; refuse it whole if any is wrong."""
    if not isinstance(body, dict) or set(body) != {"changes"}:
        raise Malformed("The body is {\"changes\": {table: {created, updated, deleted}}}.",
                        {"field": "changes"})
    changes = body["changes"]
    if not isinstance(changes, dict):
        raise Malformed("`changes` is an object of tables.", {"field": "changes"})
    parsed: dict[str, dict[str, list]] = {}
    for name, actions in changes.items():
        table = BY_NAME.get(name)
        if table is None:
            raise Malformed(f"Unknown table {name!r}.", {"table": name})
        if not isinstance(actions, dict) or not set(actions) <= set(ACTIONS):
            raise Malformed("Each table has created, updated and deleted lists.",
                            {"table": name})
        parsed[name] = {action: _records(table, action, actions.get(action) or [])
                        for action in ACTIONS}
    request = PushRequest(last_pulled_at, schema_version, parsed)
    if request.records() > max_records:
        raise TooLarge(f"A push holds at most {max_records} records; send the rest in the "
                       "next push.", {"records": request.records(), "limit": max_records})
    return request


def _records(table: SyncTable, action: str, items: Any) -> list:
    if not isinstance(items, list):
        raise Malformed(f"`{action}` is a list.", {"table": table.name, "field": action})
    if action == "deleted":
        for item in items:
            _uuid(table, item, item, "id")
        return [uuid.UUID(item) for item in items]
    for item in items:
        if not isinstance(item, dict):
            raise Malformed("Each record is an object.", {"table": table.name})
        _uuid(table, item.get("id"), item.get("id"), "id")
        for key, value in item.items():
            if key == "id" or key in BOOKKEEPING:
                continue
            column = table.column(key)
            if column is None:
                raise Malformed(f"Unknown column {key!r}.", {
                    "table": table.name, "record_id": item["id"], "field": key})
            if value is not None and (not isinstance(value, TYPES[column.type]) or (
                    column.type == "number" and isinstance(value, bool))):
                raise Malformed(f"{key} is a {column.type}.", {
                    "table": table.name, "record_id": item["id"], "field": key})
    return items


def _uuid(table: SyncTable, value: Any, record: Any, name: str) -> None:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise Malformed(f"{name} is a UUID string.", {
            "table": table.name, "record_id": record if isinstance(record, str) else None,
            "field": name}) from None


def apply(session: Session, rt: Runtime, caller: Caller, request: PushRequest) -> dict[str, Any]:
    """Apply the push; return what was applied and what was quarantined."""
    require_nurse(caller)
    mutable = any(BY_NAME[name].access is not Access.APPEND_ONLY and any(actions.values())
                  for name, actions in request.changes.items())
    check_schema(request.schema_version, mutable=mutable)
    checked_cursor(session, caller.organisation_id, request.last_pulled_at)
    _refuse_reference_changes(request)
    _refuse_append_only_edits(request)
    pushed_visits = _lock_visits(session, caller, request)
    summary = Summary()
    for name, wanted in STEPS:
        items = sorted((item for item in request.changes.get(name, {}).get("created", [])
                        if wanted(item)), key=_when)
        if name in MANY:
            _append_many(session, rt, caller, BY_NAME[name], items, summary)
            continue
        for item in items:
            _append(session, rt, caller, BY_NAME[name], item, summary)
    _visit_fields(session, rt, pushed_visits, summary)
    summary.queued = checks.enqueue(session, rt.clock.now(), caller.organisation_id,
                                    summary.sessions)
    return summary.body()


def _when(item: dict[str, Any]) -> datetime:
    """Return when the phone says a record happened, for applying records in that order."""
    try:
        moment = datetime.fromisoformat(item.get("occurred_at") or "")
    except (TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _refuse_reference_changes(request: PushRequest) -> None:
    for name, actions in request.changes.items():
        table = BY_NAME[name]
        if table.access is Access.REFERENCE and any(actions.values()):
            raise Forbidden(f"{name} is read-only on the phone.", {"table": name})


def _refuse_append_only_edits(request: PushRequest) -> None:
    for name, actions in request.changes.items():
        if BY_NAME[name].access is not Access.APPEND_ONLY:
            continue
        for action in ("updated", "deleted"):
            if actions[action]:
                first = actions[action][0]
                record_id = str(first if action == "deleted" else first["id"])
                raise Malformed(f"{name} is append-only: records are created, never "
                                f"{action}; a correction is a new record.",
                                {"table": name, "record_id": record_id, "field": action})


def _lock_visits(session: Session, caller: Caller, request: PushRequest) -> dict[uuid.UUID, dict]:
    """Lock the visits the phone changed; refuse the push if any changed since its pull."""
    actions = request.changes.get("visits")
    if not actions:
        return {}
    pushed = {uuid.UUID(item["id"]): item for item in actions["created"] + actions["updated"]}
    wanted = set(pushed) | set(actions["deleted"])
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
    for visit_id in actions["deleted"]:
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

    def body(self) -> dict[str, Any]:
        """Return the push's answer."""
        return {"ok": True, "applied": self.applied, "unchanged": self.unchanged,
                "quarantined": self.quarantined, "kept_server_values": self.kept_server_values,
                "sessions_queued": self.queued}


def _plain(table: SyncTable, item: dict[str, Any]) -> dict[str, Any]:
    """Return the record in the API's shape: JSON columns parsed, nulls and visit left out."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key in BOOKKEEPING or key == "visit_id" or value is None:
            continue
        column = table.column(key)
        out[key] = json.loads(value) if column is not None and column.json and value else value
    return out


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
            item: dict[str, Any], summary: Summary) -> None:
    raw = {k: v for k, v in item.items() if k not in BOOKKEEPING}
    visit_id = _nurse_visits(session, caller, {raw.get("visit_id")}).get(raw.get("visit_id"))
    try:
        # A savepoint per record: one that is refused leaves no trace but its quarantine.
        with session.begin_nested():
            done = _APPLY[table.name](session, rt, caller, table, raw, visit_id)
    except REFUSALS as refused:
        _hold(session, rt, caller, table, visit_id, _untrusted(table, raw, refused), summary)
        return
    summary.count(summary.applied if done else summary.unchanged, table.name)
    if done:
        origin.pushed(session, rt, caller, table, raw)
    if visit_id is not None and table.name in CLINICAL:
        summary.sessions.add(visit_id)


def _append_many(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
                 items: list[dict[str, Any]], summary: Summary) -> None:
    """Verify, check and store a batch of records with a few queries, not a few per record."""
    if not items:
        return
    raws = [{k: v for k, v in item.items() if k not in BOOKKEEPING} for item in items]
    mine = _nurse_visits(session, caller, {raw.get("visit_id") for raw in raws})
    stored = dict(session.execute(select(table.model.id, table.model.signed_body).where(
        table.model.id.in_([uuid.UUID(raw["id"]) for raw in raws]))).all())
    schema, columns = PUSH_SCHEMAS[table.name](), MANY[table.name]
    # Held so that the session's identity map, which holds objects weakly, keeps the phone
    # for every record's signature check instead of reading it again each time.
    _phone = session.get(Device, caller.device_id) if caller.device_id else None
    fresh: list[dict[str, Any]] = []
    for raw in raws:
        visit_id = mine.get(raw.get("visit_id"))
        try:
            signed = clinical.verify_record(session, caller, table.name, raw)
            record_id = uuid.UUID(raw["id"])
            if record_id in stored:
                if stored[record_id] == signed:
                    summary.count(summary.unchanged, table.name)
                    continue
                raise clinical.Untrusted(
                    "append_only", "A different record already has this id.", table.name, raw,
                    "conflicting_duplicate: another record already has this id")
            if visit_id is None:
                raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
            data = schema.load(_plain(table, raw))
            fresh.append({**clinical.signed_columns(
                caller, visit_id, clinical.Received(raw=raw, data=data), rt), **columns(data)})
            stored[record_id] = signed
        except REFUSALS as refused:
            _hold(session, rt, caller, table, visit_id, _untrusted(table, raw, refused),
                  summary)
            continue
        summary.count(summary.applied, table.name)
        summary.sessions.add(visit_id)
    if fresh:
        # One multi-row Core INSERT (the ORM's bulk path costs as much again in Python); the
        # ORM does not see these rows, so number them here.
        session.execute(insert(table.model.__table__), fresh)
        for row in fresh:
            pending.note(session, table.name, row["id"])
            # Stored as exactly what the phone signed, so its copy is the server's.
            pending.pushed(session, table.name, row["id"], caller.device_id, amended=False)


def _nurse_visits(session: Session, caller: Caller, values: set[Any]) -> dict[str, uuid.UUID]:
    """Return the pushed visit ids that are the nurse's own visits, by their text."""
    wanted = {}
    for value in values:
        try:
            wanted[uuid.UUID(value)] = value
        except (TypeError, ValueError, AttributeError):
            continue
    if not wanted:
        return {}
    return {wanted[visit_id]: visit_id for visit_id in session.scalars(select(Visit.id).where(
        Visit.id.in_(wanted), Visit.organisation_id == caller.organisation_id,
        Visit.nurse_id == caller.user_id))}


def _hold(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
          visit_id: uuid.UUID | None, untrusted: clinical.Untrusted, summary: Summary) -> None:
    held: QuarantinedEvent = clinical.quarantine(session, rt, caller, visit_id, untrusted)
    record_id = uuid.UUID(untrusted.raw["id"])
    # The phone marks the record synced; make its next pull show what the server holds.
    if session.get(table.model, record_id) is None:
        pending.drop(session, table.name, record_id, caller.user_id, caller.organisation_id)
    else:
        pending.note(session, table.name, record_id)
    summary.quarantined.append({"table": table.name, "record_id": held.record_id,
                                "quarantine_id": str(held.id), "reason": held.reason})


def _apply_clinical(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
                    raw: dict[str, Any], visit_id: uuid.UUID | None) -> bool:
    clinical.verify_record(session, caller, table.name, raw)
    if visit_id is None:
        raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
    existed = session.get(table.model, uuid.UUID(raw["id"])) is not None
    data = PUSH_SCHEMAS[table.name]().load(_plain(table, raw))
    clinical.RECORDERS[CLINICAL[table.name]](session, rt, caller, visit_id,
                                             clinical.Received(raw=raw, data=data))
    return not existed


def _apply_evv(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
               raw: dict[str, Any], visit_id: uuid.UUID | None) -> bool:
    signed = clinical.verify_record(session, caller, table.name, raw)
    stored = session.get(EvvEvent, uuid.UUID(raw["id"]))
    if stored is not None:
        if stored.signed_body == signed and stored.device_signature == raw.get("signature"):
            return False
        raise clinical.Untrusted("append_only", "A different record already has this id.",
                                 table.name, raw,
                                 "conflicting_duplicate: another record already has this id")
    if visit_id is None:
        raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
    kind = raw.get("kind")
    if kind not in visits.EVV_STEPS:
        raise ValidationError("must be check_in or check_out", "kind")
    plain = _plain(table, raw)
    position = PUSH_SCHEMAS[table.name]().load(
        {k: v for k, v in plain.items() if k not in ("id", "kind", "signature")})
    visits.verify_presence(session, rt, caller, visit_id, kind, visits.Position(
        **position, id=uuid.UUID(raw["id"]), signed_body=signed, signature=raw["signature"]))
    return True


def _apply_custody(session: Session, rt: Runtime, caller: Caller, table: SyncTable,
                   raw: dict[str, Any], visit_id: uuid.UUID | None) -> bool:
    plain = _plain(table, raw)
    if raw.get("visit_id") is not None and visit_id is None:
        raise NotFound("No such visit of this nurse.", {"field": "visit_id"})
    try:
        kind = Kind(plain.get("kind"))
        witnesses = [custody.Witness(**{k: uuid.UUID(v) if k.endswith("_id") and v else v
                                        for k, v in w.items()})
                     for w in plain.get("witnesses") or []]
        request = custody.EntryRequest(
            kind=kind, id=uuid.UUID(raw["id"]), product_id=uuid.UUID(plain["product_id"]),
            lot=plain["lot"], expiry=date.fromisoformat(plain["expiry"]),
            quantity_ug=int(plain["quantity_ug"]),
            occurred_at=_aware(plain["occurred_at"]),
            nurse_id=bag_nurse(plain.get("to_holder")) if kind == Kind.TRANSFER else None,
            visit_id=visit_id, details=plain.get("details") or {},
            corrects_id=uuid.UUID(plain["corrects_id"]) if plain.get("corrects_id") else None,
            witnesses=witnesses, signature=plain.get("signature"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"not a custody entry: {exc}") from exc
    existed = session.get(table.model, request.id) is not None
    try:
        custody.record(session, rt, caller, request)
    except SignatureInvalid as exc:
        raise clinical.Untrusted("signature_invalid", exc.message, table.name, raw,
                                 f"signature_invalid: {exc.details.get('reason', exc.message)}"
                                 ) from exc
    return not existed


def _aware(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("occurred_at needs a UTC offset")
    return moment


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
            pending.note(session, "visits", uuid.UUID(server["id"]))
            summary.kept_server_values.append({"table": "visits", "record_id": server["id"],
                                               "fields": differing})
