"""Request and response bodies for the safeguard rules and their thresholds."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend.flags.schemas import RESOLUTIONS
from safeguards.registry import Mode

MODES = [mode.value for mode in Mode]
PRECISION_DOC = (
    "Of this rule's flags that reviewers resolved in the organisation (shadow ones included), "
    "the share that were true positives: (justified + confirmed_misuse + confirmed_diversion) "
    "/ (those + false_positive), a decimal string to 3 places; null before the first verdict. "
    "A justified flag counts as right: the rule saw a real event that needed a look, even "
    "though it had a good reason.")


class RuleSchema(Schema):
    """A rule: what it flags and why, how it runs here, and how often reviewers agreed."""

    id = fields.String()
    version = fields.Integer()
    title = fields.String()
    severity = fields.String()
    rationale = fields.String()
    source = fields.String(metadata={"description": "Where the rule's reasoning comes from."})
    cadence = fields.String(metadata={
        "description": "When it runs: `event` as each fact is written (and over the last two "
                       "days in the nightly scan), `population` in the nightly scan over the "
                       "policy's scan_window_days."})
    default_mode = fields.String(metadata={"description": "The mode the rule ships with."})
    mode = fields.String(metadata={
        "description": "The mode in force here: enabled, shadow (runs; its flags stay out of "
                       "the live queue) or disabled."})
    open = fields.Integer(metadata={"description": "Flags not yet assigned."})
    in_review = fields.Integer(metadata={"description": "Flags assigned, not yet resolved."})
    resolved = fields.Integer(metadata={"description": "Flags with a verdict."})
    verdicts = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": f"Resolved flags per verdict: {', '.join(RESOLUTIONS)}."})
    # A string, as the documentation says: a Decimal field would be documented as a number.
    precision = fields.String(allow_none=True, metadata={"description": PRECISION_DOC})


class RuleModeSchema(Schema):
    """How the organisation runs a rule; null returns it to the rule's own mode."""

    mode = fields.String(required=True, allow_none=True, validate=validate.OneOf(MODES),
                         metadata={"description": ", ".join(MODES)})


class ThresholdsUpdateSchema(Schema):
    """New values for several thresholds at once; null returns one to its default."""

    thresholds = fields.Dict(
        keys=fields.String(validate=validate.Length(1, 60)),
        values=fields.String(allow_none=True, validate=validate.Length(1, 40)),
        required=True, validate=validate.Length(min=1), metadata={
            "description": "Threshold name → decimal string (or null), e.g. "
                           "{\"min_interval_hours\": \"72\", \"evv_radius_m\": null}."})
