"""Request and response bodies for patients."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class PatientCreateSchema(Schema):
    """A new patient; every PHI field is encrypted before it is stored."""

    id = fields.UUID(load_default=None, metadata={"description": "Optional client-made UUID."})
    mrn = fields.String(required=True, validate=validate.Length(1, 64),
                        metadata={"description": "Medical record number; found by blind index."})
    name = fields.String(required=True, validate=validate.Length(1, 200))
    date_of_birth = fields.Date(required=True)
    nurse_ids = fields.List(fields.UUID(), load_default=list,
                            metadata={"description": "Nurses assigned to the patient."})


class PatientQuerySchema(Schema):
    """Filters for listing patients."""

    mrn = fields.String(validate=validate.Length(1, 64))


class PatientSchema(Schema):
    """A patient, decrypted for the caller."""

    id = fields.UUID()
    mrn = fields.String()
    name = fields.String()
    date_of_birth = fields.Date()
    nurse_ids = fields.List(fields.UUID())
