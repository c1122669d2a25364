"""HTTP endpoint for reviewing flags."""

from __future__ import annotations

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.flags import service
from backend.flags.schemas import FlagQuerySchema, FlagSchema

blp = Blueprint("flags", __name__, url_prefix="/flags",
                description="Safeguard findings awaiting compliance review.")


@blp.route("")
class Flags(MethodView):
    """The organisation's flags."""

    @requires(Role.COMPLIANCE, Role.ADMIN)
    @blp.arguments(FlagQuerySchema, location="query")
    @blp.response(200, FlagSchema(many=True))
    def get(self, query):
        """List flags, newest first, by status, rule and subject."""
        return service.listing(db.session(), current_caller(), **query)
