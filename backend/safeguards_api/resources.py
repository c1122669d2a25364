"""HTTP endpoints for the safeguard rules, their modes and their thresholds."""

from __future__ import annotations

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.flags.service import REVIEWERS
from backend.policy import service as policy
from backend.policy.schemas import ThresholdSchema
from backend.runtime import runtime
from backend.safeguards_api import service
from backend.safeguards_api.schemas import (
    PRECISION_DOC,
    RuleModeSchema,
    RuleSchema,
    ThresholdsUpdateSchema,
)
from safeguards.registry import Mode

blp = Blueprint("safeguards", __name__, url_prefix="/safeguards", description=(
    "The rules that raise flags, each with its rationale and source, the mode the organisation "
    "runs it in, and its measured precision. **Precision**: " + PRECISION_DOC + " And the "
    "thresholds the rules judge by."))


@blp.route("/rules")
class Rules(MethodView):
    """Every safeguard rule."""

    @requires(*REVIEWERS)
    @blp.response(200, RuleSchema(many=True))
    def get(self):
        """List every rule with its mode here, its flags' verdicts and its precision."""
        return service.rules(db.session(), current_caller())


@blp.route("/rules/<string:rule_id>")
class RuleDetail(MethodView):
    """One rule."""

    @requires(*REVIEWERS)
    @blp.arguments(RuleModeSchema)
    @blp.response(200, RuleSchema)
    @blp.refusal(403, "`mfa_required`: changing a rule's mode needs a second factor proved "
                 "within the organisation's step-up window (details.action `rule.mode`): "
                 "confirm one at POST /auth/step-up and send again.")
    def patch(self, body, rule_id: str):
        """Set how the organisation runs a rule: enabled, shadow or disabled (null: default)."""
        session = db.session()
        mode = Mode(body["mode"]) if body["mode"] else None
        view = service.set_mode(session, runtime(), current_caller(), rule_id, mode)
        return view


@blp.route("/policy")
class Thresholds(MethodView):
    """The thresholds the rules judge by."""

    @requires(Role.ADMIN, Role.COMPLIANCE, Role.PRESCRIBER)
    @blp.response(200, ThresholdSchema(many=True))
    def get(self):
        """List every threshold with its value in force, default, unit and source."""
        return policy.describe(db.session(), current_caller())

    @requires(Role.ADMIN)
    @blp.arguments(ThresholdsUpdateSchema)
    @blp.response(200, ThresholdSchema(many=True))
    def patch(self, body):
        """Override several thresholds at once; one unknown name or bad value changes none."""
        session = db.session()
        views = policy.set_values(session, runtime(), current_caller(), body["thresholds"])
        return views
