"""A nurse's page and a patient's page: their flags, charts against peers and plan, records.

Each section shows only to the roles the API lets read it: a nurse's flags and peer figures to
the flag reviewers, her bag statement to the statement's readers; a patient's page to those
who may read the patient and her trajectory. PHI is read through the services the API calls,
so the page writes the same audit rows (patient.read, patient.trajectory_read, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import marshmallow as ma
from flask import Response, request
from markupsafe import Markup

from backend import db
from backend.accounts import service as accounts
from backend.accounts.models import User
from backend.administration import reports
from backend.administration.instruments import OUTCOMES
from backend.administration.resources import READERS as SESSION_READERS
from backend.console import charts
from backend.console.pages import (
    FormRefused,
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
from backend.custody import reports as custody_reports
from backend.custody import shifts
from backend.custody.resources import READERS as STATEMENT_READERS
from backend.errors import NotFound
from backend.flags import service as flags
from backend.patients import service as patients
from backend.patients.resources import READERS as PATIENT_READERS
from backend.patients.schemas import PatientQuerySchema
from backend.plans import service as plans
from backend.plans import signing
from backend.plans.models import PlanVersion
from backend.runtime import runtime
from backend.scan import loaders
from backend.visits import service as visits
from backend.visits.models import VisitStatus
from safeguards.facts import NurseActivity, WitnessPair

# Who may open what, as the API's matching endpoints allow (nurses have no console).
REVIEWERS = frozenset(flags.REVIEWERS) & DESK_ROLES
STATEMENT = frozenset(STATEMENT_READERS) & DESK_ROLES
NURSE_PAGE = REVIEWERS | STATEMENT
PATIENT_PAGE = frozenset(PATIENT_READERS) & frozenset(SESSION_READERS) & DESK_ROLES
WINDOWS = (7, 30, 90)
PERIODS = [(str(days), f"Last {days} days") for days in WINDOWS]
PAGE_SIZE = 50
OPEN = ("open", "in_review")
FLAGS_SHOWN = 10
# Visits with a session to read: the nurse has checked in.
SESSIONS = (VisitStatus.CHECKED_IN, VisitStatus.COMPLETED)


class WindowSchema(ma.Schema):
    """How far back a nurse's figures and her peers' are taken."""

    class Meta:
        unknown = ma.EXCLUDE

    days = ma.fields.Integer(load_default=30, validate=ma.validate.OneOf(WINDOWS))


class PageSchema(ma.Schema):
    """Which page of a list."""

    class Meta:
        unknown = ma.EXCLUDE

    limit = ma.fields.Integer(load_default=PAGE_SIZE, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 2**53))


@dataclass(frozen=True)
class Metric:
    """One of the peer rules' per-nurse figures, and how the page shows it."""

    chart_id: str
    title: str
    name: str
    unit: str
    figure: Callable[[NurseActivity], Fraction | None]
    scale: Fraction

    def of(self, activity: NurseActivity | None) -> Fraction | None:
        """Return the nurse's figure in the page's unit, or None without one."""
        value = activity and self.figure(activity)
        return None if value is None else value * self.scale


METRICS = (
    Metric("waste-per-visit", "Waste per visit against her peers", "waste per visit", "mg",
           lambda a: a.wasted_ug_per_visit, Fraction(1, 1000)),
    # What the waste and dosing peer rules score: waste against what her doses' plans left in
    # their containers (about 100% when honest, whatever her patients weigh), and each dose
    # against its own plan, so one prescriber's high plans never set her apart.
    Metric("waste-share", "Waste against what the plans left in the containers, against her "
           "peers", "waste as a share of what the plans left", "%",
           lambda a: a.waste_of_remainder, Fraction(100)),
    Metric("dose-against-plan", "Doses against their own plans, against her peers",
           "dose as a share of its plan", "%", lambda a: a.plan_ratio, Fraction(100)),
    Metric("visits-per-day", "Visits per day worked against her peers",
           "visits per day worked", "", lambda a: a.visits_per_day_worked, Fraction(1)),
)


def milligrams(micrograms: int | Decimal | None) -> Decimal | None:
    """Return micrograms as exact milligrams (µg per kg as mg per kg), None as None."""
    return None if micrograms is None else custody_reports.milligrams(micrograms)


def shown(value: Decimal | Fraction | None) -> str:
    """Return an exact amount in plain digits without trailing zeros, or a dash for none."""
    if value is None:
        return "—"
    if isinstance(value, Fraction):
        return charts.spoken(value)
    return format(value.normalize(), "f")


def _loaded(schema: ma.Schema) -> tuple[dict, FormRefused | None]:
    """Read the query through `schema`; on a refusal, its defaults and the refusal."""
    try:
        return load(schema, form_values(request.args)), None
    except FormRefused as refused:
        return schema.load({}), refused


def _people(session) -> dict[str, User]:
    return {str(user.id): user for user in accounts.list_users(session, caller())}


# Nurses


@blp.get("/nurses")
@page(*NURSE_PAGE, menu=("Review", "Nurses"))
def nurse_list():
    """List the organisation's nurses; reviewers see each one's figures over the last 30 days."""
    session, rt = db.session(), runtime()
    query, refused = _loaded(PageSchema())
    nurses = accounts.list_nurses(session, caller(), limit=query["limit"],
                                  offset=query["offset"])
    activity = {}
    if caller().role in REVIEWERS:
        now = rt.clock.now()
        activity = {a.nurse_id: a for a in loaders.nurse_activity(
            session, caller().organisation_id, now - timedelta(days=30), now)}
    return render("console/nurses.html", status=refused.status if refused else 200,
                  refused=refused, nurses=nurses, activity=activity, metrics=METRICS, shown=shown,
                  reviewer=caller().role in REVIEWERS,
                  pages=pager("console.nurse_list", query["offset"], query["limit"],
                              len(nurses) == query["limit"], request.args))


@dataclass(frozen=True)
class PeerChart:
    """One figure of hers drawn against her peers'."""

    metric: Metric
    her: Fraction | None
    peers: list[Fraction]
    svg: Markup


def _peer_charts(nurse: User, activity: list[NurseActivity]) -> list[PeerChart]:
    hers = next((a for a in activity if a.nurse_id == str(nurse.id)), None)
    others = [a for a in activity if a.nurse_id != str(nurse.id)]
    found = []
    for metric in METRICS:
        peers = [value for a in others if (value := metric.of(a)) is not None]
        her = metric.of(hers)
        found.append(PeerChart(metric, her, peers, charts.peer_distribution_chart(
            metric.chart_id, metric.title, metric.name, metric.unit, peers, her,
            her_label=nurse.display_name)))
    return found


def _witnessing(nurse: User, pairs: list[WitnessPair]) -> dict[str, list[WitnessPair]]:
    mine = str(nurse.id)
    return {"by": sorted((p for p in pairs if p.nurse_id == mine), key=lambda p: -p.together),
            "for": sorted((p for p in pairs if p.witness_id == mine), key=lambda p: -p.together)}


def _review(nurse: User, since: datetime, now: datetime) -> dict:
    """Return a reviewer's sections: her open flags, her figures against peers, witnesses."""
    session, organisation_id = db.session(), caller().organisation_id
    activity = loaders.nurse_activity(session, organisation_id, since, now)
    return {
        "flags": flags.listing(session, caller(), flags.FlagFilter(
            nurse=nurse.id, status=OPEN, limit=FLAGS_SHOWN)),
        "activity": next((a for a in activity if a.nurse_id == str(nurse.id)), None),
        "peer_charts": _peer_charts(nurse, activity),
        "witnessing": _witnessing(nurse, loaders.witness_pairs(session, organisation_id,
                                                               since, now)),
        "people": _people(session)}


@blp.get("/nurses/<nurse_id>")
@page(*NURSE_PAGE)
def nurse_page(nurse_id: str):
    """Show a nurse: her flags, her figures against her peers', witnesses, her bag."""
    session, rt, role = db.session(), runtime(), caller().role
    nurse = shifts.nurse_of(session, caller(), _id(nurse_id, "nurse"))
    window, refused = _loaded(WindowSchema())
    now = rt.clock.now()
    since = now - timedelta(days=window["days"])
    sections = _review(nurse, since, now) if role in REVIEWERS else {}
    statement = (shifts.bag_statement(session, rt, caller(), nurse.id, since, now)
                 if role in STATEMENT else None)
    return render("console/nurse.html", status=refused.status if refused else 200,
                  refused=refused, values={"days": window["days"]}, windows=PERIODS,
                  nurse=nurse, since=since, now=now, reviewer=role in REVIEWERS,
                  statement=statement, mg=milligrams, shown=shown, **sections)


def _id(raw: str, what: str) -> uuid.UUID:
    found = object_id(raw)
    if found is None:
        raise NotFound(f"No such {what}.")
    return found


# Patients


@blp.get("/patients")
@page(*PATIENT_PAGE, menu=("Review", "Patients"))
def patient_list():
    """List a page of the patients (or the one with an MRN); each one listed is an audited read."""
    session, rt = db.session(), runtime()
    query, refused = _loaded(PageSchema())
    values: dict = {}
    mrn = None
    try:
        values = form_values(request.args)
        mrn = load(PatientQuerySchema(), {"mrn": values["mrn"]} if "mrn" in values else {}
                   ).get("mrn")
    except FormRefused as problem:
        refused = problem
    found = patients.search(session, rt, caller(), mrn, limit=query["limit"],
                            offset=query["offset"])
    return render("console/patients.html", status=refused.status if refused else 200,
                  refused=refused, values=values, patients=found,
                  pages=pager("console.patient_list", query["offset"], query["limit"],
                              len(found) == query["limit"], request.args), mrn=mrn)


def _dose_charts(path: reports.Trajectory, version: PlanVersion | None) -> list[Markup]:
    given = [(d.occurred_at, milligrams(d.quantity_ug)) for d in path.doses]
    per_kg = [(d.occurred_at, milligrams(d.ug_per_kg)) for d in path.doses]
    return [
        charts.time_series_chart("doses-mg", "Doses in mg", [charts.Series("Dose", given)],
                                 unit="mg", references=_references(version, "dose_ug")),
        charts.time_series_chart("doses-mg-per-kg", "Doses in mg/kg",
                                 [charts.Series("Dose per kg", per_kg)], unit="mg/kg",
                                 references=_references(version, "dose_ug_per_kg"))]


def _references(version: PlanVersion | None, field: str) -> list[charts.Reference]:
    """Return the plan's dose lines for `field` (the plan's own, then each phase's that differs),
    and for mg, the plan's maximum dose."""
    if version is None:
        return []
    found: list[charts.Reference] = []
    if getattr(version, field) is not None:
        found.append(charts.Reference("Plan dose", milligrams(getattr(version, field))))
    for phase in version.phases:
        dose = getattr(phase, field)
        if dose is not None and dose != getattr(version, field):
            found.append(charts.Reference(f"{phase.name} dose", milligrams(dose)))
    if field == "dose_ug":
        found.append(charts.Reference("Maximum dose", milligrams(version.max_dose_ug), "limit"))
    return found


def _score_chart(path: reports.Trajectory) -> Markup:
    by_instrument: dict[str, list] = {}
    for score in path.scores:
        by_instrument.setdefault(score.instrument, []).append((score.occurred_at, score.total))
    return charts.time_series_chart(
        "scores", "PHQ-9 and MADRS scores",
        [charts.Series(_instrument(name), points) for name, points in by_instrument.items()],
        unit="points")


def _instrument(name: str) -> str:
    return OUTCOMES[name].name if name in OUTCOMES else name


@blp.get("/patients/<patient_id>")
@page(*PATIENT_PAGE)
def patient_page(patient_id: str):
    """Show a patient: doses against the plan, scores, visits against the phase limits."""
    session, rt = db.session(), runtime()
    patient = patients.read(session, rt, caller(), _id(patient_id, "patient"))
    path = reports.trajectory(session, rt, caller(), patient.id)
    version = plans.active_version(session, patient.id)
    booked = visits.listing(session, caller(), visits.VisitFilter(patient_id=patient.id))
    # Every version of the plan in force, each with its signature checked against its content.
    history = [(older, signing.verify(older.plan, older))
               for older in (version.plan.versions if version else [])]
    return render("console/patient.html", patient=patient, trajectory=path, version=version,
                  history=history, dose_charts=_dose_charts(path, version),
                  score_chart=_score_chart(path),
                  visits=booked, standings=visits.frequency_standings(session, caller(), booked),
                  sessions=SESSIONS, people=_people(session), mg=milligrams, shown=shown,
                  instrument=_instrument, reviewer=caller().role in REVIEWERS,
                  nurse_links=caller().role in NURSE_PAGE)


@blp.get("/visits/<visit_id>/monitoring-record")
@page(*PATIENT_PAGE)
def monitoring_record(visit_id: str):
    """Show a session's REMS monitoring form, laid out to print; an audited PHI read."""
    record = reports.monitoring_record(db.session(), runtime(), caller(),
                                       _id(visit_id, "visit"))
    return render("console/patient_monitoring.html", record=record)


@blp.get("/visits/<visit_id>/monitoring-record.csv")
@page(*PATIENT_PAGE)
def monitoring_record_csv(visit_id: str) -> Response:
    """Download a session's REMS monitoring form as the API's CSV; an audited PHI read."""
    record = reports.monitoring_record(db.session(), runtime(), caller(),
                                       _id(visit_id, "visit"))
    return Response(reports.monitoring_csv([record]), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="monitoring-{record.visit_id}.csv"'})

