"""Request and response bodies for visits and visit verification."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded

REASON = {"validate": validate.Length(1, 2000)}


class VisitCreateSchema(Schema):
    """One visit to schedule."""

    id = fields.UUID(load_default=None, metadata={"description": "Optional client-made UUID."})
    patient_id = fields.UUID(required=True)
    nurse_id = fields.UUID(required=True)
    scheduled_start = bounded.DateTime(required=True)
    scheduled_end = bounded.DateTime(load_default=None, metadata={
        "description": "Default: start + the policy's visit_minutes."})
    override_reason = fields.String(load_default=None, **REASON, metadata={
        "description": "Prescriber only: pass a frequency limit; recorded and flagged."})


class VisitQuerySchema(Schema):
    """Filters for listing visits."""

    nurse = fields.String(metadata={"description": "`me`, or a nurse's id."})
    patient_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(
        ["scheduled", "checked_in", "completed", "missed", "cancelled", "rescheduled"]))
    since = bounded.DateTime(data_key="from", metadata={"description": "Ends after this."})
    until = bounded.DateTime(data_key="to", metadata={"description": "Starts before this."})


class VisitSchema(Schema):
    """A visit."""

    id = fields.UUID()
    patient_id = fields.UUID()
    nurse_id = fields.UUID()
    plan_version_id = fields.UUID()
    phase_ordinal = fields.Integer()
    scheduled_start = fields.AwareDateTime()
    scheduled_end = fields.AwareDateTime()
    status = fields.String()
    status_reason = fields.String(allow_none=True)
    series_id = fields.UUID(allow_none=True)
    rescheduled_from_id = fields.UUID(allow_none=True)
    override_reason = fields.String(allow_none=True)
    checked_in_at = fields.AwareDateTime(allow_none=True)
    checked_out_at = fields.AwareDateTime(allow_none=True)


class CancelSchema(Schema):
    """Why a visit is cancelled."""

    reason = fields.String(required=True, **REASON)


class RescheduleSchema(Schema):
    """The new time (and optionally nurse) of a visit."""

    scheduled_start = bounded.DateTime(required=True)
    scheduled_end = bounded.DateTime(load_default=None)
    nurse_id = fields.UUID(load_default=None)
    override_reason = fields.String(load_default=None, **REASON)


class PositionSchema(Schema):
    """Where the phone is at check-in or check-out, and its own clock."""

    latitude = fields.Decimal(required=True, places=6, as_string=True,
                              validate=validate.Range(-90, 90))
    longitude = fields.Decimal(required=True, places=6, as_string=True,
                               validate=validate.Range(-180, 180))
    accuracy_m = bounded.Integer(required=True, validate=validate.Range(0, 100_000))
    occurred_at = bounded.DateTime(required=True, metadata={
        "description": "The phone's clock; the server stores its own receipt time too."})
    reason = fields.String(load_default=None, **REASON, metadata={
        "description": "Required when outside the policy radius (evv_radius_m)."})


class EvvEventSchema(Schema):
    """A check-in or check-out."""

    latitude = fields.Decimal(as_string=True)
    longitude = fields.Decimal(as_string=True)
    accuracy_m = fields.Integer()
    occurred_at = fields.AwareDateTime()
    received_at = fields.AwareDateTime()
    distance_m = fields.Integer(allow_none=True)
    radius_m = fields.Integer()
    within_radius = fields.Boolean()
    reason = fields.String(allow_none=True)
    device_id = fields.UUID(allow_none=True)


class EvvSchema(Schema):
    """The six EVV elements: service, patient, date, location, provider, start and end."""

    visit_id = fields.UUID()
    service = fields.String()
    patient_id = fields.UUID()
    date = fields.String()
    nurse_id = fields.UUID()
    check_in = fields.Nested(EvvEventSchema, allow_none=True)
    check_out = fields.Nested(EvvEventSchema, allow_none=True)
