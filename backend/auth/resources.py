"""HTTP endpoints to sign in (with a second factor), step up, rotate tokens and sign out."""

from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Organisation, Role, User
from backend.api import Blueprint
from backend.auth import service
from backend.auth.guard import client_address, current_caller, request_origin, requires
from backend.auth.schemas import (
    ChallengeTokenSchema,
    LoginEnrolSchema,
    LoginFactorSchema,
    LoginResultSchema,
    LoginSchema,
    ProvedSchema,
    RefreshSchema,
    StepUpResultSchema,
    TokenPairSchema,
)
from backend.mfa import webauthn
from backend.mfa.schemas import EnrolmentSchema
from backend.runtime import runtime

blp = Blueprint("auth", __name__, url_prefix="/auth", description=(
    "Sign in, rotate refresh tokens, sign out. Desk roles (and nurses, where the organisation "
    "says so) sign in with a second factor: login then answers `mfa_required` with a "
    "challenge token, and `POST /auth/login/factor` completes it with a code or a security "
    "key. Sensitive actions answer 403 `mfa_required` when the session's factor is older than "
    "the organisation's window (15 minutes by default): `POST /auth/step-up` proves it again."))
INVALID_CODE = ("`validation_error`: a field is missing or malformed; `invalid_code`: the code "
                "or assertion is wrong, expired or already used (counted toward the lockout).")
LOCKED_OUT = "`locked_out`: too many failed passwords or codes; see Retry-After."
BAD_CHALLENGE = "`invalid_credentials`: the challenge token is invalid or expired."
ORIGIN_REFUSED = ("`forbidden`: a security key is used at an origin outside "
                  "`VIGIL_WEBAUTHN_ORIGINS`.")


def _proved(body) -> service.Proved:
    return service.Proved(code=body["code"], assertion=body["webauthn"], origin=request_origin())


@blp.route("/login")
class Login(MethodView):
    """Exchange credentials for tokens, or for a second-factor challenge."""

    @blp.doc(security=[])
    @blp.refusal(401, "`invalid_credentials`: wrong organisation, username or password.")
    @blp.refusal(429, LOCKED_OUT)
    @blp.arguments(LoginSchema, example=examples.LOGIN)
    @blp.response(200, LoginResultSchema)
    def post(self, body):
        """Sign in; failed attempts are limited per account and per address. Where a second
        factor is due the answer is `mfa_required` with a challenge token, and no tokens."""
        return service.login(db.session(), runtime(), org_slug=body["org"],
                             username=body["username"], password=body["password"],
                             device_id=body["device_id"], address=client_address())


@blp.route("/login/factor")
class LoginFactor(MethodView):
    """Complete a challenged sign-in."""

    @blp.doc(security=[])
    @blp.refusal(401, BAD_CHALLENGE)
    @blp.refusal(403, ORIGIN_REFUSED)
    @blp.refusal(409, "`conflict`: enrolment required but none is pending.")
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    @blp.arguments(LoginFactorSchema)
    @blp.response(200, LoginResultSchema)
    def post(self, body):
        """Prove the second factor (a code, a recovery code or a security key's assertion) and
        receive tokens; after an enrolment at sign-in, also ten recovery codes."""
        return service.complete(db.session(), runtime(), body["challenge_token"],
                                _proved(body), client_address())


@blp.route("/login/enrol")
class LoginEnrol(MethodView):
    """Enrol a TOTP factor at sign-in, once the grace has run out."""

    @blp.doc(security=[])
    @blp.refusal(401, BAD_CHALLENGE)
    @blp.refusal(409, "`conflict`: the user already has a second factor.")
    @blp.arguments(LoginEnrolSchema)
    @blp.response(201, EnrolmentSchema)
    def post(self, body):
        """Begin a TOTP enrolment for the challenged user; the first code from the app,
        sent to `POST /auth/login/factor`, confirms it and signs in."""
        return service.begin_enrolment(db.session(), runtime(), body["challenge_token"],
                                       label=body["label"], address=client_address())


@blp.route("/login/webauthn-options")
class LoginWebauthnOptions(MethodView):
    """A security key's assertion options for a challenged sign-in."""

    @blp.doc(security=[])
    @blp.refusal(401, BAD_CHALLENGE)
    @blp.refusal(403, ORIGIN_REFUSED)
    @blp.refusal(409, "`conflict`: the user has no security key.")
    @blp.arguments(ChallengeTokenSchema)
    @blp.response(200, webauthn.OptionsSchema)
    def post(self, body):
        """Return PublicKeyCredentialRequestOptions (single-use challenge, 5 minutes) for
        `navigator.credentials.get()`."""
        session, rt = db.session(), runtime()
        user, _device, _caller = service.challenged(session, rt, body["challenge_token"],
                                                    client_address())
        return webauthn.assertion_options(session, rt, user, purpose="sign_in",
                                          origin=request_origin())


@blp.route("/step-up")
class StepUp(MethodView):
    """Prove the second factor again for this session."""

    @requires(*Role)
    @blp.refusal(422, INVALID_CODE)
    @blp.refusal(429, LOCKED_OUT)
    @blp.arguments(ProvedSchema)
    @blp.response(200, StepUpResultSchema)
    def post(self, body):
        """Prove a factor now: sensitive actions (signing a plan, destruction, adjustments,
        loss reports, rule modes, verdicts on critical flags) accept it for the organisation's
        window."""
        session, rt, caller = db.session(), runtime(), current_caller()
        used = service.step_up(session, rt, caller, _proved(body))
        window = session.get(Organisation, caller.organisation_id).step_up_seconds
        return {"method": used.method, "proved_at": used.proved_at,
                "fresh_until": used.proved_at + timedelta(seconds=window)}


@blp.route("/step-up/webauthn-options")
class StepUpWebauthnOptions(MethodView):
    """A security key's assertion options for a step-up."""

    @requires(*Role)
    @blp.refusal(409, "`conflict`: the caller has no security key.")
    @blp.response(200, webauthn.OptionsSchema)
    def post(self):
        """Return PublicKeyCredentialRequestOptions for a step-up."""
        session, rt, caller = db.session(), runtime(), current_caller()
        return webauthn.assertion_options(session, rt, session.get(User, caller.user_id),
                                          purpose="step_up", origin=request_origin())


@blp.route("/refresh")
class Refresh(MethodView):
    """Rotate a refresh token."""

    @blp.doc(security=[])
    @blp.refusal(401, "`invalid_credentials`: unknown, expired or re-used.")
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenPairSchema)
    def post(self, body):
        """Return a new token pair; presenting a rotated token revokes the whole session."""
        return service.refresh(db.session(), runtime(), body["refresh_token"], client_address())


@blp.route("/logout")
class Logout(MethodView):
    """End the caller's session."""

    @requires(*Role)
    @blp.response(204)
    def post(self):
        """Revoke the caller's session and every refresh token rotated from it."""
        service.logout(db.session(), runtime(), current_caller())
