"""DEA Forms 106 and 41 as printable pages, their CSV, and completing a loss for Form 106.

Each page calls what its API endpoint calls (`custody.forms`), for the same roles, and each
CSV is the API's own text: a download from either is the same file. Laid out in the form's
sections, a page prints (or saves as PDF from the browser) ready to transcribe.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from flask import flash, redirect, request, url_for
from werkzeug.wrappers import Response

from backend import db
from backend.accounts.service import organisation_zone
from backend.console.pages import (
    FormRefused,
    attempt,
    blp,
    caller,
    form_values,
    load,
    object_id,
    page,
    render,
)
from backend.console.records import FILERS, HAS_OFFSET, PERIOD_FIELDS, REPORTS, PeriodSchema
from backend.custody import forms, shifts
from backend.custody.form_schemas import Form41Schema, Form106Schema, LossDetailsSchema, forms_csv
from backend.errors import NotFound
from backend.runtime import runtime

# The Form 106 details a desk form may set; clearing one is the API's (a blank field is left out).
DETAIL_FIELDS = ("loss_type", "police_report_number", "police_agency", "police_reported_at")
# How far back the list of destructions reaches when no days are given.
DESTRUCTIONS_SHOWN = timedelta(days=365)


def _download(text: str, filename: str) -> Response:
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _id(raw: str, what: str):
    found = object_id(raw)
    if found is None:
        raise NotFound(f"No such {what}.")
    return found


# Form 106


def _form_106_page(loss_id, status: int = 200, refused: FormRefused | None = None,
                   values: dict | None = None) -> Response:
    form = forms.form_106(db.session(), runtime(), caller(), loss_id)
    shown = {name: request.form.get(name, "") for name in DETAIL_FIELDS} if values is not None \
        else _details(form)
    return render("console/form_106.html", status=status, refused=refused, form=form,
                  values=shown, loss_types=forms.LOSS_TYPES,
                  may_complete=caller().role in FILERS, now=runtime().clock.now())


def _details(form: forms.Form106) -> dict[str, str]:
    """Return the report's details as the completion form shows them (a UTC time to minutes)."""
    reported_at = form.report.police_reported_at
    return {"loss_type": form.loss_type,
            "police_report_number": form.report.police_report_number or "",
            "police_agency": form.report.police_agency or "",
            "police_reported_at": reported_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
            if reported_at else ""}


@blp.get("/records/losses/<loss_id>/form-106")
@page(*REPORTS)
def form_106(loss_id: str) -> Response:
    """Show a loss's DEA Form 106 as a printable page; an audited PHI read."""
    return _form_106_page(_id(loss_id, "loss report"))


@blp.get("/records/losses/<loss_id>/form-106.csv")
@page(*REPORTS)
def form_106_csv(loss_id: str) -> Response:
    """Download a loss's Form 106 record as the API's CSV; an audited PHI read."""
    loss = _id(loss_id, "loss report")
    form = forms.form_106(db.session(), runtime(), caller(), loss)
    return _download(forms_csv(Form106Schema, [form]), f"form-106-{loss}.csv")


@blp.post("/records/losses/<loss_id>/form-106")
@page(*FILERS)
def complete_form_106(loss_id: str) -> Response:
    """Complete a loss's type and police report, as PATCH /custody/losses/<id> does."""
    loss = _id(loss_id, "loss report")
    try:
        values = form_values()
        given = values.get("police_reported_at")
        if given and not HAS_OFFSET.search(given):
            values["police_reported_at"] = f"{given}+00:00"  # the form's times are UTC
        body = load(LossDetailsSchema(), values)
        attempt(lambda: forms.complete_loss(db.session(), runtime(), caller(), loss, body))
    except FormRefused as refused:
        return _form_106_page(loss, refused.status, refused, request.form)
    flash("Recorded: the Form 106 details of this loss.")
    return redirect(url_for("console.form_106", loss_id=loss), 303)


# Form 41


@blp.get("/records/destructions")
@page(*REPORTS, menu=("Stock", "Destructions"))
def destructions() -> Response:
    """List the destructions of a period of days, each with its Form 41; an audited read."""
    try:
        period, found = _destructions()
    except FormRefused as refused:
        return render("console/destructions.html", status=refused.status, refused=refused,
                      values=request.args.to_dict(), found=None)
    return render("console/destructions.html", refused=None, found=found,
                  values={name: str(day) for name, day in period.items()})


@blp.get("/records/destructions.csv")
@page(*REPORTS)
def destructions_csv() -> Response:
    """Download the Form 41 records of a period of days as the API's CSV."""
    try:
        period, found = _destructions()
    except FormRefused as refused:
        return render("console/destructions.html", status=refused.status, refused=refused,
                      values=request.args.to_dict(), found=None)
    return _download(forms_csv(Form41Schema, found.forms),
                     f"form-41-{period['since']}-to-{period['until']}.csv")


def _destructions() -> tuple[dict, forms.Forms]:
    """Read the Form 41 records of the asked days (default: the last year), both included."""
    session, rt = db.session(), runtime()
    today = shifts.local_today(session, rt, caller().organisation_id)
    asked = {"since": str(today - DESTRUCTIONS_SHOWN), "until": str(today),
             **form_values(request.args)}
    period = load(PeriodSchema(), asked)
    zone = organisation_zone(session, caller().organisation_id)
    since = shifts.start_of_day(period["since"], zone)
    until = shifts.start_of_day(period["until"] + timedelta(days=1), zone)
    try:
        return period, attempt(lambda: forms.forms_41(session, rt, caller(), since, until))
    except FormRefused as refused:
        raise FormRefused(refused.status, refused.message, {
            PERIOD_FIELDS.get(name, name): messages
            for name, messages in refused.fields.items()}) from refused


@blp.get("/records/destructions/<entry_id>/form-41")
@page(*REPORTS)
def form_41(entry_id: str) -> Response:
    """Show a destruction's DEA Form 41 as a printable page; an audited read."""
    form = forms.form_41(db.session(), runtime(), caller(), _id(entry_id, "destruction"))
    return render("console/form_41.html", form=form, now=runtime().clock.now())


@blp.get("/records/destructions/<entry_id>/form-41.csv")
@page(*REPORTS)
def form_41_csv(entry_id: str) -> Response:
    """Download a destruction's Form 41 record as the API's CSV; an audited read."""
    entry = _id(entry_id, "destruction")
    form = forms.form_41(db.session(), runtime(), caller(), entry)
    return _download(forms_csv(Form41Schema, [form]), f"form-41-{entry}.csv")
