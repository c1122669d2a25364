"""Oversight: the safeguard rules and their modes, the audit trail, and the ledger's integrity."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any

from flask import (
    Flask,
    Response,
    after_this_request,
    current_app,
    flash,
    redirect,
    request,
    url_for,
)

from backend import boundary, bounded, db
from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.audit import service as audit
from backend.audit.schemas import AuditQuerySchema
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
from backend.custody import service as custody
from backend.custody.verify import is_exported
from backend.flags.service import REVIEWERS
from backend.jobs import service as jobs
from backend.jobs.scheduler import holder_id
from backend.runtime import runtime
from backend.safeguards_api import service as safeguards
from backend.safeguards_api.schemas import RuleModeSchema
from backend.scan.chain import SCAN_ACTION
from safeguards.registry import Mode

log = logging.getLogger(__name__)

# As GET /custody/checkpoints: who may see the ledger's integrity, and so ask for a verify.
LEDGER_READERS = (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE)
# The mode select's choice for the API's null: the rule's own mode.
OWN_MODE = "default"
# Where an app may put its own way of running work in the background (tests run it at once).
BACKGROUND = "vigil.console.background"


# Rules ------------------------------------------------------------------------------------

@blp.get("/rules")
@page(*REVIEWERS, menu=("Review", "Rules"))
def rules():
    """List every rule with its mode, cadence, open flags and measured precision."""
    return render("console/rules.html", rules=safeguards.rules(db.session(), caller()))


def _rule_page(rule_id: str, *, status: int = 200, refused: FormRefused | None = None,
               values: dict | None = None) -> Response:
    rule = safeguards.rule(db.session(), caller(), rule_id)
    return render("console/rule.html", status=status, rule=rule, refused=refused,
                  values=values if values is not None else {"mode": rule.mode.value},
                  own_mode=OWN_MODE)


@blp.get("/rules/<rule_id>")
@page(*REVIEWERS)
def rule(rule_id: str):
    """Show one rule: what it flags and why, its verdicts, and the form to change its mode."""
    return _rule_page(rule_id)


@blp.post("/rules/<rule_id>")
@page(*REVIEWERS)
def set_rule_mode(rule_id: str):
    """Change how the organisation runs a rule, as PATCH /safeguards/rules/<id> does."""
    values: dict = {}
    session, who = db.session(), caller()
    try:
        values = form_values()
        # The select's "default" is the API's null: the rule's own mode.
        body = load(RuleModeSchema(), {**values, "mode": None} if values.get("mode") == OWN_MODE
                    else values)
        before = safeguards.rule(session, who, rule_id)
        mode = Mode(body["mode"]) if body["mode"] else None
        after = attempt(lambda: safeguards.set_mode(session, runtime(), who, rule_id, mode))
    except FormRefused as refused:
        return _rule_page(rule_id, status=refused.status, refused=refused, values=values)
    flash(f"“{after.title}” now runs {after.mode} (it ran {before.mode}).")
    return redirect(url_for("console.rule", rule_id=rule_id), 303)


# Audit trail ------------------------------------------------------------------------------

class AuditSearchSchema(AuditQuerySchema):
    """The API's audit filters, with times from the form's date-time fields read as UTC."""

    since = bounded.DateTime(default_timezone=UTC)
    until = bounded.DateTime(default_timezone=UTC)


@blp.get("/audit")
@page(Role.COMPLIANCE, Role.ADMIN, menu=("Review", "Audit trail"))
def audit_trail():
    """Search the audit trail by user, action, object and time, newest first, a page at a time."""
    session, who = db.session(), caller()
    users = accounts.list_users(session, who)
    people = [(user.id, f"{user.display_name} ({user.username})") for user in users]
    values: dict = {}
    try:
        values = form_values(request.args)
        query = load(AuditSearchSchema(), values)
    except FormRefused as refused:
        return render("console/audit.html", status=refused.status, refused=refused,
                      values=values, events=[], people=people, names={}, pages={})
    limit = query["limit"]
    # One more than a page: whether it came says if there is a next page.
    events = audit.list_events(session, who, audit.AuditFilter(**{**query, "limit": limit + 1}))
    return render("console/audit.html", values=values, events=events[:limit], people=people,
                  names={user.id: user.display_name for user in users},
                  pages=pager("console.audit_trail", query["offset"], limit, len(events) > limit,
                              values))


# Ledger -----------------------------------------------------------------------------------

def in_thread(work: Callable[[], None]) -> None:
    """Run `work` in a daemon thread of this web process (a stopping server abandons it)."""
    threading.Thread(target=work, name="vigil-console-background", daemon=True).start()


def run_verify(app: Flask, run_id: uuid.UUID) -> None:
    """Run a requested verify in a unit of work of its own; keep a crash as its failure."""
    sessions, rt = app.extensions["vigil.db"].sessions, app.extensions["vigil.runtime"]
    try:
        boundary.run_in_unit(sessions, rt,
                             lambda session: jobs.run_ledger_verify(session, rt, run_id))
    except Exception as error:
        # The thread's top: nothing above it would see the error, and the page waits on it.
        log.exception("ledger verify %s failed", run_id)
        failure = type(error).__name__
        boundary.run_in_unit(sessions, rt, lambda session: jobs.fail_ledger_verify(
            session, rt, run_id, failure))


def _start_after_commit(run_id: uuid.UUID) -> None:
    """Start the verify once this request has committed the run it reads."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    background = app.extensions.get(BACKGROUND, in_thread)

    def start(response: Response) -> Response:
        if response.status_code < 400:
            background(functools.partial(run_verify, app, run_id))
        return response

    after_this_request(start)


def _verify_context(run: Any) -> dict[str, Any]:
    """Return what the verify partial shows: the run, who asked for it, whether it is done."""
    asked = run.outcome.get("requested_by") if run is not None else None
    requester = (accounts.get_user(db.session(), caller(), uuid.UUID(asked))
                 if asked else None)
    return {"run": run, "requester": requester,
            "running": run is not None and run.finished_at is None}


def _ledger_page(*, status: int = 200, refused: FormRefused | None = None) -> Response:
    session, who, rt = db.session(), caller(), runtime()
    checkpoint = next(iter(custody.checkpoints(session, who, limit=1)), None)
    scans = audit.list_events(session, who, audit.AuditFilter(
        action=SCAN_ACTION, object_type="organisation", object_id=str(who.organisation_id),
        limit=1))
    runs = jobs.ledger_verifies(session, who, limit=1)
    return render("console/ledger.html", status=status, refused=refused,
                  head=custody.chain_head(session, who), checkpoint=checkpoint,
                  exported=checkpoint is not None and is_exported(rt.checkpoint_dir, checkpoint),
                  scan=next(iter(scans), None),
                  **_verify_context(next(iter(runs), None)))


@blp.get("/ledger")
@page(*LEDGER_READERS, menu=("Review", "Ledger"))
def ledger():
    """Show the chain head, the last checkpoint, the last verify, and a button to verify now."""
    return _ledger_page()


@blp.post("/ledger/verify")
@page(*LEDGER_READERS)
def verify_ledger():
    """Ask for the organisation's ledger to be verified now, in the background."""
    try:
        run = attempt(lambda: jobs.request_ledger_verify(db.session(), runtime(), caller(),
                                                         holder_id()))
    except FormRefused as refused:
        return _ledger_page(status=refused.status, refused=refused)
    _start_after_commit(run.id)
    flash("The ledger is being verified; the result shows under “Last verify” when it is done.")
    return redirect(url_for("console.ledger"), 303)


@blp.get("/ledger/verify/<run_id>")
@page(*LEDGER_READERS, touch=False)
def verify_status(run_id: str):
    """Answer htmx's poll with the verify's status; a browser without it sees the whole page."""
    if request.headers.get("HX-Request") != "true":
        return redirect(url_for("console.ledger"))
    run = jobs.ledger_verify(db.session(), caller(), object_id(run_id))
    return render("console/ledger_verify.html", **_verify_context(run))

