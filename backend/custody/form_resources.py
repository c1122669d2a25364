"""HTTP endpoints for DEA Forms 106 and 41, and for completing a loss report's Form 106 details."""

from __future__ import annotations

import uuid

from flask import Response
from flask.views import MethodView

from backend import db
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.custody import forms
from backend.custody.form_schemas import (
    Form41Schema,
    Form106Schema,
    FormPeriodQuerySchema,
    FormQuerySchema,
    Forms41Schema,
    Forms106Schema,
    LossDetailsOutSchema,
    LossDetailsSchema,
    forms_csv,
)
from backend.custody.resources import CSV, FILERS, REPORT_READERS
from backend.runtime import runtime

blp = Blueprint("dea", __name__, url_prefix="/dea", description=(
    "DEA forms filled from the ledger: Form 106 (theft or loss, 21 CFR 1301.76(b)) and "
    "Form 41 (destruction, 21 CFR 1304.21(e) and part 1317), each as JSON or CSV. Reading "
    "one decrypts what was recorded about it: every read is audited."))
# Completing a loss report lives beside the custody ledger's own loss endpoints.
loss_blp = Blueprint("loss_reports", __name__, url_prefix="/custody", description=(
    "Loss reports completed with what Form 106 asks beyond the ledger: the type of theft or "
    "loss and the police report."))
PERIOD = "`validation_error`: `to` must be after `from`."


def _answer(output: str, schema: type, found, name: str):
    """Return the record as JSON, or its forms as a CSV attachment."""
    if output != "csv":
        return found
    rows = found.forms if isinstance(found, forms.Forms) else [found]
    return Response(forms_csv(schema, rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@loss_blp.route("/losses/<uuid:loss_id>")
class LossDetails(MethodView):
    """One loss report's Form 106 details."""

    @requires(*FILERS)
    @loss_blp.arguments(LossDetailsSchema)
    @loss_blp.response(200, LossDetailsOutSchema)
    @loss_blp.refusal(404, "`not_found`: no such loss report in the caller's organisation.")
    @loss_blp.refusal(422, "`validation_error`: an unknown type or field, no field at all, or "
                      "a police report time in the future or before the loss occurred.")
    def patch(self, body, loss_id: uuid.UUID):
        """Complete a loss for Form 106: its type and police report; audited, before and after.

        Only the fields sent change; null clears a police field.
        """
        return forms.complete_loss(db.session(), runtime(), current_caller(), loss_id, body)


@blp.route("/losses/<uuid:loss_id>/form-106")
class LossForm106(MethodView):
    """The Form 106 record of one theft or loss."""

    @requires(*REPORT_READERS)
    @blp.arguments(FormQuerySchema, location="query")
    @blp.response(200, Form106Schema)
    @blp.alt_response(200, description=(
        "The record; with `format=csv`, text/csv with a header row and its one row."), **CSV)
    @blp.refusal(404, "`not_found`: no such loss report in the caller's organisation.")
    def get(self, query, loss_id: uuid.UUID):
        """Show every field DEA Form 106 asks of one theft or loss; an audited PHI read."""
        found = forms.form_106(db.session(), runtime(), current_caller(), loss_id)
        return _answer(query["output"], Form106Schema, found, f"form-106-{loss_id}")


@blp.route("/form-106")
class PeriodForms106(MethodView):
    """The Form 106 records of a period."""

    @requires(*REPORT_READERS)
    @blp.arguments(FormPeriodQuerySchema, location="query")
    @blp.response(200, Forms106Schema)
    @blp.alt_response(200, description=(
        "The records; with `format=csv`, text/csv with a header row and one row per loss."),
        **CSV)
    @blp.refusal(422, PERIOD)
    def get(self, query):
        """List the Form 106 record of each loss discovered in [from, to); an audited PHI read."""
        output = query.pop("output")
        found = forms.forms_106(db.session(), runtime(), current_caller(), **query)
        return _answer(output, Form106Schema, found, "form-106")


@blp.route("/destructions/<uuid:entry_id>/form-41")
class DestructionForm41(MethodView):
    """The Form 41 record of one destruction."""

    @requires(*REPORT_READERS)
    @blp.arguments(FormQuerySchema, location="query")
    @blp.response(200, Form41Schema)
    @blp.alt_response(200, description=(
        "The record; with `format=csv`, text/csv with a header row and its one row."), **CSV)
    @blp.refusal(404, "`not_found`: no `destroy` entry with this id in the caller's "
                 "organisation.")
    def get(self, query, entry_id: uuid.UUID):
        """Show every field DEA Form 41 asks of one `destroy` entry; an audited read."""
        found = forms.form_41(db.session(), runtime(), current_caller(), entry_id)
        return _answer(query["output"], Form41Schema, found, f"form-41-{entry_id}")


@blp.route("/form-41")
class PeriodForms41(MethodView):
    """The Form 41 records of a period."""

    @requires(*REPORT_READERS)
    @blp.arguments(FormPeriodQuerySchema, location="query")
    @blp.response(200, Forms41Schema)
    @blp.alt_response(200, description=(
        "The records; with `format=csv`, text/csv with a header row and one row per "
        "destruction."), **CSV)
    @blp.refusal(422, PERIOD)
    def get(self, query):
        """List the Form 41 record of each destruction done in [from, to); an audited read."""
        output = query.pop("output")
        found = forms.forms_41(db.session(), runtime(), current_caller(), **query)
        return _answer(output, Form41Schema, found, "form-41")
