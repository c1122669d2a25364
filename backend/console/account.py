"""My account: the signed-in user's second factors, and the banner of a factor falling due.

Every desk user enrols, replaces and removes their own factors here, as /api/v1/me/factors
does: an authenticator app (a QR code, and its key in text, confirmed by a first code), a
security key (the page's script asks the browser for it), and new recovery codes. A change
beside a confirmed factor needs a current code or a recovery code. Recovery codes are shown
once, on the answer to the form that issued them.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, flash, g, redirect, url_for

from backend import db
from backend.auth.guard import request_origin
from backend.console import service
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
from backend.console.signin import JsonObject
from backend.mfa import service as mfa
from backend.mfa import webauthn
from backend.mfa.schemas import CodeSchema, KeyEnrolSchema, TotpCodeSchema, TotpEnrolSchema
from backend.runtime import runtime

# How a page names each way of proving a factor (`mfa.methods`, a factor's kind).
METHODS = {"totp": "Authenticator app", "webauthn": "Security key",
           "recovery_code": "Recovery code"}


class KeyAnswerSchema(ma.Schema):
    """What a security key answered to its registration, as the page's script posts it."""

    credential = JsonObject(required=True)


@blp.context_processor
def _factor_due() -> dict[str, Any]:
    # Within the grace, every page says by when a factor is due (`ENROL`: it is due now).
    who = g.get("caller")
    return {"factor_due": service.factor_due(db.session(), runtime(), who) if who else None}


def _factors_page(*, status: int = 200, refused: FormRefused | None = None,
                  refused_form: str | None = None,
                  values: dict[str, Any] | None = None) -> Response:
    session, who = db.session(), caller()
    summary = mfa.summary(session, who)
    return render("console/factors.html", status=status, refused=refused,
                  refused_form=refused_form, values=values or {}, summary=summary,
                  confirmed=[factor for factor in summary.factors if factor.confirmed_at],
                  names=METHODS)


@blp.get("/account/factors")
@page(*service.DESK_ROLES, menu=("My account", "Second factor"))
def factors():
    """List the user's second factors, with forms to add, replace or remove one."""
    return _factors_page()


@blp.post("/account/factors/totp")
@page(*service.DESK_ROLES)
def begin_totp():
    """Begin enrolling an authenticator app; its QR code is shown next."""
    values: dict = {}
    try:
        values = form_values()
        body = load(TotpEnrolSchema(), values)
        attempt(lambda: mfa.begin_totp(db.session(), runtime(), caller(), **body))
    except FormRefused as refused:
        return _factors_page(status=refused.status, refused=refused, refused_form="totp",
                             values=values)
    return redirect(url_for("console.totp_enrolment"), 303)


def _totp_page(*, status: int = 200, refused: FormRefused | None = None) -> Response:
    enrolment = mfa.pending_totp(db.session(), runtime(), caller())
    if enrolment is None:
        flash("No enrolment is waiting for its first code (they expire after 10 minutes): "
              "begin again.")
        return redirect(url_for("console.factors"), 303)
    return render("console/factor_totp.html", status=status, refused=refused,
                  enrolment=enrolment)


@blp.get("/account/factors/totp")
@page(*service.DESK_ROLES)
def totp_enrolment():
    """Show the pending authenticator app's QR code and key, and ask for its first code."""
    return _totp_page()


@blp.post("/account/factors/totp/confirm")
@page(*service.DESK_ROLES)
def confirm_totp():
    """Confirm the pending authenticator app with a code; show the recovery codes once."""
    try:
        body = load(TotpCodeSchema(), form_values())
        confirmed = attempt(lambda: mfa.confirm_pending(db.session(), runtime(), caller(),
                                                        body["code"]))
    except FormRefused as refused:
        if refused.status == 409:
            flash(refused.message)
            return redirect(url_for("console.factors"), 303)
        return _totp_page(status=refused.status, refused=refused)
    return _issued(confirmed.recovery_codes, f"{confirmed.factor.label} is confirmed.")


def _issued(codes: list[str], done: str) -> Response:
    """Show fresh recovery codes this once, or say what was done when none were issued."""
    if not codes:
        flash(done)
        return redirect(url_for("console.factors"), 303)
    return render("console/recovery_codes.html", codes=codes, done=done,
                  onward=url_for("console.factors"))


@blp.post("/account/factors/key")
@page(*service.DESK_ROLES)
def begin_key():
    """Begin registering a security key; the next page asks the browser for it."""
    values: dict = {}
    try:
        values = form_values()
        body = load(KeyEnrolSchema(), values)
        factor, options = attempt(lambda: webauthn.begin_registration(
            db.session(), runtime(), caller(), origin=request_origin(), **body))
    except FormRefused as refused:
        return _factors_page(status=refused.status, refused=refused, refused_form="key",
                             values=values)
    return render("console/factor_key.html", factor=factor,
                  options=webauthn.OptionsSchema().dumps(options))


@blp.post("/account/factors/key/<factor_id>")
@page(*service.DESK_ROLES)
def finish_key(factor_id: str):
    """Confirm a security key with what it answered; show recovery codes if it is the first."""
    try:
        body = load(KeyAnswerSchema(), form_values())
        confirmed = attempt(lambda: webauthn.finish_registration(
            db.session(), runtime(), caller(), object_id(factor_id), body["credential"],
            origin=request_origin()))
    except FormRefused as refused:
        return _factors_page(status=refused.status, refused=refused, refused_form="key")
    return _issued(confirmed.recovery_codes, f"{confirmed.factor.label} is registered.")


@blp.post("/account/factors/<factor_id>/remove")
@page(*service.DESK_ROLES)
def remove_factor(factor_id: str):
    """Remove one of the user's factors, proved by a current code or a recovery code."""
    try:
        body = load(CodeSchema(), form_values())
        attempt(lambda: mfa.remove(db.session(), runtime(), caller(), object_id(factor_id),
                                   body["code"]))
    except FormRefused as refused:
        return _factors_page(status=refused.status, refused=refused,
                             refused_form=f"remove-{factor_id}")
    flash("The second factor is removed.")
    return redirect(url_for("console.factors"), 303)


@blp.post("/account/recovery-codes")
@page(*service.DESK_ROLES)
def new_recovery_codes():
    """Replace the user's recovery codes, proved by a current code or a recovery code."""
    try:
        body = load(CodeSchema(), form_values())
        codes = attempt(lambda: mfa.regenerate_recovery_codes(db.session(), runtime(),
                                                              caller(), body["code"]))
    except FormRefused as refused:
        return _factors_page(status=refused.status, refused=refused, refused_form="recovery")
    return _issued(codes, "New recovery codes are issued; the earlier ones no longer work.")
