"""HTTP endpoints for a home session's clinical record."""

from __future__ import annotations

import uuid

from flask import Response, request
from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.administration import fhir, reports, service
from backend.administration.schemas import (
    DischargeSchema,
    DoseRecordSchema,
    DoseSchema,
    FhirBundleSchema,
    MonitoringQuerySchema,
    MonitoringRecordSchema,
    ObservationSchema,
    OutcomeSchema,
    PreDoseSchema,
    ScoredRecordSchema,
    SessionRecordSchema,
    SessionSchema,
    TrajectorySchema,
)
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.custody.schemas import EntrySchema, VisitWasteSchema
from backend.runtime import runtime

blp = Blueprint("administration", __name__, url_prefix="/visits", description=(
    "The clinical record of a home session, from the nurse's phone. Each record carries the "
    "phone's Ed25519 signature over its own canonical JSON; a record whose signature fails, or "
    "whose id already holds a different record, is quarantined with the reason and flagged "
    "(422 `signature_invalid` or `append_only`), never silently dropped."))
READERS = (Role.ADMIN, Role.PRESCRIBER, Role.NURSE, Role.COMPLIANCE)
TAKEN = ("`conflict` (`once`): the visit already has this record; `append_only`: another "
         "record has this id.")


def _record(visit_id: uuid.UUID, name: str, body: dict):
    received = service.Received(request.get_json(), body)
    return service.record_one(db.session(), runtime(), current_caller(), visit_id, name,
                              received)


@blp.route("/<uuid:visit_id>/pre-dose")
class PreDose(MethodView):
    """The pre-dose assessment."""

    @requires(Role.NURSE)
    @blp.arguments(PreDoseSchema)
    @blp.response(201, ScoredRecordSchema)
    @blp.refusal(409, TAKEN)
    def post(self, body, visit_id: uuid.UUID):
        """Record vitals, baselines, co-medications and the go/no-go decision."""
        return _record(visit_id, "pre_dose", body)


@blp.route("/<uuid:visit_id>/dose")
class Dose(MethodView):
    """The dose."""

    @requires(Role.NURSE)
    @blp.arguments(DoseSchema)
    @blp.response(201, DoseRecordSchema)
    @blp.refusal(409, TAKEN)
    def post(self, body, visit_id: uuid.UUID):
        """Record the dose; its custody `administer` entry is made in the same transaction."""
        return _record(visit_id, "dose", body)


@blp.route("/<uuid:visit_id>/observations")
class Observations(MethodView):
    """Monitoring after the dose."""

    @requires(Role.NURSE)
    @blp.arguments(ObservationSchema)
    @blp.response(201, ScoredRecordSchema)
    @blp.refusal(409, TAKEN)
    def post(self, body, visit_id: uuid.UUID):
        """Record one timed observation: vitals, MOAA/S, CADSS, BPRS positive."""
        return _record(visit_id, "observations", body)


@blp.route("/<uuid:visit_id>/discharge")
class Discharge(MethodView):
    """The end of monitoring."""

    @requires(Role.NURSE)
    @blp.arguments(DischargeSchema)
    @blp.response(201, ScoredRecordSchema)
    @blp.refusal(409, TAKEN)
    def post(self, body, visit_id: uuid.UUID):
        """Record the discharge: time, state, last vitals, adverse events."""
        return _record(visit_id, "discharge", body)


@blp.route("/<uuid:visit_id>/outcomes")
class Outcomes(MethodView):
    """Depression outcome scales."""

    @requires(Role.NURSE)
    @blp.arguments(OutcomeSchema)
    @blp.response(201, ScoredRecordSchema)
    @blp.refusal(409, TAKEN)
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
        session = db.session()
        record = service.view_session(session, runtime(), current_caller(), visit_id)
        return record

    @requires(Role.NURSE)
    @blp.arguments(SessionSchema)
    @blp.response(201, SessionRecordSchema)
    @blp.refusal(409, TAKEN)
    @blp.refusal(415, "`unsupported_media_type`: the body is not application/json.")
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
        return service.read_session(session, caller, visit_id)


@blp.route("/<uuid:visit_id>/monitoring-record")
class MonitoringRecord(MethodView):
    """The Spravato-REMS-style patient monitoring record."""

    @requires(*READERS)
    @blp.arguments(MonitoringQuerySchema, location="query")
    @blp.response(200, MonitoringRecordSchema)
    @blp.alt_response(200, description=(
        "With `format=csv`, text/csv (RFC 4180, UTF-8 with a byte-order mark): a header row "
        "of the JSON's field names and one data row; true and false as `true` and `false`, "
        "null as an empty cell."), schema={"type": "string"}, content_type="text/csv",
        success=True)
    def get(self, query, visit_id: uuid.UUID):
        """Return the session's REMS monitoring form; an audited PHI read (a nurse: hers)."""
        session = db.session()
        record = reports.monitoring_record(session, runtime(), current_caller(), visit_id)
        if query["output"] == "csv":
            return Response(reports.monitoring_csv([record]), mimetype="text/csv", headers={
                "Content-Disposition": f'attachment; filename="monitoring-{visit_id}.csv"'})
        return record


@blp.route("/<uuid:visit_id>/fhir")
class FhirExport(MethodView):
    """The session as FHIR R4."""

    @requires(*READERS)
    @blp.response(200, FhirBundleSchema, description=(
        "The visit as a FHIR R4 (4.0.1) collection Bundle: its Encounter and everything "
        "recorded at it, with every resource they reference. The Patient carries what the "
        "caller may read of them (a nurse no longer assigned: the id only)."))
    def get(self, visit_id: uuid.UUID):
        """Return the session as a FHIR R4 Bundle that resolves whole; audited (a nurse: hers)."""
        session = db.session()
        bundle = fhir.session_bundle(session, runtime(), current_caller(), visit_id)
        return bundle


# The trajectory and the course are a patient's, so they live under /patients beside the
# visits' records.
patient_blp = Blueprint("administration_trajectory", __name__, url_prefix="/patients",
                        description="A patient's outcome scores and doses over time, and "
                                    "their whole course as FHIR R4.")


@patient_blp.route("/<uuid:patient_id>/trajectory")
class PatientTrajectory(MethodView):
    """Outcomes and doses over time."""

    @requires(*READERS)
    @patient_blp.response(200, TrajectorySchema)
    def get(self, patient_id: uuid.UUID):
        """Return the patient's outcome scores and doses by date (a nurse: assigned); audited."""
        session = db.session()
        path = reports.trajectory(session, runtime(), current_caller(), patient_id)
        return path


@patient_blp.route("/<uuid:patient_id>/fhir")
class PatientFhirExport(MethodView):
    """The patient's whole course as FHIR R4."""

    @requires(*READERS)
    @patient_blp.response(200, FhirBundleSchema, description=(
        "Every session of the patient (a nurse: her own visits to her assigned patient) as one "
        "FHIR R4 (4.0.1) collection Bundle: one Encounter per visit checked in or recorded, "
        "with its records; the Patient, Practitioners, Organization, home Location and each "
        "lot's Medication appear once, however many visits reference them."))
    def get(self, patient_id: uuid.UUID):
        """Return the patient's course as a FHIR R4 Bundle that resolves whole; audited."""
        session = db.session()
        bundle = fhir.patient_bundle(session, runtime(), current_caller(), patient_id)
        return bundle


@blp.route("/<uuid:visit_id>/waste")
class Waste(MethodView):
    """The remainder of the dose, wasted before a witness."""

    @requires(Role.NURSE)
    @blp.arguments(VisitWasteSchema)
    @blp.response(201, EntrySchema)
    @blp.refusal(409, "`insufficient_stock`, `append_only` (another entry under this id), "
                 "`conflict`.")
    @blp.refusal(429, "`locked_out`: too many wrong witness passwords for the witness's "
                 "account or this address; see Retry-After.")
    def post(self, body, visit_id: uuid.UUID):
        """Record the waste as a custody `waste` entry of this visit, with its witness."""
        session = db.session()
        entry = service.record_waste(session, runtime(), current_caller(), visit_id, body)
        return entry
