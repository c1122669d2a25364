"""Query strings, headers and bodies of the sync endpoints."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate

from backend import bounded, untrusted

CURSOR = ("The `timestamp` of the phone's last pull: a number from the organisation's change "
          "sequence, not a clock. Absent, `null` or 0 asks for everything.")


class Cursor(fields.Field):
    """A change number, where `null`, empty or absent mean zero."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in (None, "", "null", "undefined"):
            return 0
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValidationError("a whole number, or null") from None
        if not 0 <= number <= bounded.INT64:
            raise ValidationError(f"from 0 to {bounded.INT64}")
        return number


class PullQuerySchema(Schema):
    """Pull: the cursor, the phone's schema, the optional page size and migration."""

    last_pulled_at = Cursor(load_default=0, metadata={"description": CURSOR})
    schema_version = bounded.Integer(required=True, validate=validate.Range(1), metadata={
        "description": "The phone's WatermelonDB schema version."})
    migration = fields.String(load_default=None, metadata={
        "description": "WatermelonDB's migration note as JSON: {from, tables, columns}. "
                       "The named tables are sent in full."})
    limit = bounded.Integer(load_default=None, validate=validate.Range(1, 10_000), metadata={
        "description": "Extension: at most this many records; `has_more` says whether to pull "
                       "again from the returned `timestamp`."})

    @post_load
    def _migration(self, data, **_kwargs):
        raw = data.get("migration")
        if raw is None:
            return data
        try:
            note = untrusted.loads(raw)
            data["migration"] = {
                "from": int(note["from"]), "tables": [str(t) for t in note.get("tables", [])],
                "columns": {str(c["table"]): [str(n) for n in c["columns"]]
                            for c in note.get("columns", [])}}
        except (ValueError, TypeError, KeyError, AttributeError, untrusted.RefusedInput):
            raise ValidationError("JSON {from, tables, columns}", "migration") from None
        if data["limit"] is not None:
            raise ValidationError("not with a migration: a migration's pull is one page",
                                  "limit")
        return data


class PushQuerySchema(Schema):
    """Push: the cursor of the pull it follows, and the phone's schema."""

    last_pulled_at = Cursor(load_default=0, metadata={"description": CURSOR})
    schema_version = bounded.Integer(load_default=None, validate=validate.Range(1), metadata={
        "description": "The phone's schema version (default: the server's)."})


class SyncHeadersSchema(Schema):
    """Headers a phone sends with every sync."""

    device_time = fields.String(data_key="X-Device-Time", load_default=None, metadata={
        "description": "The phone's clock (ISO 8601 with offset, or epoch ms): its offset is "
                       "kept, and flagged past policy `clock_drift_max_seconds`."})


class PushHeadersSchema(SyncHeadersSchema):
    """Headers of a push."""

    idempotency_key = fields.String(data_key="Idempotency-Key", load_default=None,
                                    validate=validate.Length(1, 200), metadata={
        "description": "Makes a retried push safe: the same key and body get the stored "
                       "answer; a different body 422; while the first runs 409."})


class TableChangesSchema(Schema):
    """One table's changes."""

    created = fields.List(fields.Dict(), load_default=list)
    updated = fields.List(fields.Dict(), load_default=list)
    deleted = fields.List(fields.String(), load_default=list)


class PullSchema(Schema):
    """What changed since the cursor."""

    changes = fields.Dict(keys=fields.String(), values=fields.Nested(TableChangesSchema),
                          metadata={"description": "By table: created, updated, deleted."})
    timestamp = fields.Integer(metadata={"description": "The cursor to send next time."})
    has_more = fields.Boolean(metadata={"description": "Pull again from `timestamp`."})


class PushBodySchema(Schema):
    """The phone's changes, in WatermelonDB's shape."""

    changes = fields.Dict(keys=fields.String(), values=fields.Nested(TableChangesSchema),
                          required=True)


class PushResultSchema(Schema):
    """What the push applied, left unchanged, or quarantined."""

    ok = fields.Boolean()
    applied = fields.Dict(keys=fields.String(), values=fields.Integer())
    unchanged = fields.Dict(keys=fields.String(), values=fields.Integer())
    quarantined = fields.List(fields.Dict(), metadata={
        "description": "Records kept in quarantine with the reason, and flagged."})
    kept_server_values = fields.List(fields.Dict(), metadata={
        "description": "Visit columns the server derives, where its value stands."})
    sessions_queued = fields.Integer(metadata={
        "description": "Visits whose session records the `sync_checks` job will judge "
                       "within a minute."})
