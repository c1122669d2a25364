"""Sign in, sign out, and the console's front door."""

from __future__ import annotations

import marshmallow as ma
from flask import redirect, request, session, url_for

from backend import db
from backend.auth.guard import client_address
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
)
from backend.runtime import runtime

ENDED = {
    "idle": "You were signed out after 15 minutes without activity.",
    "expired": "Your session reached its maximum length. Sign in again.",
    "revoked": "Your session was ended (signed out elsewhere, or the account changed).",
}


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
        token, _caller = attempt(lambda: service.sign_in(
            db.session(), runtime(), org_slug=body["org"], username=body["username"],
            password=body["password"], address=client_address()))
    except FormRefused as refused:
        values.pop("password", None)
        return render("console/login.html", status=refused.status, refused=refused,
                      values=values, next=values.get("next"))
    # A new cookie for a new sign-in: nothing of the anonymous one (its CSRF token) carries over.
    session.clear()
    session[SESSION_TOKEN] = token
    return redirect(_onward(body["next"]))


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
