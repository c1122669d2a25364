"""Query, request and response bodies for flags and their review."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded
from backend.flags.models import FlagAction, FlagStatus, Resolution
from safeguards.findings import Severity

STATUSES = [status.value for status in FlagStatus]
SEVERITIES = [severity.value for severity in Severity]
RESOLUTIONS = [resolution.value for resolution in Resolution]


class FlagQuerySchema(Schema):
    """Filters for the review queue; repeat `status` or `severity` to match any of several."""

    status = fields.List(fields.String(validate=validate.OneOf(STATUSES)), load_default=(),
                         metadata={"description": "open, in_review or resolved."})
    severity = fields.List(fields.String(validate=validate.OneOf(SEVERITIES)), load_default=(),
                           metadata={"description": "info, low, medium, high or critical."})
    rule = fields.String(validate=validate.Length(1, 80),
                         metadata={"description": "A rule id, e.g. custody.count_discrepancy."})
    nurse = fields.UUID(metadata={"description": "Flags about this nurse."})
    patient = fields.UUID(metadata={"description": "Flags about this patient."})
    assignee = fields.UUID(metadata={"description": "Flags assigned to this reviewer."})
    subject_kind = fields.String(validate=validate.Length(1, 20))
    subject_id = fields.String(validate=validate.Length(1, 64))
    shadow = fields.Boolean(load_default=False, metadata={
        "description": "false (default): the live queue; true: only the findings of rules "
                       "in shadow mode, recorded so the rule can be judged first."})
    limit = bounded.Integer(load_default=100, validate=validate.Range(1, 1000))
    offset = bounded.Integer(bits=64, load_default=0, validate=validate.Range(0))


class FlagSchema(Schema):
    """A flag raised for review, with its evidence and where it is in review."""

    id = fields.UUID()
    rule_id = fields.String()
    rule_version = fields.Integer()
    severity = fields.String(metadata={"description": "info, low, medium, high or critical."})
    subject_kind = fields.String()
    subject_id = fields.String()
    nurse_id = fields.UUID(allow_none=True, metadata={
        "description": "The nurse the finding concerns, if it names one."})
    patient_id = fields.UUID(allow_none=True, metadata={
        "description": "The patient the finding concerns, if it names one."})
    summary = fields.String()
    evidence = fields.Dict()
    status = fields.String(metadata={"description": "open, in_review or resolved."})
    assignee_id = fields.UUID(allow_none=True)
    resolution = fields.String(allow_none=True, metadata={"description": ", ".join(RESOLUTIONS)})
    resolved_at = fields.AwareDateTime(allow_none=True)
    resolved_by_id = fields.UUID(allow_none=True)
    shadow = fields.Boolean()
    occurrences = fields.Integer(metadata={
        "description": "How many distinct events (doses, check-ins, refusals) the case "
                       "gathered; the same event found again (every night's re-check) counts "
                       "once."})
    occurrence_key = fields.String(allow_none=True, metadata={
        "description": "The event whose evidence the flag shows: the case's latest."})
    first_seen_at = fields.AwareDateTime()
    last_seen_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class FlagEventSchema(Schema):
    """One step in a flag's history."""

    seq = fields.Integer()
    at = fields.AwareDateTime()
    actor_id = fields.UUID(allow_none=True, metadata={
        "description": "Who acted; null when a rule raised or re-raised the flag."})
    action = fields.String(metadata={"description": ", ".join(a.value for a in FlagAction)})
    from_status = fields.String(allow_none=True)
    to_status = fields.String(allow_none=True, metadata={
        "description": "Set with from_status when the step changed the status."})
    note = fields.String(allow_none=True)
    detail = fields.Dict(metadata={
        "description": "raised: the finding; re_raised: the `previous` finding it replaced "
                       "and the new `finding`, with the case's `occurrence` count, the "
                       "`occurrence_key` and whether it was a `new_occurrence`; assigned: "
                       "`from` and `to` reviewers; resolved: the resolution; reopened: the "
                       "verdict it set aside."})


class FlagOccurrenceSchema(Schema):
    """One distinct event of a flag's case."""

    occurrence_key = fields.String(metadata={
        "description": "The event's id as the rule names it (a dose, a check-in), or its "
                       "SHA-256 when longer than 64 characters."})
    severity = fields.String(metadata={"description": "The severity it was found at."})
    first_seen_at = fields.AwareDateTime()


class FlagDetailSchema(FlagSchema):
    """A flag with its full history and its case's occurrences, oldest first."""

    events = fields.List(fields.Nested(FlagEventSchema))
    occurrence_list = fields.List(fields.Nested(FlagOccurrenceSchema),
                                  attribute="occurrence_rows", data_key="occurrence_list")


class AssignSchema(Schema):
    """The reviewer to give a flag to."""

    assignee_id = fields.UUID(required=True, metadata={
        "description": "An active compliance or admin user of the organisation."})


class NoteSchema(Schema):
    """A reviewer's note."""

    note = fields.String(required=True, validate=validate.Length(1, 10_000))


class ResolveSchema(Schema):
    """The reviewer's verdict and the note that explains it."""

    resolution = fields.String(required=True, validate=validate.OneOf(RESOLUTIONS), metadata={
        "description": "justified: a real event with a good reason; confirmed_misuse or "
                       "confirmed_diversion: a real event that was misuse or diversion; "
                       "false_positive: the rule was wrong."})
    note = fields.String(required=True, validate=validate.Length(1, 10_000))
