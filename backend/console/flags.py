"""The compliance officer's flag queue and a flag's page: its rule, evidence timeline, review.

The queue reads through `flags.service.listing` and counts by severity in one grouped read; a
flag's page reads it through `flags.service.read` (audited `flag.read`, as the API's GET is),
its patient through `patients.service.read` (audited `patient.read`) and its timeline through
`console.timeline`. Assign, note and resolve post through the API's schemas to the API's
service functions.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import marshmallow as ma
from flask import Response, flash, redirect, request, url_for

from backend import bounded, db
from backend.accounts import service as accounts
from backend.accounts.models import Role, User
from backend.console import timeline
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
from backend.errors import NotFound
from backend.flags import service as flags
from backend.flags.models import Flag, FlagStatus, Resolution
from backend.flags.schemas import (
    SEVERITIES,
    STATUSES,
    AssignSchema,
    FlagQuerySchema,
    NoteSchema,
    ResolveSchema,
)
from backend.patients import service as patients
from backend.patients.service import PatientView
from backend.runtime import runtime
from backend.safeguards_api import service as safeguards
from safeguards.registry import Mode, RuleMeta, UnknownRule

REVIEWERS = flags.REVIEWERS
PAGE_SIZE = 50
# The queue a reviewer starts from: what still waits for a verdict.
UNRESOLVED, ANY = "unresolved", "any"
STATUS_CHOICES = {UNRESOLVED: (FlagStatus.OPEN, FlagStatus.IN_REVIEW), ANY: (),
                  **{status: (status,) for status in STATUSES}}
STATUS_LABELS = [(UNRESOLVED, "Open or in review"), (FlagStatus.OPEN, "Open"),
                 (FlagStatus.IN_REVIEW, "In review"), (FlagStatus.RESOLVED, "Resolved"),
                 (ANY, "Any status")]
VERDICTS = {Resolution.JUSTIFIED: "Justified (a real event, with a good reason)",
            Resolution.CONFIRMED_MISUSE: "Confirmed misuse",
            Resolution.CONFIRMED_DIVERSION: "Confirmed diversion",
            Resolution.FALSE_POSITIVE: "False positive (the rule was wrong)"}
# Evidence keys naming the limit a finding was judged against (`limit`, `plan_max_dose_ug`,
# `ceiling_mg_per_kg`, `z_threshold`, `cadss_limit`…): rules record the value they applied.
LIMIT_KEY = re.compile(r"(^|_)(limit|max|min|ceiling|tolerance|threshold|hold|radius|required)"
                       r"(_|$)|^(window_minutes|interval_minutes|low_dose_ratio|"
                       r"large_waste_ratio|cluster_count)$")


class QueueQuerySchema(FlagQuerySchema):
    """The queue's filter form: the API's query, one status and severity, a patient's MRN."""

    status = ma.fields.String(load_default=UNRESOLVED,
                              validate=ma.validate.OneOf(list(STATUS_CHOICES)))
    severity = ma.fields.String(validate=ma.validate.OneOf(SEVERITIES))
    mrn = ma.fields.String(validate=ma.validate.Length(1, 64))
    limit = bounded.Integer(load_default=PAGE_SIZE, validate=ma.validate.Range(1, 200))

    @ma.post_load
    def _as_filter(self, data: dict, **_: Any) -> dict:
        return {**data, "status": STATUS_CHOICES[data["status"]],
                "severity": (data["severity"],) if "severity" in data else ()}


def _people(session) -> dict[uuid.UUID, User]:
    return {user.id: user for user in accounts.list_users(session, caller())}


def _options(people: Mapping[uuid.UUID, User], *roles: Role) -> list[tuple[str, str]]:
    return sorted(((str(user.id), f"{user.display_name} ({user.username})")
                   for user in people.values() if user.role in roles), key=lambda o: o[1])


def _rules() -> dict[str, RuleMeta]:
    return {rule.meta.id: rule.meta for rule in safeguards.registry()}


def _patient_of(query: dict) -> tuple[PatientView | None, str | None]:
    """Return the patient the query names (by MRN, else by id), audited as the API reads one."""
    session, rt, who = db.session(), runtime(), caller()
    if "mrn" in query:
        found = patients.search(session, rt, who, query["mrn"])
        return (found[0], None) if found else (
            None, "No patient of this organisation has this record number.")
    if "patient" in query:
        return attempt(lambda: patients.read(session, rt, who, query["patient"])), None
    return None, None


def _queue_filter(query: dict, patient: PatientView | None) -> flags.FlagFilter:
    chosen = {name: query[name] for name in ("status", "severity", "rule", "nurse", "assignee",
                                             "subject_kind", "subject_id", "shadow", "offset")
              if name in query}
    return flags.FlagFilter(**chosen, patient=patient.id if patient else None,
                            limit=query["limit"] + 1)


def _age(since: datetime, now: datetime) -> str:
    age = now - since
    if age >= timedelta(days=1):
        return f"{age.days} d"
    if age >= timedelta(hours=1):
        return f"{age // timedelta(hours=1)} h"
    return f"{max(age // timedelta(minutes=1), 0)} min"


def _link(values: Mapping[str, str], **changes: Any) -> str:
    """Return the queue's address with the shown filters and `changes` (None drops one)."""
    args = {**values, **changes}
    return url_for("console.flag_queue", **{k: v for k, v in args.items() if v is not None})


def _queue(values: dict) -> dict[str, Any]:
    """Return the flags, counts and pages the queue's filters select."""
    session, who = db.session(), caller()
    query = load(QueueQuerySchema(), values)
    patient, unknown = _patient_of(query)
    shown = dict(values)
    if patient is not None:
        # The form shows the record number; links carry the patient's id, not her MRN.
        values["mrn"] = patient.mrn
        shown = {**{k: v for k, v in values.items() if k != "mrn"}, "patient": str(patient.id)}
    if unknown:
        return {"unknown_mrn": unknown}
    where = _queue_filter(query, patient)
    found = flags.listing(session, who, where)
    pages = pager("console.flag_queue", query["offset"], query["limit"],
                  len(found) > query["limit"], shown)
    return {"flags": found[:query["limit"]], "pages": pages,
            "shown": shown,
            "counts": flags.severity_counts(session, who, replace(where, severity=()))}


@blp.get("/flags")
@page(*REVIEWERS, menu=("Review", "Flags"))
def flag_queue():
    """Show the review queue: counts by severity, filters, flags most severe then oldest."""
    people, rules = _people(db.session()), _rules()
    context: dict[str, Any] = {
        "people": people, "rules": rules, "now": runtime().clock.now(),
        "statuses": STATUS_LABELS, "severities": [(s, s.capitalize()) for s in SEVERITIES][::-1],
        "rule_options": sorted((rule_id, f"{meta.title} ({rule_id})")
                               for rule_id, meta in rules.items()),
        "nurses": _options(people, Role.NURSE), "reviewers": _options(people, *REVIEWERS),
        "link": _link, "age": _age, "subject": _subject, "flags": [], "counts": {},
        "pages": {}, "shown": {}}
    values: dict = {}
    try:
        values = form_values(request.args)
        context |= _queue(values)
    except FormRefused as refused:
        return render("console/flags.html", status=refused.status, refused=refused,
                      values=values, **context)
    partial = request.headers.get("HX-Request") and not request.headers.get(
        "HX-History-Restore-Request")
    return render("console/flags_queue.html" if partial else "console/flags.html",
                  values=values, **context)


def _subject(flag: Flag, people: Mapping[uuid.UUID, User]) -> str:
    """Return what a flag is about, in words that name no patient."""
    if flag.subject_kind in ("nurse", "prescriber"):
        # The pharmacy rules file their pharmacist as a flag's person (kind `nurse`), and a
        # prescriber's id is the subject's: the person's own role names them either way.
        user = people.get(flag.nurse_id if flag.subject_kind == "nurse"
                          else object_id(flag.subject_id))
        return f"{user.role.capitalize()} {user.display_name}" if user \
            else f"A {flag.subject_kind}"
    if flag.subject_kind == "lot":
        return f"Lot {flag.subject_id}"
    if flag.subject_kind == "rule":
        return f"Rule {flag.subject_id}"
    return flag.subject_kind.capitalize()


def _flag_id(raw: str) -> uuid.UUID:
    flag_id = object_id(raw)
    if flag_id is None:
        raise NotFound("No such flag.")
    return flag_id


def _rule(session, rule_id: str) -> tuple[RuleMeta | None, Mode | None]:
    registered = safeguards.registry_for(session, caller().organisation_id)
    try:
        return registered.get(rule_id).meta, registered.mode(rule_id)
    except UnknownRule:
        return None, None


def limits(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """Return the evidence entries that record the limit the finding was judged against."""
    return {name: value for name, value in evidence.items() if LIMIT_KEY.search(name)}


def _flag_page(flag_id: uuid.UUID, *, status: int = 200, refused: FormRefused | None = None,
               values: dict | None = None) -> Response:
    session, rt, who = db.session(), runtime(), caller()
    flag = flags.read(session, rt, who, flag_id)
    people = _people(session)
    rule, mode = _rule(session, flag.rule_id)
    patient = patients.read(session, rt, who, flag.patient_id) if flag.patient_id else None
    return render("console/flag.html", status=status, flag=flag, rule=rule, mode=mode,
                  patient=patient, people=people, limits=limits(flag.evidence),
                  timeline=timeline.of_flag(session, rt, who, flag, people),
                  subject=_subject(flag, people), verdicts=VERDICTS, refused=refused,
                  values=values or {})


@blp.get("/flags/<flag_id>")
@page(*REVIEWERS)
def flag(flag_id: str):
    """Show a flag: its rule, its evidence as a timeline, its history and its review."""
    return _flag_page(_flag_id(flag_id))


def _review(raw_id: str, schema: ma.Schema, act: Callable[[uuid.UUID, dict], Flag],
            said: Callable[[Flag], str]):
    """Take a review step through the API's schema and service, or show why it was refused."""
    flag_id = _flag_id(raw_id)
    values: dict = {}
    try:
        values = form_values()
        body = load(schema, {name: values[name] for name in schema.fields if name in values})
        reviewed = attempt(lambda: act(flag_id, body))
    except FormRefused as refused:
        return _flag_page(flag_id, status=refused.status, refused=refused, values=values)
    flash(said(reviewed))
    return redirect(url_for("console.flag", flag_id=flag_id), 303)


@blp.post("/flags/<flag_id>/assign")
@page(*REVIEWERS)
def assign_flag(flag_id: str):
    """Assign the flag to the reviewer who asked; an open flag goes into review."""
    return _review(flag_id, AssignSchema(), lambda found, body: flags.assign(
        db.session(), runtime(), caller(), found, body["assignee_id"]),
        lambda done: f"The flag is assigned to you and is {done.status.replace('_', ' ')}.")


@blp.post("/flags/<flag_id>/notes")
@page(*REVIEWERS)
def note_flag(flag_id: str):
    """Add a note to the flag's history."""
    return _review(flag_id, NoteSchema(), lambda found, body: flags.add_note(
        db.session(), runtime(), caller(), found, body["note"]),
        lambda done: f"Your note is step {done.events[-1].seq} of the flag's history.")


@blp.post("/flags/<flag_id>/resolve")
@page(*REVIEWERS)
def resolve_flag(flag_id: str):
    """Resolve the flag with a verdict and the note that explains it."""
    return _review(flag_id, ResolveSchema(), lambda found, body: flags.resolve(
        db.session(), runtime(), caller(), found, Resolution(body["resolution"]), body["note"]),
        lambda done: f"The flag is resolved as {done.resolution.replace('_', ' ')}.")
