"""HTTP endpoints to sign in, rotate tokens and sign out."""

from __future__ import annotations

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth import service
from backend.auth.guard import client_address, current_caller, requires
from backend.auth.schemas import LoginSchema, RefreshSchema, TokenPairSchema
from backend.runtime import runtime

blp = Blueprint("auth", __name__, url_prefix="/auth",
                description="Sign in, rotate refresh tokens, sign out.")


@blp.route("/login")
class Login(MethodView):
    """Exchange credentials for tokens."""

    @blp.doc(security=[])
    @blp.refusal(401, "`invalid_credentials`: wrong organisation, username or password.")
    @blp.refusal(429, "`locked_out`: too many failures; see Retry-After.")
    @blp.arguments(LoginSchema, example=examples.LOGIN)
    @blp.response(200, TokenPairSchema)
    def post(self, body):
        """Sign in; failed attempts are limited per account and per address."""
        return service.login(db.session(), runtime(), org_slug=body["org"],
                             username=body["username"], password=body["password"],
                             device_id=body["device_id"], address=client_address())


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
