"""Read a phone's push into typed records, each validated by its API schema, before any is applied.

A push not in WatermelonDB's shape (not JSON, an unknown table or column, a value of the wrong
type, an id that is not a UUID, an edit of an append-only record) is refused whole as
`Malformed`, naming the table, the record id and the field. A record in the right shape whose
values its API schema refuses keeps the refusal: applying quarantines it once its signature is
checked, and the rest of the push still applies. Custody entries are read by the schema of
`POST /api/v1/custody/entries`, so a phone and the API are accepted and refused alike.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from marshmallow import ValidationError

from backend import untrusted
from backend.custody.models import Kind
from backend.custody.schemas import EntryCreateSchema
from backend.custody.service import EntryRequest
from backend.errors import VigilError
from backend.sync.readers import Reader, compile_reader
from backend.sync.tables import BOOKKEEPING, BY_NAME, PUSH_SCHEMAS, Access, SyncTable
from backend.visits.evv import EVV_STEPS

ACTIONS = ("created", "updated", "deleted")
TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,)}
# Why a record's values may be refused: it goes to quarantine, and the push goes on.
REFUSED = (ValidationError, json.JSONDecodeError)
# Columns of a pushed custody entry that the API does not take: the server sets the holders.
HOLDERS = ("from_holder", "to_holder")


class Malformed(VigilError):
    """The push is not in WatermelonDB's shape; nothing of it was applied."""

    status = 400
    code = "malformed_push"


class TooLarge(VigilError):
    """The push holds more records than one push may."""

    status = 413
    code = "push_too_large"


@dataclass(frozen=True)
class Record:
    """One pushed record: the columns the phone signed, and its values as the API reads them."""

    table: str
    id: uuid.UUID
    # The columns without WatermelonDB's bookkeeping: exactly what the phone signed.
    raw: dict[str, Any]
    values: Any = None
    refusal: Exception | None = None

    def loaded(self) -> Any:
        """Return the record's values, or raise why its schema refused them."""
        if self.refusal is not None:
            raise self.refusal
        return self.values


@dataclass(frozen=True)
class Changes:
    """One table's pushed records, by WatermelonDB's action."""

    created: tuple[Record, ...] = ()
    updated: tuple[Record, ...] = ()
    deleted: tuple[uuid.UUID, ...] = ()

    def __len__(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)


@dataclass(frozen=True)
class PushRequest:
    """A read push: the phone's cursor and schema, and its changes by table."""

    last_pulled_at: int
    schema_version: int
    changes: dict[str, Changes]

    def created(self, table: str) -> tuple[Record, ...]:
        """Return the records of `table` the phone created."""
        changes = self.changes.get(table)
        return changes.created if changes else ()


def parse(body: bytes, last_pulled_at: int, schema_version: int,
          max_records: int) -> PushRequest:
    """Read the push; refuse it whole if its shape, tables, columns or types are wrong."""
    shaped = {name: _shaped(BY_NAME[name], actions)
              for name, actions in _tables(body).items()}
    records = sum(len(items) for actions in shaped.values() for items in actions.values())
    if records > max_records:
        raise TooLarge(f"A push holds at most {max_records} records; send the rest in the "
                       "next push.", {"records": records, "limit": max_records})
    return PushRequest(last_pulled_at, schema_version, {
        name: _changes(BY_NAME[name], actions) for name, actions in shaped.items()})


def _tables(body: bytes) -> dict[str, Any]:
    """Return the body's changes by table, each a table the phone knows."""
    try:
        # The one gate of every JSON body (NUL, lone surrogates, NaN, depth), paths named.
        decoded = untrusted.loads(body)
    except ValueError:
        raise Malformed("The body is not JSON.", {"field": "body"}) from None
    if not isinstance(decoded, dict) or set(decoded) != {"changes"}:
        raise Malformed("The body is {\"changes\": {table: {created, updated, deleted}}}.",
                        {"field": "changes"})
    changes = decoded["changes"]
    if not isinstance(changes, dict):
        raise Malformed("`changes` is an object of tables.", {"field": "changes"})
    for name in changes:
        if name not in BY_NAME:
            raise Malformed(f"Unknown table {name!r}.", {"table": name})
    return changes


def _shaped(table: SyncTable, actions: Any) -> dict[str, list]:
    """Return the table's records by action, each checked against the table's columns."""
    if not isinstance(actions, dict) or not set(actions) <= set(ACTIONS):
        raise Malformed("Each table has created, updated and deleted lists.",
                        {"table": table.name})
    shaped = {action: _items(table, action, actions.get(action) or []) for action in ACTIONS}
    if table.access is Access.APPEND_ONLY:
        _refuse_edits(table, shaped)
    return shaped


def _items(table: SyncTable, action: str, items: Any) -> list:
    if not isinstance(items, list):
        raise Malformed(f"`{action}` is a list.", {"table": table.name, "field": action})
    if action == "deleted":
        for item in items:
            _uuid(table, item, item)
        return [uuid.UUID(item) for item in items]
    for item in items:
        if not isinstance(item, dict):
            raise Malformed("Each record is an object.", {"table": table.name})
        _uuid(table, item.get("id"), item.get("id"))
        _columns(table, item)
    return items


def _columns(table: SyncTable, item: dict[str, Any]) -> None:
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


def _uuid(table: SyncTable, value: Any, record: Any) -> None:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise Malformed("id is a UUID string.", {
            "table": table.name, "record_id": record if isinstance(record, str) else None,
            "field": "id"}) from None


def _refuse_edits(table: SyncTable, shaped: dict[str, list]) -> None:
    for action in ("updated", "deleted"):
        if shaped[action]:
            first = shaped[action][0]
            record_id = str(first if action == "deleted" else first["id"])
            raise Malformed(f"{table.name} is append-only: records are created, never "
                            f"{action}; a correction is a new record.",
                            {"table": table.name, "record_id": record_id, "field": action})


def _changes(table: SyncTable, actions: dict[str, list]) -> Changes:
    """Return the table's records, the created ones of an append-only table read as the API."""
    read = _reader(table)
    return Changes(created=tuple(_record(table, item, read) for item in actions["created"]),
                   updated=tuple(_record(table, item, None) for item in actions["updated"]),
                   deleted=tuple(actions["deleted"]))


def _reader(table: SyncTable) -> Reader | None:
    """Return how the table's records are read by its API schema, or None if they are not."""
    if table.access is not Access.APPEND_ONLY:
        # Visits are compared with what the server derives; reference tables are refused.
        return None
    if table.name == "custody_entries":
        return partial(_entry, EntryCreateSchema().load)
    if table.name == "evv_events":
        return partial(_position, _load(table.name))
    return partial(_signed, _load(table.name))


@cache
def _load(table: str) -> Reader:
    """Return the table's API schema reader, compiled once: pushes bring hundreds of records."""
    return compile_reader(PUSH_SCHEMAS[table]())


def _record(table: SyncTable, item: dict[str, Any], read: Reader | None) -> Record:
    raw = {key: value for key, value in item.items() if key not in BOOKKEEPING}
    record_id = uuid.UUID(raw["id"])
    if read is None:
        return Record(table.name, record_id, raw)
    try:
        return Record(table.name, record_id, raw, read(_plain(table, raw)))
    except REFUSED as refused:
        return Record(table.name, record_id, raw, refusal=refused)


def _plain(table: SyncTable, raw: dict[str, Any]) -> dict[str, Any]:
    """Return the record as the API takes it: JSON columns parsed, unrecorded ones left out."""
    # WatermelonDB keeps every column, so null is a value the phone never recorded.
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        column = table.column(key)
        is_json = column is not None and column.json and value
        out[key] = _json_column(key, value) if is_json else value
    return out


def _json_column(name: str, value: str) -> Any:
    """Return a JSON column's value as the API takes it; refuse what the gate refuses."""
    try:
        return untrusted.loads(value, root=name)
    except untrusted.RefusedInput as refused:
        raise ValidationError({path: [problem] for path, problem in
                               refused.problems.items()}) from None


def _signed(load: Reader, plain: dict[str, Any]) -> dict[str, Any]:
    """Read a session record; its visit is the nurse's, looked up when it is applied."""
    return load({key: value for key, value in plain.items() if key != "visit_id"})


def _position(load: Reader, plain: dict[str, Any]) -> dict[str, Any]:
    """Read a check-in or check-out into where the phone was, as the API's EVV schema does."""
    if plain.get("kind") not in EVV_STEPS:
        raise ValidationError("must be check_in or check_out", "kind")
    return load({key: value for key, value in plain.items()
                 if key not in ("id", "kind", "signature", "visit_id")})


def _entry(load: Reader, plain: dict[str, Any]) -> EntryRequest:
    """Read a custody entry by the API's schema into the ledger's request."""
    body = {key: value for key, value in plain.items() if key not in HOLDERS}
    receiver = plain.get("to_holder") or ""
    # The phone names a transfer's receiving nurse by her bag; the API by her id.
    if plain.get("kind") == Kind.TRANSFER.value and receiver.startswith("bag:"):
        body["nurse_id"] = receiver.removeprefix("bag:")
    return load(body)
