"""Bodies of the liveness and readiness answers."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend.health.service import FAILED, OK, SKIPPED


class LivenessSchema(Schema):
    """The process is up."""

    status = fields.String(required=True, validate=validate.OneOf([OK]))


class ChecksSchema(Schema):
    """What each readiness check found; `skipped` where the database could not be asked."""

    database = fields.String(required=True, validate=validate.OneOf([OK, FAILED]), metadata={
        "description": "The database answers a query."})
    schema = fields.String(required=True, validate=validate.OneOf([OK, FAILED, SKIPPED]),
                           metadata={"description": "The database is at the head revision(s) "
                                                    "of the migrations (`vigil db upgrade`)."})
    keys = fields.String(required=True, validate=validate.OneOf([OK, FAILED]), metadata={
        "description": "The signing key, token secret, PHI keys and blind-index key are "
                       "loaded."})


class ReadinessSchema(Schema):
    """Whether this server should take traffic, and which check says not."""

    status = fields.String(required=True, validate=validate.OneOf(["ready", "not_ready"]))
    checks = fields.Nested(ChecksSchema, required=True)
