"""The admin's pages: users and the reset of their second factors, devices, policy thresholds
and the organisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import marshmallow as ma
from flask import Response, flash, redirect, request, url_for

from backend import bounded, db
from backend.accounts import service as accounts
from backend.accounts.models import Organisation, Role, User
from backend.accounts.schemas import STATES, RegistrantSchema, UserCreateSchema, UserUpdateSchema
from backend.auth import service as auth
from backend.console.account import METHODS
from backend.console.pages import (
    FormRefused,
    attempt,
    blp,
    caller,
    form_values,
    load,
    object_id,
    page,
    pager,
    render,
)
from backend.console.service import DESK_ROLES
from backend.devices import service as devices
from backend.mfa import service as mfa
from backend.policy import service as policy
from backend.runtime import runtime
from backend.safeguards_api.schemas import ThresholdsUpdateSchema

# The roles a user may be given, in the order the select lists them.
ROLES = [(role.value, role.value.capitalize()) for role in Role]
# Thresholds post as `thresholds.<name>`: the field names the policy's refusals use.
THRESHOLD = "thresholds."


class PageSchema(ma.Schema):
    """Which page of a list to show."""

    limit = bounded.Integer(load_default=50, validate=ma.validate.Range(1, 500))
    offset = bounded.Integer(bits=64, load_default=0, validate=ma.validate.Range(0))


def _page_of(items: Sequence[Any]) -> tuple[Sequence[Any], dict[str, str | None]]:
    """Return the page of `items` the query asks for, and the links to its neighbours."""
    try:
        query = load(PageSchema(), form_values(request.args))
    except FormRefused:
        query = PageSchema().load({})
    start, limit = query["offset"], query["limit"]
    return items[start:start + limit], pager(request.endpoint or "console.home", start, limit,
                                             len(items) > start + limit, request.args)


# Users ------------------------------------------------------------------------------------

def _users_page(*, status: int = 200, refused: FormRefused | None = None,
                values: Mapping[str, Any] | None = None) -> Response:
    shown, pages = _page_of(accounts.list_users(db.session(), caller()))
    return render("console/users.html", status=status, refused=refused,
                  values=values or {"role": Role.NURSE.value}, users=shown, pages=pages,
                  roles=ROLES)


@blp.get("/users")
@page(Role.ADMIN, menu=("Administration", "Users"))
def users():
    """List the organisation's users, active and deactivated, with a form to add one."""
    return _users_page()


@blp.post("/users")
@page(Role.ADMIN)
def add_user():
    """Add a user with one role, as POST /users does."""
    values: dict = {}
    try:
        values = form_values()
        body = load(UserCreateSchema(), values)
        who = caller()
        user = attempt(lambda: accounts.create_user(
            db.session(), runtime(), who, organisation_id=who.organisation_id, **body))
    except FormRefused as refused:
        values.pop("password", None)
        return _users_page(status=refused.status, refused=refused, values=values)
    flash(f"Added {user.display_name} ({user.username}) as {user.role}.")
    return redirect(url_for("console.users"), 303)


def _user_page(user: User, *, status: int = 200, refused: FormRefused | None = None,
               values: Mapping[str, Any] | None = None) -> Response:
    shown = values if values is not None else _user_values(user)
    session = db.session()
    return render("console/user.html", status=status, refused=refused, values=shown,
                  user=user, roles=ROLES, yourself=user.id == caller().user_id,
                  factors=[METHODS[method] for method in mfa.methods(session, user.id)
                           if method != mfa.BY_RECOVERY_CODE],
                  factor_due=auth.factor_due(session, runtime(), user))


@blp.get("/users/<user_id>")
@page(Role.ADMIN)
def user(user_id: str):
    """Show a user, with forms to change the role or name and to deactivate or reactivate."""
    return _user_page(accounts.get_user(db.session(), caller(), object_id(user_id)))


@blp.post("/users/<user_id>")
@page(Role.ADMIN)
def change_user(user_id: str):
    """Change a user's role, name or active flag, as PATCH /users/<id> does."""
    session, who = db.session(), caller()
    found = accounts.get_user(session, who, object_id(user_id))
    before = {"role": found.role, "active": found.active, "name": found.display_name,
              "contact": (found.phone, found.email)}
    values: dict = {}
    try:
        values = form_values()
        if "display_name" in request.form:
            # The contact fields sit in the name's form: left blank there, they are cleared.
            values = {"phone": "", "email": ""} | values
        body = load(UserUpdateSchema(), values)
        changed = attempt(lambda: accounts.update_user(
            session, runtime(), who, found.id, accounts.UserChange(**body)))
    except FormRefused as refused:
        return _user_page(found, status=refused.status, refused=refused,
                          values=_user_values(found) | values)
    flash(_what_changed(before, changed))
    return redirect(url_for("console.user", user_id=changed.id), 303)


@blp.post("/users/<user_id>/factors/reset")
@page(Role.ADMIN)
def reset_factors(user_id: str):
    """Reset a user's second factors, as POST /users/<id>/factors/reset does (a lost device)."""
    session, who = db.session(), caller()
    found = accounts.get_user(session, who, object_id(user_id))
    try:
        attempt(lambda: mfa.reset(session, runtime(), who, found.id))
    except FormRefused as refused:
        return _user_page(found, status=refused.status, refused=refused)
    flash(f"Reset the second factor of {found.display_name} ({found.username}): their sessions "
          "ended, and they enrol a new one at their next sign-in.")
    return redirect(url_for("console.user", user_id=found.id), 303)


def _what_changed(before: Mapping[str, Any], user: User) -> str:
    """Say in a sentence what an admin's change did."""
    name = f"{user.display_name} ({user.username})"
    if before["active"] and not user.active:
        return f"Deactivated {name}: their console and app sessions ended."
    if not before["active"] and user.active:
        return f"Reactivated {name}: they may sign in again."
    if before["role"] != user.role:
        return (f"{name} is now {user.role} (was {before['role']}); "
                "their sessions ended, to sign in again with the new role.")
    if before["name"] != user.display_name:
        return f"Renamed {before['name']} to {user.display_name}."
    if before["contact"] != (user.phone, user.email):
        return f"Saved the phone and email of {name}."
    return f"Nothing changed for {name}."


def _user_values(user: User) -> dict[str, str]:
    return {"role": user.role.value, "display_name": user.display_name,
            "phone": user.phone or "", "email": user.email or ""}


# Devices ----------------------------------------------------------------------------------

def _devices_page(*, status: int = 200, refused: FormRefused | None = None) -> Response:
    session, who = db.session(), caller()
    shown, pages = _page_of(devices.visible_devices(session, who))
    names = {person.id: person.display_name for person in accounts.list_users(session, who)}
    return render("console/devices.html", status=status, refused=refused, devices=shown,
                  pages=pages, names=names, may_revoke=who.role == Role.ADMIN)


@blp.get("/devices")
@page(Role.ADMIN, Role.COMPLIANCE, menu=("Administration", "Devices"))
def device_list():
    """List the nurses' phones, each with its nurse and whether it is revoked."""
    return _devices_page()


@blp.post("/devices/<device_id>/revoke")
@page(Role.ADMIN)
def revoke_device(device_id: str):
    """Revoke a phone, as DELETE /devices/<id> does: its sessions end at once."""
    session, who = db.session(), caller()
    device = devices.revoke(session, runtime(), who, object_id(device_id))
    nurse = accounts.get_user(session, who, device.user_id)
    flash(f"Revoked “{device.label}” of {nurse.display_name}: its sessions ended and its "
          "signatures no longer verify.")
    return redirect(url_for("console.device_list"), 303)


# Policy -----------------------------------------------------------------------------------

def _policy_page(*, status: int = 200, refused: FormRefused | None = None,
                 values: Mapping[str, Any] | None = None) -> Response:
    thresholds = policy.describe(db.session(), caller())
    shown = values if values is not None else {
        f"{THRESHOLD}{view.name}": str(view.value) for view in thresholds}
    return render("console/policy.html", status=status, refused=refused, values=shown,
                  thresholds=thresholds, may_edit=caller().role == Role.ADMIN,
                  field=THRESHOLD)


@blp.get("/policy")
@page(*DESK_ROLES, menu=("Administration", "Policy"))
def policy_page():
    """List every threshold with its value in force, default, bounds, unit and source."""
    return _policy_page()


def _changed(in_force: Sequence[policy.ThresholdView], values: Mapping[str, str]) -> dict:
    """Return the thresholds whose field differs from the value in force (blank: default)."""
    posted = {name.removeprefix(THRESHOLD) for name in request.form
              if name.startswith(THRESHOLD)}
    return {view.name: values.get(f"{THRESHOLD}{view.name}") for view in in_force
            if view.name in posted and values.get(f"{THRESHOLD}{view.name}") != str(view.value)}


def _beside_fields(refused: FormRefused) -> FormRefused:
    """Name a threshold's own field for the schema's refusal of its value."""
    fields = {name.removesuffix(".value").removesuffix(".key"): messages
              for name, messages in refused.fields.items()}
    return FormRefused(refused.status, refused.message, fields)


@blp.post("/policy")
@page(Role.ADMIN)
def set_policy():
    """Override the thresholds the form changed, as PATCH /safeguards/policy does."""
    session, who = db.session(), caller()
    values: dict = {}
    try:
        values = form_values()
        changed = _changed(policy.describe(session, who), values)
        if not changed:
            flash("No threshold changed.")
            return redirect(url_for("console.policy_page"), 303)
        body = load(ThresholdsUpdateSchema(), {"thresholds": changed})
        attempt(lambda: policy.set_values(session, runtime(), who, body["thresholds"]))
    except FormRefused as refused:
        return _policy_page(status=refused.status, refused=_beside_fields(refused),
                            values=values)
    flash("Saved " + ", ".join(f"{name} = {value if value is not None else 'its default'}"
                               for name, value in sorted(changed.items())) + ".")
    return redirect(url_for("console.policy_page"), 303)


# Organisation -----------------------------------------------------------------------------

def _organisation_page(*, status: int = 200, refused: FormRefused | None = None,
                       values: Mapping[str, Any] | None = None) -> Response:
    who = caller()
    found = db.session().get(Organisation, who.organisation_id)
    return render("console/organisation.html", status=status, refused=refused,
                  organisation=found, editable=who.role == Role.ADMIN,
                  states=[(code, code) for code in STATES],
                  values=values if values is not None else _registrant_values(found))


def _registrant_values(organisation: Organisation) -> dict[str, str]:
    return {name: "" if (value := getattr(organisation, name)) is None else str(value)
            for name in accounts.REGISTRANT_FIELDS}


@blp.get("/organisation")
@page(*DESK_ROLES, menu=("Administration", "Organisation"))
def organisation():
    """Show the registrant's details, as GET /organisation does; an admin may change them."""
    return _organisation_page()


@blp.post("/organisation")
@page(Role.ADMIN)
def change_organisation():
    """Change the registrant's name, registration or address, as PATCH /organisation does."""
    session, who = db.session(), caller()
    values: dict = {}
    try:
        values = form_values()
        # The form shows every field: a blank one clears it, as null does in the API.
        body = load(RegistrantSchema(), {name: values.get(name)
                                         for name in accounts.REGISTRANT_FIELDS})
        attempt(lambda: accounts.update_registrant(session, runtime(), who, body))
    except FormRefused as refused:
        return _organisation_page(status=refused.status, refused=refused, values=values)
    flash("Saved the registrant's details: every DEA record prints them from now on.")
    return redirect(url_for("console.organisation"), 303)
