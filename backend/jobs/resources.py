"""HTTP endpoints for the caller's notifications and for the scheduler's job runs."""

from __future__ import annotations

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.jobs import service
from backend.jobs.schemas import (
    JobRunQuerySchema,
    JobRunSchema,
    NotificationSchema,
    PageQuerySchema,
)

blp = Blueprint("jobs", __name__,
                description="What the scheduled jobs did, and the messages they queued.")


@blp.route("/notifications")
class Notifications(MethodView):
    """The caller's own notification outbox."""

    @requires(*Role)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, NotificationSchema(many=True))
    def get(self, query):
        """List the messages queued for the caller, newest first."""
        return service.notifications_for(db.session(), current_caller(), **query)


@blp.route("/jobs/runs")
class JobRuns(MethodView):
    """The scheduler's runs, one per job and slot."""

    @requires(Role.ADMIN)
    @blp.arguments(JobRunQuerySchema, location="query")
    @blp.response(200, JobRunSchema(many=True))
    def get(self, query):
        """List job runs, newest first, filtered by job and start time."""
        return service.list_runs(db.session(), **query)
