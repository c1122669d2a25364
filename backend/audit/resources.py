"""HTTP endpoint for reviewing the audit trail."""

from __future__ import annotations

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.audit import service
from backend.audit.schemas import AuditEventSchema, AuditQuerySchema
from backend.auth.guard import current_caller, requires

blp = Blueprint("audit", __name__, url_prefix="/audit-events",
                description="The append-only trail of writes and of reads of patient data.")


@blp.route("")
class AuditEvents(MethodView):
    """The organisation's audit trail."""

    @requires(Role.COMPLIANCE, Role.ADMIN)
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditEventSchema(many=True))
    def get(self, query):
        """List audit events, newest first, filtered by user, action, object and time."""
        return service.list_events(db.session(), current_caller(), service.AuditFilter(**query))
