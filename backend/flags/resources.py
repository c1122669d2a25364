"""HTTP endpoints for the compliance review of flags."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.flags import service
from backend.flags.models import Resolution
from backend.flags.schemas import (
    AssignSchema,
    FlagDetailSchema,
    FlagQuerySchema,
    FlagSchema,
    NoteSchema,
    ResolveSchema,
)
from backend.runtime import runtime

blp = Blueprint("flags", __name__, url_prefix="/flags", description=(
    "Safeguard findings awaiting compliance review. A flag is `open` when raised, `in_review` "
    "once assigned to a reviewer, and `resolved` with a verdict and a note. Every step is kept "
    "in the flag's history and audited; nothing is deleted. A rule raising a resolved flag "
    "again records a `re_raised` event and leaves it resolved, unless the new finding is more "
    "severe: then the flag reopens, unassigned."))
REVIEWERS = service.REVIEWERS


@blp.route("")
class Flags(MethodView):
    """The review queue."""

    @requires(*REVIEWERS)
    @blp.arguments(FlagQuerySchema, location="query")
    @blp.response(200, FlagSchema(many=True))
    def get(self, query):
        """List flags, most severe first (critical to info), then oldest first."""
        return service.listing(db.session(), current_caller(), service.FlagFilter(**query))


@blp.route("/<uuid:flag_id>")
class FlagDetail(MethodView):
    """One flag."""

    @requires(*REVIEWERS)
    @blp.response(200, FlagDetailSchema)
    def get(self, flag_id: uuid.UUID):
        """Return a flag with its evidence and its full history, oldest first; the read is
        audited."""
        return service.read(db.session(), runtime(), current_caller(), flag_id)


@blp.route("/<uuid:flag_id>/assign")
class FlagAssignment(MethodView):
    """Who reviews a flag."""

    @requires(*REVIEWERS)
    @blp.arguments(AssignSchema)
    @blp.response(200, FlagDetailSchema)
    @blp.refusal(409, "`illegal_transition`: a resolved flag is not assigned again.")
    def post(self, body, flag_id: uuid.UUID):
        """Assign an unresolved flag to a compliance or admin user; an open flag goes in review."""
        session = db.session()
        flag = service.assign(session, runtime(), current_caller(), flag_id,
                              body["assignee_id"])
        return flag


@blp.route("/<uuid:flag_id>/notes")
class FlagNotes(MethodView):
    """A reviewer's notes on a flag."""

    @requires(*REVIEWERS)
    @blp.arguments(NoteSchema)
    @blp.response(200, FlagDetailSchema)
    def post(self, body, flag_id: uuid.UUID):
        """Add a note to a flag's history, in any status."""
        session = db.session()
        flag = service.add_note(session, runtime(), current_caller(), flag_id, body["note"])
        return flag


@blp.route("/<uuid:flag_id>/resolve")
class FlagResolution(MethodView):
    """A reviewer's verdict."""

    @requires(*REVIEWERS)
    @blp.arguments(ResolveSchema, example=examples.RESOLVE)
    @blp.response(200, FlagDetailSchema)
    @blp.refusal(403, "`mfa_required`: resolving a critical flag as `justified` or "
                 "`false_positive` needs a second factor proved within the organisation's "
                 "step-up window (details.action `flag.critical_verdict`): confirm one at "
                 "POST /auth/step-up and send again. Other verdicts and severities need none.")
    @blp.refusal(409, "`illegal_transition`: only a flag in review can be resolved.")
    def post(self, body, flag_id: uuid.UUID):
        """Resolve a flag in review with a verdict and a note; a resolved flag is 409."""
        session = db.session()
        flag = service.resolve(session, runtime(), current_caller(), flag_id,
                               Resolution(body["resolution"]), body["note"])
        return flag
