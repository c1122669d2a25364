"""Request and response bodies for treatment plans."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded
from backend.plans import signing

DOSE_DOC = "Dose per kg of body weight in µg/kg (500 = 0.5 mg/kg); or give dose_ug."
JUSTIFICATION_DOC = (
    "Why the dose is above the protocol dose (protocol_mg_per_kg in GET /api/v1/policy, 0.5 "
    "mg/kg by default; CLINICAL.md). Required when the plan's highest dose, its own or a "
    "phase's, is above it (a fixed dose_ug compared by the patient's latest weight, when one "
    "is recorded): without it the plan is refused with 422 naming dose_justification. A plan "
    "written above the protocol dose raises `prescriber.above_protocol` once, as it is "
    "written. Kept encrypted as PHI.")
OVERRIDES_DOC = (
    "Thresholds for this patient over the organisation's (names as in GET /api/v1/policy, "
    "values as decimal strings), e.g. {\"min_interval_hours\": \"72\"}; the safeguard rules "
    "judge this plan's visits by them. The session ceiling (max_mg_per_kg_racemic_iv) can be "
    "lowered here, not raised above the organisation's.")


class PhaseSchema(Schema):
    """A phase and its frequency limits."""

    ordinal = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(1, 60))
    starts_on = bounded.Date(required=True, metadata={
        "description": "First day of the phase, in the organisation's timezone."})
    dose_ug_per_kg = bounded.Integer(allow_none=True, load_default=None,
                                     validate=validate.Range(1), metadata={
                                        "description": "Overrides the plan's dose."})
    dose_ug = bounded.Integer(allow_none=True, load_default=None, validate=validate.Range(1))
    min_interval_hours = bounded.Integer(required=True, validate=validate.Range(0, 24 * 90))
    max_per_7_days = bounded.Integer(required=True, validate=validate.Range(0, 14))
    max_per_28_days = bounded.Integer(required=True, validate=validate.Range(0, 56))


class PlanWriteSchema(Schema):
    """What a prescriber writes; phases default to policy (induction, maintenance, taper)."""

    product_id = fields.UUID(required=True)
    route = fields.String(required=True, validate=validate.Length(1, 20))
    dose_ug_per_kg = bounded.Integer(load_default=None, validate=validate.Range(1),
                                     metadata={"description": DOSE_DOC})
    dose_ug = bounded.Integer(load_default=None, validate=validate.Range(1),
                              metadata={"description": "Fixed dose in µg."})
    max_dose_ug = bounded.Integer(required=True, validate=validate.Range(1), metadata={
        "description": "Most that may be given in one session, in µg."})
    infusion_minutes = bounded.Integer(required=True, validate=validate.Range(1, 600))
    starts_on = bounded.Date(required=True)
    phases = fields.List(fields.Nested(PhaseSchema), load_default=None, metadata={
        "description": "Ordered phases; omitted: induction, maintenance and taper from policy."})
    policy_overrides = fields.Dict(
        keys=fields.String(validate=validate.Length(1, 60)),
        values=fields.String(validate=validate.Length(1, 40)), load_default=dict,
        metadata={"description": OVERRIDES_DOC})
    dose_justification = fields.String(load_default=None, validate=validate.Length(1, 2000),
                                       metadata={"description": JUSTIFICATION_DOC})


class PlanCreateSchema(PlanWriteSchema):
    """A new plan for a patient."""

    id = fields.UUID(load_default=None, metadata={"description": "Optional client-made UUID."})


class PlanReviseSchema(PlanWriteSchema):
    """A new version of a plan, with the reason for the change."""

    change_reason = fields.String(required=True, validate=validate.Length(1, 2000))


class SignatureSchema(Schema):
    """The prescriber's signature of an order (21 CFR 1311.120(b)(11))."""

    signed_by_id = fields.UUID(attribute="prescriber_id")
    signed_by_name = fields.String(attribute="prescriber.display_name", metadata={
        "description": "The signer's full name, as a DEA record names people."})
    signed_by_username = fields.String(attribute="prescriber.username")
    signed_at = fields.AwareDateTime()
    factor = fields.String(attribute="signature_method", metadata={
        "description": "The second factor proved: `totp`, `recovery_code` or `webauthn` "
                       "(`simulated`/`demo` for the simulator's and the demo's seed)."})
    factor_id = fields.UUID(attribute="signature_factor_id", allow_none=True)
    factor_proved_at = fields.AwareDateTime(allow_none=True)
    content_hash = fields.String(metadata={
        "description": "Hex SHA-256 of the RFC 8785 JSON of the order's content and of who "
                       "signed it, when and with what factor."})
    verified = fields.Method("_verified", metadata={
        "type": "boolean", "description": "Whether the stored order still matches "
                                          "content_hash."})

    def _verified(self, version) -> bool | None:
        return signing.verify(version.plan, version)


class PlanVersionSchema(Schema):
    """One version of a plan, as written."""

    id = fields.UUID()
    version = fields.Integer()
    product_id = fields.UUID()
    route = fields.String()
    dose_ug_per_kg = fields.Integer(allow_none=True)
    dose_ug = fields.Integer(allow_none=True)
    max_dose_ug = fields.Integer()
    infusion_minutes = fields.Integer()
    prescriber_id = fields.UUID()
    created_at = fields.AwareDateTime()
    change_reason = fields.String(allow_none=True)
    dose_justification = fields.String(allow_none=True, metadata={
        "description": "Why the dose is above the protocol dose, as the prescriber wrote it; "
                       "null when none was needed or given."})
    policy_overrides = fields.Dict(keys=fields.String(), values=fields.String(),
                                   allow_none=True, metadata={"description": OVERRIDES_DOC})
    phases = fields.List(fields.Nested(PhaseSchema))
    signature = fields.Nested(SignatureSchema, allow_none=True, metadata={
        "description": "The prescriber's signature, or null for a version written before "
                       "orders were signed."})


class PlanSchema(Schema):
    """A plan with every version, oldest first."""

    id = fields.UUID()
    patient_id = fields.UUID()
    status = fields.String()
    current_version = fields.Integer()
    created_at = fields.AwareDateTime()
    versions = fields.List(fields.Nested(PlanVersionSchema))


class SeriesSchema(Schema):
    """Visits generated from an RFC 5545 recurrence rule."""

    nurse_id = fields.UUID(required=True)
    first_start = bounded.DateTime(required=True, metadata={
        "description": "The first visit's start; later ones keep its local time of day."})
    rrule = fields.String(required=True, validate=validate.Length(1, 500), metadata={
        "description": "e.g. FREQ=WEEKLY;BYDAY=MO,TH;COUNT=8 (induction, twice weekly)."})
    duration_minutes = bounded.Integer(load_default=None, validate=validate.Range(15, 720))
    override_reason = fields.String(load_default=None, validate=validate.Length(1, 2000),
                                    metadata={"description": "Prescriber only: pass a "
                                              "frequency limit; recorded and flagged."})
