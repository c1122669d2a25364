"""Request and response bodies for second factors and recovery codes."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend.mfa.models import FactorKind
from backend.mfa.webauthn import OptionsSchema

# Six digits from an authenticator app.
TOTP_CODE = r"^[0-9]{6}$"
# Six digits, or a recovery code as shown (four groups of four base32 characters, hyphens
# optional, any case).
ANY_CODE = r"^([0-9]{6}|[A-Za-z2-7]{4}(-?[A-Za-z2-7]{4}){3})$"
CODE_DESCRIPTION = ("A current code of one of your confirmed second factors (6 digits), or an "
                    "unused recovery code (e.g. `ABCD-EFGH-JKLM-NPQR`), which is then used up.")


def _code(pattern: str, description: str, **options) -> fields.String:
    return fields.String(validate=validate.Regexp(pattern, error="not a code of the right form"),
                         metadata={"description": description}, **options)


class FactorSchema(Schema):
    """A second factor, without its secret."""

    id = fields.UUID()
    kind = fields.Enum(FactorKind, by_value=True, metadata={
        "description": "`totp`: an authenticator app; `webauthn`: a security key or passkey."})
    label = fields.String()
    created_at = fields.AwareDateTime()
    confirmed_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "null while the enrolment awaits its first code."})


class FactorsSchema(Schema):
    """The caller's second factors, and how many unused recovery codes they hold."""

    factors = fields.List(fields.Nested(FactorSchema))
    recovery_codes_remaining = fields.Integer()


class TotpEnrolSchema(Schema):
    """What starts a TOTP enrolment."""

    label = fields.String(load_default=None, validate=validate.Length(1, 100), metadata={
        "description": "A name the user recognises the authenticator by; default "
                       "'Authenticator app'."})
    code = _code(ANY_CODE, f"Required when you already have a confirmed factor, which the new "
                           f"one replaces once confirmed. {CODE_DESCRIPTION}", load_default=None)


class EnrolmentSchema(Schema):
    """A pending TOTP factor and what an authenticator app needs to add it, shown once."""

    factor = fields.Nested(FactorSchema)
    otpauth_uri = fields.String(metadata={
        "description": "otpauth://totp/… with the secret, issuer 'Vigil (<organisation>)' and "
                       "the username: what the QR code holds."})
    qr_svg = fields.String(metadata={
        "description": "The otpauth URI as a QR code: an SVG document, without style "
                       "attributes."})


class TotpCodeSchema(Schema):
    """A code from the authenticator being enrolled."""

    code = _code(TOTP_CODE, "6 digits from the authenticator app.", required=True)


class CodeSchema(Schema):
    """A code that proves the caller holds a second factor."""

    code = _code(ANY_CODE, CODE_DESCRIPTION, required=True)


class ConfirmedSchema(Schema):
    """A confirmed factor, and its recovery codes: shown this once, stored only hashed."""

    factor = fields.Nested(FactorSchema)
    recovery_codes = fields.List(fields.String(), metadata={
        "description": "Single-use codes for when the authenticator is lost; keep them safe."})


class RecoveryCodesSchema(Schema):
    """Fresh recovery codes, which replace every earlier one: shown this once."""

    recovery_codes = fields.List(fields.String())


class KeyEnrolSchema(Schema):
    """What starts registering a security key."""

    label = fields.String(load_default=None, validate=validate.Length(1, 100), metadata={
        "description": "A name the user recognises the key by; default 'Security key'."})
    code = _code(ANY_CODE, f"Required when you already have a confirmed factor (the new key is "
                           f"added beside it, replacing none). {CODE_DESCRIPTION}",
                 load_default=None)


class KeyEnrolmentSchema(OptionsSchema):
    """A pending security key, and the options to create its credential with."""

    factor = fields.Nested(FactorSchema)


class KeyCredentialSchema(Schema):
    """What the security key answered to the registration options."""

    credential = fields.Dict(required=True, metadata={
        "description": "The PublicKeyCredential that `navigator.credentials.create()` returned, "
                       "as JSON (its `toJSON()`): id, rawId, type, response{clientDataJSON, "
                       "attestationObject, transports}, each binary value base64url."})
