"""Sign in (with the second factor), step up, sign out, and the console's front door.

A password accepted with a factor due leads to a second step (/console/login/factor) that asks
for a code or a security key, or, past the grace with none, shows a QR code to enrol one and
asks for its first code; the signed cookie keeps only the challenge token between the two.
Only the second step's answer opens the console session, which records the factor proved.
"""

from __future__ import annotations

import json

import marshmallow as ma
from flask import Response, flash, jsonify, redirect, request, session, url_for

from backend import db
from backend.auth import service as auth
from backend.auth.guard import client_address, request_origin
from backend.auth.schemas import ProvedSchema
from backend.console import service
from backend.console.pages import (
    SESSION_TOKEN,
    FormRefused,
    attempt,
    blp,
    caller,
    form_values,
    load,
    menu_for,
    page,
    render,
    signed_in,
    when,
)
from backend.mfa import service as mfa
from backend.mfa import webauthn
from backend.runtime import runtime

# Where the cookie keeps a sign-in between its password and its second factor.
CHALLENGE, ONWARD = "challenge", "next"

ENDED = {
    "idle": "You were signed out after 15 minutes without activity.",
    "expired": "Your session reached its maximum length. Sign in again.",
    "revoked": "Your session was ended (signed out elsewhere, or the account changed).",
}


class JsonObject(ma.fields.Field):
    """A JSON object posted as a form field's text (a security key's answer, as the page's
    script encodes it)."""

    def _deserialize(self, value, attr, data, **kwargs) -> dict:
        try:
            parsed = json.loads(value)
        except (TypeError, ValueError) as error:
            raise ma.ValidationError("not JSON") from error
        if not isinstance(parsed, dict):
            raise ma.ValidationError("not a JSON object")
        return parsed


class ProvedFormSchema(ProvedSchema):
    """A second factor as a console form posts it: a code, or a security key's answer."""

    class Meta:
        unknown = ma.EXCLUDE

    webauthn = JsonObject(load_default=None, data_key="credential")


def proved_from(values: dict) -> auth.Proved:
    """Return the factor a form proves: its code, or its security key's answer."""
    body = load(ProvedFormSchema(), values)
    return auth.Proved(code=body["code"], assertion=body["webauthn"], origin=request_origin())


class SignInSchema(ma.Schema):
    """The sign-in form: the API login's fields, without a device."""

    org = ma.fields.String(required=True, validate=ma.validate.Length(1, 63))
    username = ma.fields.String(required=True, validate=ma.validate.Length(1, 150))
    password = ma.fields.String(required=True, validate=ma.validate.Length(1, 1024))
    next = ma.fields.String(load_default=None)


def _onward(target: str | None) -> str:
    # Only a console path: a sign-in link must not send anyone to another site.
    if target and target.startswith("/console/") and not target.startswith("/console//"):
        return target
    return url_for("console.home")


@blp.get("/login")
def login():
    """Show the sign-in form, saying why a previous session ended."""
    if signed_in(touch=False).caller is not None:
        return redirect(url_for("console.home"))
    return render("console/login.html", ended=ENDED.get(request.args.get("ended", "")),
                  next=request.args.get("next"), values={})


@blp.post("/login")
def sign_in():
    """Sign in with organisation, username and password, limited as API login is."""
    values: dict = {}
    try:
        values = form_values()
        body = load(SignInSchema(), values)
        opened = attempt(lambda: service.sign_in(
            db.session(), runtime(), org_slug=body["org"], username=body["username"],
            password=body["password"], address=client_address()))
    except FormRefused as refused:
        values.pop("password", None)
        return render("console/login.html", status=refused.status, refused=refused,
                      values=values, next=values.get("next"))
    # A new cookie for a new sign-in: nothing of the anonymous one (its CSRF token) carries over.
    session.clear()
    if isinstance(opened, auth.Challenge):
        # The challenge token, never the password, carries the sign-in to its second step.
        session[CHALLENGE] = opened.challenge_token
        session[ONWARD] = body["next"]
        return redirect(url_for("console.second_factor"))
    session[SESSION_TOKEN] = opened.token
    return redirect(_onward(body["next"]))


def _challenge() -> str | None:
    token = session.get(CHALLENGE)
    return token if isinstance(token, str) else None


def _second_step(*, status: int = 200, refused: FormRefused | None = None) -> Response:
    """Render the second step of a sign-in, or the sign-in page when its challenge is over."""
    token = _challenge()
    if token is None:
        return redirect(url_for("console.login"))
    try:
        step = attempt(lambda: service.factor_step(db.session(), runtime(), token,
                                                   client_address()))
    except FormRefused as over:
        session.pop(CHALLENGE, None)
        return render("console/login.html", status=over.status, refused=over, values={},
                      next=session.pop(ONWARD, None))
    return render("console/login_factor.html", status=status, refused=refused, step=step)


@blp.get("/login/factor")
def second_factor():
    """Ask a signed-in password for its second factor, or for the enrolment of one."""
    return _second_step()


@blp.post("/login/factor")
def prove_second_factor():
    """Complete a sign-in with a code or a security key; show the codes an enrolment issued."""
    token = _challenge()
    if token is None:
        return redirect(url_for("console.login"))
    try:
        proved = proved_from(form_values())
        opened = attempt(lambda: service.complete_sign_in(db.session(), runtime(), token,
                                                          proved, client_address()))
    except FormRefused as refused:
        if refused.status == 409:
            # An enrolment that expired: the next step shows a new one to scan.
            flash(refused.message)
            return redirect(url_for("console.second_factor"), 303)
        return _second_step(status=refused.status, refused=refused)
    onward = _onward(session.get(ONWARD))
    session.clear()
    session[SESSION_TOKEN] = opened.token
    if opened.recovery_codes:
        return render("console/recovery_codes.html", codes=opened.recovery_codes,
                      onward=onward)
    return redirect(onward)


@blp.post("/login/webauthn-options")
def sign_in_key_options():
    """Return a security key's assertion options for the sign-in's second step, as JSON."""
    token = _challenge()
    if token is None:
        return render("console/refused.html", status=401, message="Sign in again.")
    return jsonify(webauthn.OptionsSchema().dump(service.sign_in_key_options(
        db.session(), runtime(), token, client_address(), request_origin())))


@blp.post("/logout")
@page(*service.DESK_ROLES)
def sign_out():
    """Sign out: the session is revoked on the server, the cookie forgotten."""
    service.sign_out(db.session(), runtime(), caller())
    session.clear()
    return redirect(url_for("console.login"))


@blp.get("/")
@page(*service.DESK_ROLES)
def home():
    """Open the first page of the signed-in role's menu."""
    entries = menu_for(caller().role)
    return redirect(url_for(entries[0].endpoint)) if entries else render(
        "console/refused.html", status=403, message="Your role has no console pages.")


@blp.get("/step-up")
@page(*service.DESK_ROLES)
def step_up():
    """Ask for a second factor again, for the sensitive actions that need it fresh."""
    return _step_up_page()


def _step_up_page(*, status: int = 200, refused: FormRefused | None = None) -> Response:
    who = caller()
    return render("console/step_up.html", status=status, refused=refused,
                  methods=mfa.methods(db.session(), who.user_id),
                  next=request.values.get("next"))


@blp.post("/step-up")
@page(*service.DESK_ROLES)
def prove_step_up():
    """Prove a code or a security key for this session; go back to the page that asked."""
    try:
        proved = proved_from(form_values())
        fresh_until = attempt(lambda: service.step_up(db.session(), runtime(), caller(),
                                                      proved))
    except FormRefused as refused:
        return _step_up_page(status=refused.status, refused=refused)
    flash(f"Second factor confirmed: sensitive actions are open until {when(fresh_until)}.")
    return redirect(_onward(request.form.get("next")), 303)


@blp.post("/step-up/webauthn-options")
@page(*service.DESK_ROLES)
def step_up_key_options():
    """Return a security key's assertion options for a step-up, as JSON."""
    return jsonify(webauthn.OptionsSchema().dump(service.step_up_key_options(
        db.session(), runtime(), caller(), request_origin())))
