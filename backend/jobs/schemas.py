"""Query and response bodies for the notification outbox and the scheduler's job runs."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded


class PageQuerySchema(Schema):
    """Listing filters: since when, and paging."""

    since = bounded.DateTime(metadata={"description": "Inclusive lower bound (UTC)."})
    limit = bounded.Integer(load_default=100, validate=validate.Range(1, 1000))
    offset = bounded.Integer(bits=64, load_default=0, validate=validate.Range(0))


class NotificationSchema(Schema):
    """One message queued for the caller."""

    id = fields.UUID()
    kind = fields.String(metadata={"description": "What it is about, e.g. `visit.reminder`."})
    subject_type = fields.String()
    subject_id = fields.String()
    body = fields.Dict(metadata={"description": "Ids and times; never PHI."})
    created_at = fields.AwareDateTime()
    delivered_at = fields.AwareDateTime(allow_none=True)


class JobRunQuerySchema(PageQuerySchema):
    """Filters for job runs: which job, since when it started."""

    job = fields.String(validate=validate.Length(1, 60))


class JobRunSchema(Schema):
    """One run of one job for one slot."""

    id = fields.UUID()
    job = fields.String()
    slot = fields.String(metadata={"description": "Start of the period the run is for (ISO)."})
    holder = fields.String(metadata={"description": "The scheduler process: host:pid:random."})
    started_at = fields.AwareDateTime()
    # The outcome stays out: its counts span every organisation (it goes to the log instead).
    finished_at = fields.AwareDateTime(allow_none=True)
