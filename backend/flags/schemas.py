"""Query and response bodies for flags."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class FlagQuerySchema(Schema):
    """Filters for listing flags."""

    status = fields.String(validate=validate.Length(1, 30))
    rule_id = fields.String(validate=validate.Length(1, 80))
    subject_kind = fields.String(validate=validate.Length(1, 20))
    subject_id = fields.String(validate=validate.Length(1, 64))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(0))


class FlagSchema(Schema):
    """A flag raised for review, with its evidence."""

    id = fields.UUID()
    rule_id = fields.String()
    rule_version = fields.Integer()
    severity = fields.String()
    subject_kind = fields.String()
    subject_id = fields.String()
    summary = fields.String()
    evidence = fields.Dict()
    status = fields.String()
    shadow = fields.Boolean()
    occurrences = fields.Integer()
    first_seen_at = fields.AwareDateTime()
    last_seen_at = fields.AwareDateTime()
