"""HTTP endpoints for the caller's second factors and recovery codes, and an admin's reset."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, request_origin, requires
from backend.mfa import service, webauthn
from backend.mfa.schemas import (
    CodeSchema,
    ConfirmedSchema,
    EnrolmentSchema,
    FactorsSchema,
    KeyCredentialSchema,
    KeyEnrolmentSchema,
    KeyEnrolSchema,
    RecoveryCodesSchema,
    TotpCodeSchema,
    TotpEnrolSchema,
)
from backend.runtime import runtime

blp = Blueprint("mfa", __name__, description=(
    "Second factors: enrol a TOTP authenticator and confirm it with a code, or register "
    "security keys and passkeys (WebAuthn; several may be held, beside an app); the first "
    "confirmed factor issues ten single-use recovery codes, shown once. Remove a factor, renew "
    "the recovery codes; an admin resets a user's factors. Wrong codes and refused key "
    "assertions count toward the password lockout."))
ALL_ROLES = tuple(Role)
INVALID_CODE = ("`validation_error`: a field is missing or malformed; `invalid_code`: the code "
                "is wrong, expired or already used (counted toward the lockout, audited).")
LOCKED_OUT = "`locked_out`: too many failed passwords or codes; see Retry-After."


@blp.route("/me/factors")
class Factors(MethodView):
    """The caller's second factors."""

    @requires(*ALL_ROLES)
    @blp.response(200, FactorsSchema)
    def get(self):
        """List the caller's factors (pending and confirmed) and the recovery codes left."""
        return service.summary(db.session(), current_caller())


@blp.route("/me/factors/totp")
class TotpEnrolment(MethodView):
    """Enrol a TOTP authenticator."""

    @requires(*ALL_ROLES)
    @blp.arguments(TotpEnrolSchema)
    @blp.response(201, EnrolmentSchema)
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    def post(self, body):
        """Begin an enrolment: a pending factor, its otpauth URI and QR code; confirm within
        10 minutes. Replacing a confirmed factor needs one of its codes or a recovery code."""
        return service.begin_totp(db.session(), runtime(), current_caller(),
                                  label=body["label"], code=body["code"])


@blp.route("/me/factors/webauthn")
class KeyEnrolment(MethodView):
    """Register a security key or passkey."""

    @requires(*ALL_ROLES)
    @blp.arguments(KeyEnrolSchema)
    @blp.response(201, KeyEnrolmentSchema)
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    def post(self, body):
        """Begin registering a key: a pending factor and PublicKeyCredentialCreationOptions.
        The client passes `public_key` to `navigator.credentials.create()` and sends what it
        returns to `POST /me/factors/<id>/webauthn` within 10 minutes. Adding a key beside a
        confirmed factor needs one of its codes or a recovery code. 403 also when the request
        arrives at an origin outside `VIGIL_WEBAUTHN_ORIGINS`."""
        factor, options = webauthn.begin_registration(
            db.session(), runtime(), current_caller(), label=body["label"], code=body["code"],
            origin=request_origin())
        return {"factor": factor, **options}


@blp.route("/me/factors/<uuid:factor_id>/webauthn")
class KeyConfirmation(MethodView):
    """Confirm a pending security key."""

    @requires(*ALL_ROLES)
    @blp.arguments(KeyCredentialSchema)
    @blp.response(200, ConfirmedSchema)
    @blp.refusal(409, "`conflict`: not a security key, already confirmed, the enrolment has "
                      "expired, or the key is registered already.")
    @blp.refusal(422, "`validation_error`: the credential is malformed, answers no live "
                      "challenge of this enrolment, or does not verify (its challenge, origin, "
                      "relying party, user presence or attestation).")
    def post(self, body, factor_id: uuid.UUID):
        """Confirm the key with the PublicKeyCredential `navigator.credentials.create()`
        returned; its credential id, public key and counter are kept. The caller's first
        confirmed factor returns ten fresh recovery codes, this once; a key added beside
        another factor returns none, and the codes held stay valid."""
        return webauthn.finish_registration(db.session(), runtime(), current_caller(),
                                            factor_id, body["credential"],
                                            origin=request_origin())


@blp.route("/me/factors/<uuid:factor_id>/confirm")
class Confirmation(MethodView):
    """Confirm a pending factor."""

    @requires(*ALL_ROLES)
    @blp.arguments(TotpCodeSchema)
    @blp.response(200, ConfirmedSchema)
    @blp.refusal(409, "`conflict`: already confirmed, or the enrolment has expired.")
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    def post(self, body, factor_id: uuid.UUID):
        """Confirm with a code from the app; replaces the caller's other TOTP factor and
        returns ten fresh recovery codes, this once."""
        return service.confirm(db.session(), runtime(), current_caller(), factor_id,
                               body["code"])


@blp.route("/me/factors/<uuid:factor_id>")
class Factor(MethodView):
    """One of the caller's factors."""

    @requires(*ALL_ROLES)
    @blp.arguments(CodeSchema)
    @blp.response(204)
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    def delete(self, body, factor_id: uuid.UUID):
        """Remove a factor, proved by a current code or a recovery code (a pending factor: also
        a code from itself); removing the last confirmed factor voids the recovery codes."""
        service.remove(db.session(), runtime(), current_caller(), factor_id, body["code"])


@blp.route("/me/recovery-codes")
class RecoveryCodes(MethodView):
    """The caller's recovery codes."""

    @requires(*ALL_ROLES)
    @blp.arguments(CodeSchema)
    @blp.response(200, RecoveryCodesSchema)
    @blp.refusal(409, "`conflict`: the caller has no confirmed second factor.")
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    def post(self, body):
        """Replace every recovery code with ten fresh ones, shown this once."""
        codes = service.regenerate_recovery_codes(db.session(), runtime(), current_caller(),
                                                  body["code"])
        return {"recovery_codes": codes}


@blp.route("/users/<uuid:user_id>/factors/reset")
class FactorReset(MethodView):
    """An admin's reset of a user's second factors."""

    @requires(Role.ADMIN)
    @blp.response(204)
    @blp.refusal(409, "`conflict`: an admin cannot reset her own factors.")
    def post(self, user_id: uuid.UUID):
        """Remove every factor and recovery code of a user of the organisation (a lost
        device); audited. The user enrols again."""
        service.reset(db.session(), runtime(), current_caller(), user_id)
