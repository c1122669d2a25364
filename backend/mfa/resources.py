"""HTTP endpoints for the caller's second factors and recovery codes, and an admin's reset."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.mfa import service
from backend.mfa.schemas import (
    CodeSchema,
    ConfirmedSchema,
    EnrolmentSchema,
    FactorsSchema,
    RecoveryCodesSchema,
    TotpCodeSchema,
    TotpEnrolSchema,
)
from backend.runtime import runtime

blp = Blueprint("mfa", __name__, description=(
    "Second factors: enrol a TOTP authenticator, confirm it with a code (which issues ten "
    "single-use recovery codes, shown once), remove it, renew the recovery codes; an admin "
    "resets a user's factors. Wrong codes count toward the password lockout. Sign-in does not "
    "ask for a second factor yet."))
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
