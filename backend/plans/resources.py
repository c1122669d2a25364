"""HTTP endpoints for treatment plans and the visit series generated from them."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.plans import service
from backend.plans.schemas import (
    PlanCreateSchema,
    PlanReviseSchema,
    PlanSchema,
    SeriesSchema,
)
from backend.policy.service import parse_values, policy_for
from backend.runtime import runtime
from backend.visits import service as visits
from backend.visits.resources import SCHEDULING_REFUSED
from backend.visits.schemas import VisitSchema

blp = Blueprint("plans", __name__, description="Treatment plans: versioned, with phases.")
READERS = (Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST, Role.NURSE, Role.COMPLIANCE)
ABOVE_PROTOCOL_REFUSED = (
    "`validation_error`: a field is invalid, named in `details.fields` — among them "
    "`dose_justification` when the plan's highest dose is above the protocol dose "
    "(protocol_mg_per_kg) and no justification was given; nothing is stored.")


def _spec(session, caller, body: dict) -> service.PlanSpec:
    raw_phases = body.pop("phases")
    overrides = parse_values("policy_overrides", body.pop("policy_overrides"))
    # Phases left to policy follow the plan's own frequency thresholds when it sets them.
    policy = policy_for(session, caller.organisation_id).with_overrides(overrides)
    phases = ([service.PhaseSpec(**phase) for phase in raw_phases] if raw_phases is not None
              else service.default_phases(policy, body["starts_on"]))
    return service.PlanSpec(phases=phases, policy_overrides=overrides, **body)


@blp.route("/patients/<uuid:patient_id>/plans")
class PatientPlans(MethodView):
    """A patient's plans."""

    @requires(Role.PRESCRIBER)
    @blp.arguments(PlanCreateSchema, example=examples.PLAN)
    @blp.response(201, PlanSchema)
    @blp.refusal(409, "`conflict` (`active_plan_exists`): the patient has an active plan; "
                 "change it with PUT.")
    @blp.refusal(422, ABOVE_PROTOCOL_REFUSED)
    def post(self, body, patient_id: uuid.UUID):
        """Write a patient's treatment plan (its version 1)."""
        session, caller = db.session(), current_caller()
        plan_id = body.pop("id")
        plan = service.create(session, runtime(), caller, patient_id,
                              _spec(session, caller, body), plan_id)
        return plan


@blp.route("/plans/<uuid:plan_id>")
class PlanDetail(MethodView):
    """One plan with its version history."""

    @requires(*READERS)
    @blp.response(200, PlanSchema)
    def get(self, plan_id: uuid.UUID):
        """Return a plan and every version of it."""
        return service.get(db.session(), current_caller(), plan_id)

    @requires(Role.PRESCRIBER)
    @blp.arguments(PlanReviseSchema)
    @blp.response(200, PlanSchema)
    @blp.refusal(409, "`conflict` (`plan_not_active`): only an active plan can be changed.")
    @blp.refusal(422, ABOVE_PROTOCOL_REFUSED)
    def put(self, body, plan_id: uuid.UUID):
        """Write a new version; visits already scheduled keep the version they were made under."""
        session, caller = db.session(), current_caller()
        reason = body.pop("change_reason")
        plan = service.revise(session, runtime(), caller, plan_id,
                              _spec(session, caller, body), reason)
        return plan


@blp.route("/plans/<uuid:plan_id>/visits")
class PlanVisits(MethodView):
    """A series of visits under a plan."""

    @requires(Role.ADMIN, Role.PRESCRIBER)
    @blp.arguments(SeriesSchema)
    @blp.response(201, VisitSchema(many=True))
    @blp.refusal(409, f"{SCHEDULING_REFUSED} The details name the refused occurrence.")
    def post(self, body, plan_id: uuid.UUID):
        """Schedule a series from an RFC 5545 rule; one refused visit refuses them all."""
        session = db.session()
        created = visits.schedule_series(
            session, runtime(), current_caller(), plan_id, nurse_id=body["nurse_id"],
            first_start=body["first_start"], rule=body["rrule"],
            duration_minutes=body["duration_minutes"], override_reason=body["override_reason"])
        return created
