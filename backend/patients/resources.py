"""HTTP endpoints for patients, their weights and nurses; every read writes an audit row."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.patients import service
from backend.patients.schemas import (
    NurseAssignmentCreateSchema,
    NurseAssignmentSchema,
    PatientCreateSchema,
    PatientQuerySchema,
    PatientSchema,
    PatientUpdateSchema,
    WeightCreateSchema,
    WeightSchema,
)
from backend.runtime import runtime

blp = Blueprint("patients", __name__, url_prefix="/patients",
                description="Patients, with PHI encrypted at rest; nurses see only theirs.")
READERS = (Role.ADMIN, Role.PRESCRIBER, Role.NURSE, Role.COMPLIANCE)
EDITORS = (Role.ADMIN, Role.PRESCRIBER)


@blp.route("")
class Patients(MethodView):
    """Patients of the organisation (a nurse sees her assigned patients)."""

    @requires(*READERS)
    @blp.arguments(PatientQuerySchema, location="query")
    @blp.response(200, PatientSchema(many=True))
    def get(self, query):
        """List the patients the caller may see, optionally by MRN; each read is audited."""
        session = db.session()
        patients = service.search(session, runtime(), current_caller(), query.get("mrn"))
        return patients

    @requires(*EDITORS)
    @blp.arguments(PatientCreateSchema, example=examples.PATIENT)
    @blp.response(201, PatientSchema)
    @blp.refusal(409, "`conflict`: a patient with this MRN, or another under this id, exists.")
    def post(self, body):
        """Register a patient and assign nurses."""
        session = db.session()
        patient = service.register(session, runtime(), current_caller(), **body)
        return patient


@blp.route("/<uuid:patient_id>")
class PatientDetail(MethodView):
    """One patient."""

    @requires(*READERS)
    @blp.response(200, PatientSchema)
    def get(self, patient_id: uuid.UUID):
        """Return one patient; the read is audited."""
        session = db.session()
        patient = service.read(session, runtime(), current_caller(), patient_id)
        return patient

    @requires(*EDITORS)
    @blp.arguments(PatientUpdateSchema)
    @blp.response(200, PatientSchema)
    def patch(self, body, patient_id: uuid.UUID):
        """Change any of a patient's details; the audit row names the changed fields."""
        session = db.session()
        patient = service.update(session, runtime(), current_caller(), patient_id, body)
        return patient


@blp.route("/<uuid:patient_id>/weights")
class PatientWeights(MethodView):
    """A patient's weighings, from which doses in mg/kg are computed."""

    @requires(*READERS)
    @blp.response(200, WeightSchema(many=True))
    def get(self, patient_id: uuid.UUID):
        """List the patient's weighings, newest first; the read is audited."""
        session = db.session()
        weights = service.weights(session, runtime(), current_caller(), patient_id)
        return weights

    @requires(*EDITORS, Role.NURSE)
    @blp.arguments(WeightCreateSchema)
    @blp.response(201, WeightSchema)
    def post(self, body, patient_id: uuid.UUID):
        """Record a weighing (a nurse: of her own patient)."""
        session = db.session()
        weight = service.record_weight(session, runtime(), current_caller(), patient_id, **body)
        return weight


@blp.route("/<uuid:patient_id>/nurses")
class PatientNurses(MethodView):
    """The nurses assigned to a patient."""

    @requires(*EDITORS)
    @blp.arguments(NurseAssignmentCreateSchema)
    @blp.response(201, NurseAssignmentSchema)
    def post(self, body, patient_id: uuid.UUID):
        """Assign a nurse; assigning one already assigned returns that assignment."""
        session = db.session()
        assignment = service.assign_nurse(session, runtime(), current_caller(), patient_id,
                                          body["nurse_id"])
        return assignment


@blp.route("/<uuid:patient_id>/nurses/<uuid:nurse_id>")
class PatientNurseDetail(MethodView):
    """One nurse's assignment to a patient."""

    @requires(*EDITORS)
    @blp.response(204)
    def delete(self, patient_id: uuid.UUID, nurse_id: uuid.UUID):
        """End the nurse's assignment; it stays in the history with its end time."""
        session = db.session()
        service.end_assignment(session, runtime(), current_caller(), patient_id, nurse_id)
