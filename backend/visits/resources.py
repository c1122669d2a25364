"""HTTP endpoints for visits: scheduling, the nurse's schedule, check-in/out and EVV."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.errors import InvalidField
from backend.runtime import runtime
from backend.visits import evv, service
from backend.visits.schemas import (
    CancelSchema,
    EvvSchema,
    PositionSchema,
    RescheduleSchema,
    VisitCreateSchema,
    VisitQuerySchema,
    VisitSchema,
)

blp = Blueprint("visits", __name__, url_prefix="/visits", description=(
    "Home visits. Refusals answer 409 with `error.code` naming the rule: `min_interval`, "
    "`weekly_limit`, `monthly_limit`, `nurse_double_booked`, `home_administration_forbidden`, "
    "`no_active_plan`."))
READERS = (Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST, Role.NURSE, Role.COMPLIANCE)
SCHEDULERS = (Role.ADMIN, Role.PRESCRIBER)
SCHEDULING_REFUSED = (
    "The rule the visit breaks: `min_interval`, `weekly_limit`, `monthly_limit`, "
    "`nurse_double_booked`, `home_administration_forbidden`, `no_active_plan`. The minimum "
    "interval counts every dose; the 7- and 28-day limits count the doses on the dates of "
    "the phase they judge.")
STATUS_CONFLICT = "`conflict`: the visit's status does not allow this step."


@blp.route("")
class Visits(MethodView):
    """Visits of the organisation (a nurse sees her own)."""

    @requires(*READERS)
    @blp.arguments(VisitQuerySchema, location="query")
    @blp.response(200, VisitSchema(many=True))
    def get(self, query):
        """List visits by nurse (`me` for the caller), patient, status and time range."""
        caller = current_caller()
        nurse = query.pop("nurse", None)
        try:
            nurse_id = caller.user_id if nurse == "me" else (uuid.UUID(nurse) if nurse else None)
        except ValueError:
            raise InvalidField("nurse", "`me` or a nurse's id") from None
        return service.listing(db.session(), caller,
                               service.VisitFilter(nurse_id=nurse_id, **query))

    @requires(*SCHEDULERS)
    @blp.arguments(VisitCreateSchema, example=examples.VISIT)
    @blp.response(201, VisitSchema)
    @blp.refusal(404, "`not_found`: no such patient in the caller's organisation.")
    @blp.refusal(409, f"{SCHEDULING_REFUSED} `conflict`: another visit has this client id.")
    def post(self, body):
        """Schedule one visit within the plan's limits."""
        session = db.session()
        visit = service.schedule(session, runtime(), current_caller(), service.VisitRequest(
            body["patient_id"], body["nurse_id"], body["scheduled_start"],
            body["scheduled_end"], body["override_reason"], body["id"]))
        return visit


@blp.route("/<uuid:visit_id>")
class VisitDetail(MethodView):
    """One visit."""

    @requires(*READERS)
    @blp.response(200, VisitSchema)
    def get(self, visit_id: uuid.UUID):
        """Return a visit."""
        return service.get(db.session(), current_caller(), visit_id)


@blp.route("/<uuid:visit_id>/cancel")
class VisitCancel(MethodView):
    """Cancel a visit."""

    @requires(Role.ADMIN, Role.PRESCRIBER, Role.NURSE)
    @blp.arguments(CancelSchema)
    @blp.response(200, VisitSchema)
    @blp.refusal(409, STATUS_CONFLICT)
    def post(self, body, visit_id: uuid.UUID):
        """Cancel a scheduled visit, with a reason."""
        session = db.session()
        visit = service.cancel(session, runtime(), current_caller(), visit_id, body["reason"])
        return visit


@blp.route("/<uuid:visit_id>/reschedule")
class VisitReschedule(MethodView):
    """Move a visit."""

    @requires(*SCHEDULERS)
    @blp.arguments(RescheduleSchema)
    @blp.response(201, VisitSchema)
    @blp.refusal(409, f"{SCHEDULING_REFUSED} {STATUS_CONFLICT}")
    def post(self, body, visit_id: uuid.UUID):
        """Reschedule: a new visit replaces the old, which is kept as `rescheduled`."""
        session = db.session()
        visit = service.reschedule(session, runtime(), current_caller(), visit_id, **body)
        return visit


def _presence(visit_id: uuid.UUID, step: str, body: dict):
    session = db.session()
    visit = evv.verify_presence(session, runtime(), current_caller(), visit_id, step,
                                    evv.Position(**body))
    return visit


@blp.route("/<uuid:visit_id>/check-in")
class VisitCheckIn(MethodView):
    """Arrive at the home."""

    @requires(Role.NURSE)
    @blp.arguments(PositionSchema, example=examples.POSITION)
    @blp.response(200, VisitSchema)
    @blp.refusal(409, STATUS_CONFLICT)
    def post(self, body, visit_id: uuid.UUID):
        """Check in from the nurse's phone; outside the radius needs a reason and is flagged."""
        return _presence(visit_id, "check_in", body)


@blp.route("/<uuid:visit_id>/check-out")
class VisitCheckOut(MethodView):
    """Leave the home."""

    @requires(Role.NURSE)
    @blp.arguments(PositionSchema, example=examples.POSITION)
    @blp.response(200, VisitSchema)
    @blp.refusal(409, STATUS_CONFLICT)
    def post(self, body, visit_id: uuid.UUID):
        """Check out and complete the visit; outside the radius needs a reason and is flagged."""
        return _presence(visit_id, "check_out", body)


@blp.route("/<uuid:visit_id>/evv")
class VisitEvv(MethodView):
    """Electronic visit verification."""

    @requires(Role.ADMIN, Role.NURSE, Role.COMPLIANCE)
    @blp.response(200, EvvSchema)
    def get(self, visit_id: uuid.UUID):
        """Return the six EVV elements of a visit."""
        return evv.evv_record(db.session(), current_caller(), visit_id)
