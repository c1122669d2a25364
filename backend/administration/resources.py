"""HTTP endpoints for a home session's clinical record."""

from __future__ import annotations

import uuid

from flask import request
from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.administration import service
from backend.administration.schemas import (
    DischargeSchema,
    DoseRecordSchema,
    DoseSchema,
    ObservationSchema,
    OutcomeSchema,
    PreDoseSchema,
    ScoredRecordSchema,
    SessionRecordSchema,
    SessionSchema,
)
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.runtime import runtime

blp = Blueprint("administration", __name__, url_prefix="/visits", description=(
    "The clinical record of a home session, from the nurse's phone. Each record carries the "
    "phone's Ed25519 signature over its own canonical JSON; a record whose signature fails, or "
    "whose id already holds a different record, is quarantined with the reason and flagged "
    "(422 `signature_invalid` or `append_only`), never silently dropped."))
READERS = (Role.ADMIN, Role.PRESCRIBER, Role.NURSE, Role.COMPLIANCE)


def _record(visit_id: uuid.UUID, name: str, body: dict):
    session = db.session()
    received = service.Received(request.get_json(), body)
    try:
        record = service.record_one(session, runtime(), current_caller(), visit_id, name,
                                    received)
    except service.Quarantined:
        # The quarantined record and its flag outlive the refusal.
        session.commit()
        raise
    session.commit()
    return record


@blp.route("/<uuid:visit_id>/pre-dose")
class PreDose(MethodView):
    """The pre-dose assessment."""

    @requires(Role.NURSE)
    @blp.arguments(PreDoseSchema)
    @blp.response(201, ScoredRecordSchema)
    def post(self, body, visit_id: uuid.UUID):
        """Record vitals, baselines, co-medications and the go/no-go decision."""
        return _record(visit_id, "pre_dose", body)


@blp.route("/<uuid:visit_id>/dose")
class Dose(MethodView):
    """The dose."""

    @requires(Role.NURSE)
    @blp.arguments(DoseSchema)
    @blp.response(201, DoseRecordSchema)
    def post(self, body, visit_id: uuid.UUID):
        """Record the dose; its custody `administer` entry is made in the same transaction."""
        return _record(visit_id, "dose", body)


@blp.route("/<uuid:visit_id>/observations")
class Observations(MethodView):
    """Monitoring after the dose."""

    @requires(Role.NURSE)
    @blp.arguments(ObservationSchema)
    @blp.response(201, ScoredRecordSchema)
    def post(self, body, visit_id: uuid.UUID):
        """Record one timed observation: vitals, MOAA/S, CADSS, BPRS positive."""
        return _record(visit_id, "observations", body)


@blp.route("/<uuid:visit_id>/discharge")
class Discharge(MethodView):
    """The end of monitoring."""

    @requires(Role.NURSE)
    @blp.arguments(DischargeSchema)
    @blp.response(201, ScoredRecordSchema)
    def post(self, body, visit_id: uuid.UUID):
        """Record the discharge: time, state, last vitals, adverse events."""
        return _record(visit_id, "discharge", body)


@blp.route("/<uuid:visit_id>/outcomes")
class Outcomes(MethodView):
    """Depression outcome scales."""

    @requires(Role.NURSE)
    @blp.arguments(OutcomeSchema)
    @blp.response(201, ScoredRecordSchema)
    def post(self, body, visit_id: uuid.UUID):
        """Record a PHQ-9 or MADRS at the session."""
        return _record(visit_id, "outcomes", body)


@blp.route("/<uuid:visit_id>/session")
class WholeSession(MethodView):
    """The whole session."""

    @requires(*READERS)
    @blp.response(200, SessionRecordSchema)
    def get(self, visit_id: uuid.UUID):
        """Return everything recorded for the visit, and what was quarantined."""
        return service.read_session(db.session(), current_caller(), visit_id)

    @requires(Role.NURSE)
    @blp.arguments(SessionSchema)
    @blp.response(201, SessionRecordSchema)
    def post(self, body, visit_id: uuid.UUID):
        """Record a whole session at once, as a phone sends it after an offline visit."""
        raw = request.get_json()
        session, caller = db.session(), current_caller()
        body_lists = {name: value if isinstance(value, list) else [value]
                      for name, value in body.items() if value}
        parts = {name: [service.Received(r, b) for r, b in zip(
            raw[name] if isinstance(raw[name], list) else [raw[name]], values, strict=True)]
            for name, values in body_lists.items()}
        service.record_session(session, runtime(), caller, visit_id, parts)
        session.commit()
        return service.read_session(session, caller, visit_id)
