"""HTTP endpoints for the organisation's policy thresholds."""

from __future__ import annotations

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.policy import service
from backend.policy.schemas import ThresholdSchema, ThresholdUpdateSchema
from backend.runtime import runtime

blp = Blueprint("policy", __name__, url_prefix="/policy", description=(
    "Thresholds behind scheduling refusals and safeguard flags: defaults from the clinical "
    "literature (or, where `practice` is true, common practice), overridable per organisation."))


@blp.route("")
class Thresholds(MethodView):
    """Every threshold."""

    @requires(*Role)
    @blp.response(200, ThresholdSchema(many=True))
    def get(self):
        """List every threshold with its value in force, default, unit and source."""
        return service.describe(db.session(), current_caller())


@blp.route("/<string:name>")
class ThresholdDetail(MethodView):
    """One threshold."""

    @requires(Role.ADMIN)
    @blp.arguments(ThresholdUpdateSchema, example=examples.THRESHOLD)
    @blp.response(200, ThresholdSchema)
    def put(self, body, name: str):
        """Override a threshold for the organisation (null restores the default)."""
        session = db.session()
        view = service.set_value(session, runtime(), current_caller(), name, body["value"])
        return view
