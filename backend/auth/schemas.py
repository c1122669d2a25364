"""Request and response bodies for signing in (and the second factor), stepping up, signing out."""

from __future__ import annotations

from marshmallow import Schema, fields, post_dump, validate

from backend.mfa.schemas import ANY_CODE, CODE_DESCRIPTION

ASSERTION = ("A security key's assertion, as `navigator.credentials.get()` returns it "
             "(PublicKeyCredential JSON: id, rawId, type, response{clientDataJSON, "
             "authenticatorData, signature, userHandle}), answering the options from the "
             "matching `webauthn-options` call.")


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


class LoginResultSchema(Schema):
    """Tokens; or, when a second factor is due, `mfa_required` and a challenge token instead."""

    mfa_required = fields.Boolean(metadata={
        "description": "true: no tokens yet; complete with `POST /auth/login/factor`."})
    access_token = fields.String()
    refresh_token = fields.String()
    expires_in = fields.Integer(metadata={"description": "Access-token lifetime in seconds."})
    token_type = fields.Method("_token_type")
    factor_due_at = fields.AwareDateTime(metadata={
        "description": "Within the grace to enrol: when a second factor becomes required."})
    recovery_codes = fields.List(fields.String(), metadata={
        "description": "After an enrolment at sign-in: ten single-use codes, shown this once."})
    challenge_token = fields.String(metadata={
        "description": "Names the user and device for the second call; valid for "
                       "`challenge_expires_in` seconds."})
    challenge_expires_in = fields.Integer()
    methods = fields.List(fields.String(), metadata={
        "description": "How the user can prove a factor: `totp`, `webauthn`, `recovery_code`."})
    enrolment_required = fields.Boolean(metadata={
        "description": "true: the grace has run out and the user has no factor: enrol one with "
                       "`POST /auth/login/enrol`, and its first code signs in."})

    def _token_type(self, result) -> str | None:
        return "Bearer" if getattr(result, "access_token", None) else None

    @post_dump
    def _drop_absent(self, data: dict, **_kwargs) -> dict:
        return {key: value for key, value in data.items() if value is not None}


class ProvedSchema(Schema):
    """A second factor: a code, or a security key's assertion."""

    code = fields.String(load_default=None, validate=validate.Regexp(
        ANY_CODE, error="not a code of the right form"), metadata={"description": CODE_DESCRIPTION})
    webauthn = fields.Dict(load_default=None, metadata={"description": ASSERTION})


class LoginFactorSchema(ProvedSchema):
    """The second call of a challenged sign-in."""

    challenge_token = fields.String(required=True, validate=validate.Length(1, 2000))


class LoginEnrolSchema(Schema):
    """Begin the enrolment a challenge asks for (TOTP)."""

    challenge_token = fields.String(required=True, validate=validate.Length(1, 2000))
    label = fields.String(load_default=None, validate=validate.Length(1, 100))


class ChallengeTokenSchema(Schema):
    """A challenge token, to ask for a security key's assertion options."""

    challenge_token = fields.String(required=True, validate=validate.Length(1, 2000))


class StepUpResultSchema(Schema):
    """The factor this session has just proved, and until when sensitive actions accept it."""

    method = fields.String(metadata={"description": "`totp`, `webauthn` or `recovery_code`."})
    proved_at = fields.AwareDateTime()
    fresh_until = fields.AwareDateTime()
