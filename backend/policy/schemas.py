"""Request and response bodies for policy thresholds."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class ThresholdSchema(Schema):
    """A threshold: its value in force, its default and bounds, unit and source."""

    name = fields.String()
    value = fields.String(metadata={"description": "The value in force (decimal string)."})
    default = fields.String()
    minimum = fields.String(metadata={
        "description": "The smallest value an organisation or a plan may set."})
    maximum = fields.String(metadata={
        "description": "The largest value an organisation or a plan may set."})
    unit = fields.String()
    source = fields.String(metadata={"description": "Where the default comes from."})
    practice = fields.Boolean(metadata={
        "description": "True when the default is common practice, not a published rule."})


class ThresholdUpdateSchema(Schema):
    """A new value for one threshold; null returns it to the default."""

    value = fields.String(required=True, allow_none=True, validate=validate.Length(1, 40),
                          metadata={"description": "A decimal string between the threshold's "
                                                   "minimum and maximum, or null."})
