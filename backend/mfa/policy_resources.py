"""HTTP endpoints for an organisation's second-factor policy."""

from __future__ import annotations

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.mfa import policy_service as service
from backend.mfa.policy_schemas import SecurityPolicySchema, SettingsSchema
from backend.runtime import runtime

blp = Blueprint("security_policy", __name__, url_prefix="/organisation", description=(
    "The organisation's second-factor policy: whether nurses need a factor, the grace for a "
    "first enrolment, and the step-up window of sensitive actions; with the users yet to "
    "enrol and when each is due."))


@blp.route("/security-policy")
class SecurityPolicy(MethodView):
    """The organisation's second-factor policy."""

    @requires(Role.ADMIN, Role.COMPLIANCE)
    @blp.response(200, SecurityPolicySchema)
    def get(self):
        """Return the policy, and the users who need a factor and have none, soonest due
        first."""
        return service.read(db.session(), runtime(), current_caller())

    @requires(Role.ADMIN)
    @blp.arguments(SettingsSchema)
    @blp.response(200, SecurityPolicySchema)
    @blp.refusal(403, "`mfa_required`: changing the policy needs a second factor proved within "
                 "the step-up window (details.action `organisation.security_policy`): confirm "
                 "one at POST /auth/step-up and send again.")
    def put(self, settings: service.Settings):
        """Replace the policy; a change restarts every user's enrolment grace from now and is
        audited with the settings before and after."""
        return service.change(db.session(), runtime(), current_caller(), settings)
