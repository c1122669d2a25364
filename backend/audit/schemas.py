"""Query and response bodies for the audit trail."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded


class AuditQuerySchema(Schema):
    """Filters for listing audit events; all optional, combined with AND."""

    user_id = fields.UUID()
    action = fields.String(validate=validate.Length(1, 60))
    object_type = fields.String(validate=validate.Length(1, 40))
    object_id = fields.String(validate=validate.Length(1, 64))
    since = bounded.DateTime(metadata={"description": "Inclusive lower bound (UTC)."})
    until = bounded.DateTime(metadata={"description": "Exclusive upper bound (UTC)."})
    limit = bounded.Integer(load_default=100, validate=validate.Range(1, 1000))
    offset = bounded.Integer(bits=64, load_default=0, validate=validate.Range(0))


class AuditEventSchema(Schema):
    """One audit event."""

    id = fields.UUID()
    user_id = fields.UUID(allow_none=True)
    action = fields.String()
    object_type = fields.String()
    object_id = fields.String(allow_none=True)
    occurred_at = fields.AwareDateTime()
    device_id = fields.UUID(allow_none=True)
    address = fields.String(allow_none=True)
    detail = fields.Dict()
