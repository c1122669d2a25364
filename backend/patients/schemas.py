"""Request and response bodies for patients, their weights and their nurses."""

from __future__ import annotations

import re
from decimal import Decimal

from marshmallow import Schema, ValidationError, fields, validate

from backend import bounded

PLAIN_DECIMAL = re.compile(r"\d{1,6}(\.\d{1,12})?")
# FHIR's administrative gender (Patient.gender), which the REMS monitoring form's "sex" takes.
SEXES = ("female", "male", "other", "unknown")
SEX = ("Administrative sex, as FHIR's Patient.gender: female, male, other or unknown. PHI, "
       "stored encrypted like the date of birth.")


class DecimalString(fields.Decimal):
    """A decimal written as a JSON string, such as "72.5": never a float, sign or exponent."""

    def _deserialize(self, value, attr, data, **kwargs) -> Decimal:
        if not isinstance(value, str) or not PLAIN_DECIMAL.fullmatch(value):
            raise ValidationError('Not a decimal string such as "72.5".')
        return super()._deserialize(value, attr, data, **kwargs)


class PatientDetailsSchema(Schema):
    """The optional details of a patient; null clears one."""

    address = fields.String(allow_none=True, validate=validate.Length(1, 500))
    phone = fields.String(allow_none=True, validate=validate.Length(1, 40))
    emergency_contact = fields.String(allow_none=True, validate=validate.Length(1, 500),
                                      metadata={"description": "Name, relation and phone."})
    notes = fields.String(allow_none=True, validate=validate.Length(1, 10_000))
    sex = fields.String(allow_none=True, validate=validate.OneOf(SEXES),
                        metadata={"description": f"{SEX} Optional; null clears it."})
    home_latitude = fields.Decimal(
        allow_none=True, as_string=True, places=6, validate=validate.Range(-90, 90),
        metadata={"description": "Degrees; given together with home_longitude. Stored in "
                                 "clear for visit verification."})
    home_longitude = fields.Decimal(
        allow_none=True, as_string=True, places=6, validate=validate.Range(-180, 180),
        metadata={"description": "Degrees; given together with home_latitude."})


class PatientCreateSchema(PatientDetailsSchema):
    """A new patient; every PHI field is encrypted before it is stored."""

    patient_id = fields.UUID(data_key="id", load_default=None,
                             metadata={"description": "Optional client-made UUID."})
    mrn = fields.String(required=True, validate=validate.Length(1, 64),
                        metadata={"description": "Medical record number; found by blind index."})
    name = fields.String(required=True, validate=validate.Length(1, 200))
    date_of_birth = bounded.Date(required=True)
    nurse_ids = fields.List(fields.UUID(), load_default=list,
                            metadata={"description": "Nurses assigned to the patient."})


class PatientUpdateSchema(PatientDetailsSchema):
    """Any subset of a patient's details; each changed PHI field is re-encrypted."""

    name = fields.String(validate=validate.Length(1, 200))
    date_of_birth = bounded.Date()


class PatientQuerySchema(Schema):
    """Filters for listing patients."""

    mrn = fields.String(validate=validate.Length(1, 64))


class WeightCreateSchema(Schema):
    """A weighing as the nurse or prescriber enters it."""

    weight_kg = DecimalString(required=True, metadata={
        "description": 'Kilograms as a decimal string, at most 3 places ("72.5"); 20–400.'})
    measured_at = bounded.DateTime(required=True,
                                   metadata={"description": "When; not in the future."})


def kilograms(weight) -> str:
    """Return a weighing's grams as kilograms with three places, such as "72.500"."""
    return f"{Decimal(weight.weight_g).scaleb(-3):f}"


class WeightSchema(Schema):
    """A recorded weighing."""

    id = fields.UUID()
    patient_id = fields.UUID()
    weight_kg = fields.Function(kilograms, metadata={"type": "string",
                                                     "description": "Kilograms, 3 places."})
    measured_at = fields.AwareDateTime()
    recorded_by_id = fields.UUID()
    recorded_at = fields.AwareDateTime()


class LatestWeightSchema(Schema):
    """The most recently measured weight."""

    weight_kg = fields.Function(kilograms, metadata={"type": "string"})
    measured_at = fields.AwareDateTime()


class PatientSchema(Schema):
    """A patient, decrypted for the caller."""

    id = fields.UUID()
    mrn = fields.String()
    name = fields.String()
    date_of_birth = fields.Date()
    sex = fields.String(allow_none=True, metadata={"description": f"{SEX} Null if not recorded."})
    address = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    emergency_contact = fields.String(allow_none=True)
    notes = fields.String(allow_none=True)
    home_latitude = fields.Decimal(as_string=True, allow_none=True)
    home_longitude = fields.Decimal(as_string=True, allow_none=True)
    nurse_ids = fields.List(fields.UUID())
    latest_weight = fields.Nested(LatestWeightSchema, allow_none=True)


class NurseAssignmentCreateSchema(Schema):
    """The nurse to assign."""

    nurse_id = fields.UUID(required=True)


class NurseAssignmentSchema(Schema):
    """A nurse's assignment to a patient."""

    id = fields.UUID()
    patient_id = fields.UUID()
    nurse_id = fields.UUID()
    assigned_at = fields.AwareDateTime()
    assigned_by_id = fields.UUID()
    ended_at = fields.AwareDateTime(allow_none=True)
