"""The console's blueprint, its guard, its menu, and how a page reads a form and shows refusals.

A page is thin (STYLE 16): it reads a form through the API's own schema, calls the same
service as the API, and renders a template. A refusal — the schema's or the service's —
renders the form again with the same status the API would answer, each message beside the
field it names; the unit of work then rolls back whatever the service had begun.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import marshmallow as ma
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.datastructures import MultiDict

from backend import db
from backend.accounts.models import Role
from backend.auth.caller import Caller
from backend.auth.guard import client_address
from backend.console import service
from backend.errors import VigilError
from backend.mfa.policy import MfaRequired
from backend.runtime import runtime
from backend.untrusted import text_problem

blp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                static_folder="static", static_url_path="/static")

csrf = CSRFProtect()

# Where the cookie keeps the session's random id (its hash is the server's key).
SESSION_TOKEN = "sid"  # noqa: S105  (a key of the cookie, not a secret)
View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class MenuItem:
    """A page in the menu of the roles that may open it."""

    section: str
    label: str
    endpoint: str
    roles: frozenset[Role]


MENU: list[MenuItem] = []
# Who may open each page, by endpoint: a page links to another only for those who may open it.
ROLES: dict[str, frozenset[Role]] = {}
# The menu's order, by label: a desk user's day, from what needs review to administration.
ORDER = ("Flags", "Nurses", "Patients", "Rules", "Audit trail", "Ledger", "Inventory",
         "Movements", "Counts", "Bags", "Losses", "Reports", "Users", "Devices", "Policy",
         "Organisation")


def menu_for(role: Role) -> list[MenuItem]:
    """Return the menu entries `role` may open, in the console's order."""
    return sorted((item for item in MENU if role in item.roles),
                  key=lambda item: ORDER.index(item.label) if item.label in ORDER else len(ORDER))


def limits() -> service.Limits:
    """Return the configured idle and lifetime limits of a console session."""
    config = current_app.config
    return service.Limits(idle=timedelta(seconds=config["CONSOLE_IDLE_SECONDS"]),
                          lifetime=timedelta(seconds=config["CONSOLE_SESSION_SECONDS"]))


def signed_in(touch: bool = True) -> service.Resumed:
    """Resume this browser's session from its cookie; forget the cookie of one that ended."""
    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str):
        return service.Resumed(None)
    resumed = service.resume(db.session(), runtime(), token, client_address(), limits(),
                             touch=touch)
    if resumed.caller is None:
        session.pop(SESSION_TOKEN, None)
    else:
        g.caller = resumed.caller
    return resumed


def page(*roles: Role, menu: tuple[str, str] | None = None,
         touch: bool = True) -> Callable[[View], View]:
    """Let the view run only for a signed-in desk user of `roles`; list it in their menu.

    `touch=False` is for a page's own polling, which is not the user's activity and must not
    keep an idle session alive.
    """
    allowed = frozenset(roles)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            resumed = signed_in(touch)
            if resumed.caller is None:
                return _to_sign_in(resumed.ended)
            if resumed.caller.role not in allowed:
                return render("console/refused.html", status=403,
                              message=f"The {resumed.caller.role} role may not open this page.")
            return view(*args, **kwargs)

        ROLES[f"{blp.name}.{view.__name__}"] = allowed
        if menu is not None:
            MENU.append(MenuItem(menu[0], menu[1], f"{blp.name}.{view.__name__}", allowed))
        return guarded  # type: ignore[return-value]

    return decorate


def _to_sign_in(ended: str | None) -> Any:
    """Send the browser to sign in; an htmx request (a poll) sends the whole page, not a part."""
    partial = "HX-Request" in request.headers
    onward = request.full_path if request.method == "GET" and not partial else None
    target = url_for("console.login", ended=ended, next=onward)
    if partial:
        return "", 204, {"HX-Redirect": target}
    return redirect(target)


def caller() -> Caller:
    """Return the signed-in caller that `page` resumed."""
    return g.caller


def render(template: str, *, status: int = 200, **context: Any) -> Response:
    """Render a console template with the status the API would answer.

    A Response, not a tuple: the unit of work reads its status, and rolls a refusal back.
    """
    return make_response(render_template(template, status=status, **context), status)


class FormRefused(Exception):
    """A form's fields were refused: by its schema, by a service, or as unstorable text.

    `step_up` links to confirming a second factor when the action needs a fresher one.
    """

    def __init__(self, status: int, message: str, fields: Mapping[str, list[str]],
                 step_up: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.fields = status, message, dict(fields)
        self.step_up = step_up

    @classmethod
    def of(cls, error: VigilError) -> FormRefused:
        """Return the refusal of a service's domain error, by field where it names one."""
        if isinstance(error, MfaRequired) and error.details["enrolled"]:
            minutes = error.details["window_seconds"] // 60
            return cls(error.status, f"This needs your second factor, confirmed within the "
                                     f"last {minutes} minute{'s' if minutes != 1 else ''}.",
                       {}, url_for("console.step_up", next=_form_page()))
        if isinstance(error, MfaRequired):
            return cls(error.status, "This needs a second factor, and you have none yet: add "
                                     "one under My account, then try again.",
                       {}, url_for("console.factors"))
        return cls(error.status, error.message, _field_messages(error.details))


def _form_page() -> str:
    """Return the console page the form was sent from, to come back to.

    A browser names it as the referrer (the console's Referrer-Policy is same-origin); else
    the form posted to its own page's address.
    """
    sent_from = urlsplit(request.referrer or "")
    if sent_from.netloc == request.host and sent_from.path.startswith(blp.url_prefix):
        return sent_from.path + (f"?{sent_from.query}" if sent_from.query else "")
    return request.path


def _field_messages(details: Mapping[str, Any]) -> dict[str, list[str]]:
    fields = details.get("fields") or {}
    return {name: [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])]
            for name, msgs in fields.items()} if isinstance(fields, Mapping) else {}


def form_values(form: MultiDict | None = None, lists: frozenset[str] = frozenset()) -> dict:
    """Return a form's filled fields (blank ones left out, as an omitted JSON field)."""
    form = request.form if form is None else form
    values: dict[str, Any] = {}
    for name in form:
        if name == "csrf_token":
            continue
        items = [v for v in form.getlist(name) if v.strip() != ""]
        if name in lists:
            values[name] = items
        elif items:
            values[name] = items[0].strip()
    problems = {name: [problem] for name, value in form.items(multi=True)
                if (problem := text_problem(name) or text_problem(value))}
    if problems:
        raise FormRefused(422, "Some fields hold characters that cannot be stored.", problems)
    return values


def load(schema: ma.Schema, values: Mapping[str, Any]) -> dict:
    """Load form values through the API's schema, refusing as the API would (422 by field)."""
    try:
        return schema.load(values)
    except ma.ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_": error.messages}
        raise FormRefused(422, "Some fields need correcting.", _flatten(messages)) from error


def _flatten(messages: Mapping[str, Any], prefix: str = "") -> dict[str, list[str]]:
    flat: dict[str, list[str]] = {}
    for name, value in messages.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[key] = [str(m) for m in (value if isinstance(value, list) else [value])]
    return flat


def attempt(work: Callable[[], Any]) -> Any:
    """Run a service call, turning a domain refusal into a form refusal."""
    try:
        return work()
    except VigilError as error:
        raise FormRefused.of(error) from error


def pager(endpoint: str, offset: int, limit: int, more: bool,
          args: Mapping[str, Any] | None = None) -> dict[str, str | None]:
    """Return the links to a list's previous and next page, keeping `args` (its filters)."""
    kept = {name: value for name, value in (args or {}).items()
            if name not in ("limit", "offset") and value not in (None, "")}

    def at(start: int) -> str:
        return url_for(endpoint, **kept, limit=limit, offset=start)

    return {"previous": at(max(0, offset - limit)) if offset > 0 else None,
            "next": at(offset + limit) if more else None}


def object_id(raw: str) -> uuid.UUID | None:
    """Return a path's id as a UUID, or None when it is none (the page then answers 404)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


@blp.before_request
def _forms_carry_their_token() -> None:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


@blp.errorhandler(CSRFError)
def _forged(_error: CSRFError) -> Response:
    return render("console/refused.html", status=400,
                  message="This form was not sent from a page of this console, or the page is "
                          "too old. Reload the page and try again.")


@blp.errorhandler(VigilError)
def _refused(error: VigilError) -> Response:
    return render("console/refused.html", status=error.status, message=error.message)


@blp.app_template_filter("when")
def when(value: Any) -> str:
    """Show an aware datetime as minutes in UTC, the way every console page shows time."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "—"


@blp.context_processor
def _frame() -> dict[str, Any]:
    who = g.get("caller")
    if who is None:
        return {"who": None, "menu": [], "can_open": lambda _endpoint: False}
    from backend.accounts.models import Organisation, User

    user = db.session().get(User, who.user_id)
    organisation = db.session().get(Organisation, who.organisation_id)
    sections: dict[str, list[MenuItem]] = {}
    for item in menu_for(who.role):
        sections.setdefault(item.section, []).append(item)
    return {"who": user, "organisation": organisation, "menu": sections,
            "can_open": lambda endpoint: who.role in ROLES.get(endpoint, frozenset())}
