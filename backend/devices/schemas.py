"""Request and response bodies for devices."""

from __future__ import annotations

import base64

from marshmallow import Schema, fields, validate


class DeviceCreateSchema(Schema):
    """A phone's Ed25519 public key and a label the nurse recognises."""

    id = fields.UUID(load_default=None, metadata={
        "description": "Optional client-made UUID, so a retried registration is recognisable."})
    public_key = fields.String(required=True, validate=validate.Length(1, 64), metadata={
        "description": "Raw 32-byte Ed25519 public key, base64."})
    label = fields.String(required=True, validate=validate.Length(1, 100))


class DeviceSchema(Schema):
    """A registered device."""

    id = fields.UUID()
    user_id = fields.UUID()
    label = fields.String()
    public_key = fields.Function(lambda device: base64.b64encode(device.public_key).decode())
    registered_at = fields.AwareDateTime()
    revoked_at = fields.AwareDateTime(allow_none=True)
