"""Request and response bodies for drug products."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded
from backend.products import quantities
from backend.products.service import FORMS, ROUTES, SCHEDULES

NDC = ("The National Drug Code: 11 digits, or hyphenated 4-4-2, 5-3-2, 5-4-1 or 5-4-2; stored "
       "and shown as 11 digits in 5-4-2 form (`00409-4276-01`).")
PACKAGE = "The package as labelled, e.g. `10 mL multi-dose vial, carton of 10`."
RXNORM = "The RxNorm concept (RxCUI, digits) a FHIR export codes the product with."
RXCUI = validate.Regexp(r"^\d{1,12}$", error="an RxCUI: 1 to 12 digits")


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
    ndc = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 13),
                        metadata={"description": NDC})
    package_description = fields.String(load_default=None, allow_none=True,
                                        validate=validate.Length(1, 200), metadata={
                                            "description": PACKAGE})
    rxnorm_code = fields.String(load_default=None, allow_none=True, validate=RXCUI,
                                metadata={"description": RXNORM})
    package = fields.Function(quantities.package, dump_only=True, metadata={
        "description": "The package size with its unit, as DEA records print it."})


class ProductUpdateSchema(Schema):
    """What may be added to a product after it is stocked: its codes and package."""

    ndc = fields.String(allow_none=True, validate=validate.Length(1, 13),
                        metadata={"description": NDC})
    package_description = fields.String(allow_none=True, validate=validate.Length(1, 200),
                                        metadata={"description": PACKAGE})
    rxnorm_code = fields.String(allow_none=True, validate=RXCUI,
                                metadata={"description": RXNORM})
