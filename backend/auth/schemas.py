"""Request and response bodies for signing in and out."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class LoginSchema(Schema):
    """Credentials, and optionally the registered device the session is bound to."""

    org = fields.String(required=True, validate=validate.Length(1, 63),
                        metadata={"description": "The organisation's slug."})
    username = fields.String(required=True, validate=validate.Length(1, 150))
    password = fields.String(required=True, load_only=True, validate=validate.Length(1, 1024))
    device_id = fields.UUID(load_default=None, metadata={
        "description": "A device registered to this user; its revocation ends the session."})


class RefreshSchema(Schema):
    """A refresh token to rotate."""

    refresh_token = fields.String(required=True, validate=validate.Length(1, 200))


class TokenPairSchema(Schema):
    """A fresh access token and the refresh token that replaces the one presented."""

    access_token = fields.String()
    refresh_token = fields.String()
    expires_in = fields.Integer(metadata={"description": "Access-token lifetime in seconds."})
    token_type = fields.Constant("Bearer")
