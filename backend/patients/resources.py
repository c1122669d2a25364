"""HTTP endpoints for patients; every read writes an audit row."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.patients import service
from backend.patients.schemas import PatientCreateSchema, PatientQuerySchema, PatientSchema
from backend.runtime import runtime

blp = Blueprint("patients", __name__, url_prefix="/patients",
                description="Patients, with PHI encrypted at rest; nurses see only theirs.")
READERS = (Role.ADMIN, Role.PRESCRIBER, Role.NURSE, Role.COMPLIANCE)


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
        session.commit()
        return patients

    @requires(Role.ADMIN, Role.PRESCRIBER)
    @blp.arguments(PatientCreateSchema)
    @blp.response(201, PatientSchema)
    def post(self, body):
        """Register a patient and assign nurses."""
        session = db.session()
        patient = service.register(session, runtime(), current_caller(), mrn=body["mrn"],
                                   name=body["name"], date_of_birth=body["date_of_birth"],
                                   nurse_ids=body["nurse_ids"], patient_id=body["id"])
        session.commit()
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
        session.commit()
        return patient
