"""Request and response bodies for drug products."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded
from backend.products.service import FORMS, ROUTES, SCHEDULES


class ProductSchema(Schema):
    """A drug product; strengths are integer micrograms per unit (mL or device)."""

    id = fields.UUID(load_default=None, metadata={"description": "Optional client-made UUID."})
    name = fields.String(required=True, validate=validate.Length(1, 200))
    active_ingredient = fields.String(required=True, validate=validate.Length(1, 100))
    dea_schedule = fields.String(required=True, validate=validate.OneOf(SCHEDULES))
    form = fields.String(required=True, validate=validate.OneOf(list(FORMS)))
    unit = fields.String(dump_only=True, metadata={"description": "mL or device, from form."})
    ug_per_unit = bounded.Integer(required=True, validate=validate.Range(1), metadata={
        "description": "Concentration in µg/mL, or µg per device."})
    units_per_container = fields.Decimal(required=True, as_string=True, places=3,
                                         validate=validate.Range(
                                             min=0, max=10_000, min_inclusive=False),
                                         metadata={"description": "mL per vial, or devices "
                                                                  "(at most 10,000)."})
    container_ug = fields.Integer(dump_only=True)
    allowed_routes = fields.List(fields.String(validate=validate.OneOf(ROUTES)), required=True,
                                 validate=validate.Length(1))
    home_administration_allowed = fields.Boolean(required=True, metadata={
        "description": "False for products whose REMS forbids use at home (esketamine)."})
