"""Measure scheduling a 6-month visit series and fetching a nurse's week at issue 3's size.

Seeds 200 nurses, 2,000 patients with weekly plans and 100,000 visits over a year, then times
POST /api/v1/plans/<id>/visits (26 weekly visits, each run a fresh patient of another nurse)
and GET /api/v1/visits?nurse=me for one week of a random nurse. Runs on a temporary SQLite
file, or on the PostgreSQL database in BENCH_DATABASE_URL, whose public schema is dropped and
recreated first. Usage: python bench/schedule.py [--runs 20] [--requests 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from backend.accounts import service as accounts
from backend.accounts.models import Role, User
from backend.auth.caller import Caller, FactorUse
from backend.patients import service as patients
from backend.patients.models import Patient, PatientNurse
from backend.plans import service as plans
from backend.plans.models import PlanPhase, PlanVersion, TreatmentPlan
from backend.products import service as products
from backend.runtime import Runtime
from backend.visits.models import Visit, VisitStatus
from database import describe, migrated_app
from latency import machine, print_table, timed
from safeguards.policy import Policy

ORG = "bench"
PASSWORD = "a bench password long enough"
# UTC, not a DST zone: across the spring change a weekly series is 167 h apart, and the
# 1-in-7-days maintenance limit refuses it (a scheduling bug, reported separately).
TIMEZONE = "UTC"
# 200 nurses x 10 patients x 50 weekly visits: 2,000 patients, 100,000 visits, 500 per nurse.
NURSES, PATIENTS_PER_NURSE = 200, 10
WEEKS = range(-26, 24)
SERIES_LENGTH = 26
SERIES_RULE = f"FREQ=WEEKLY;COUNT={SERIES_LENGTH}"
SERIES = f"POST /plans/<id>/visits ({SERIES_LENGTH} weekly)"
WEEK = "GET /visits?nurse=me, one week"
BATCH = 5_000
# The seeded logins only open sessions: this benchmark measures scheduling, not argon2id.
CHEAP_ARGON2 = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024, "ARGON2_PARALLELISM": 1}
# Maintenance limits: a weekly series is allowed however long it runs.
WEEKLY_PHASE = {"min_interval_hours": 48, "max_per_7_days": 1, "max_per_28_days": 4}
PAST_STATUSES = (VisitStatus.COMPLETED, VisitStatus.MISSED, VisitStatus.CANCELLED)
PAST_WEIGHTS = (92, 4, 4)


def parse_args() -> argparse.Namespace:
    """Read how many series and week fetches to time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20,
                        help=f"{SERIES_LENGTH}-visit series to schedule, one nurse each")
    parser.add_argument("--requests", type=int, default=200,
                        help="GET /api/v1/visits?nurse=me week fetches to time")
    args = parser.parse_args()
    if min(args.runs, args.requests) < 2:
        parser.error("percentiles need at least 2 samples")
    if args.runs >= NURSES:
        parser.error(f"one nurse per run plus a warm-up: --runs must be below {NURSES}")
    return args


@dataclass(frozen=True)
class Staff:
    """The seeded organisation's admin and prescriber, its nurses and its home-safe product."""

    admin: Caller
    prescriber: Caller
    nurses: list[User]
    product_id: uuid.UUID


@dataclass(frozen=True)
class Assignment:
    """A patient's plan version and weekly slot (0-4 mornings, 5-9 afternoons) with a nurse."""

    nurse_id: uuid.UUID
    patient_id: uuid.UUID
    version_id: uuid.UUID
    slot: int


def as_caller(user: User) -> Caller:
    """Return `user` as a caller outside any request: no session, device or address."""
    # The seed writes plans and moves stock as its people; no one proved a second factor.
    return Caller(user.id, user.organisation_id, user.role, None, None, None,
                  FactorUse.standing("bench"))


def add_staff(session: Session, rt: Runtime) -> Staff:
    """Create the organisation, its admin, prescriber, pharmacist and nurses, and a product."""
    org = accounts.create_organisation(session, rt, slug=ORG, name="Bench Pharmacy",
                                       dea_registration="FV1234563", timezone=TIMEZONE)

    def user(role: Role, username: str) -> User:
        return accounts.create_user(session, rt, None, organisation_id=org.id,
                                    username=username, display_name=username, role=role,
                                    password=PASSWORD)

    admin, prescriber, pharmacist = (user(role, role.value)
                                     for role in (Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST))
    nurses = [user(Role.NURSE, f"nurse{number:03d}") for number in range(NURSES)]
    product = products.add(
        session, rt, as_caller(pharmacist), name="Ketamine HCl 50 mg/mL, 10 mL vial",
        active_ingredient="ketamine", dea_schedule="III", form="vial", ug_per_unit=50_000,
        units_per_container=Decimal(10), allowed_routes=["IV", "IM"],
        home_administration_allowed=True)
    return Staff(as_caller(admin), as_caller(prescriber), nurses, product.id)


def admit(session: Session, rt: Runtime, staff: Staff, nurse: User, number: int,
          starts_on: date) -> TreatmentPlan:
    """Register patient `number` with `nurse` and write a weekly IV plan from `starts_on`."""
    patient = patients.register(
        session, rt, staff.admin, mrn=f"BENCH-{number:05d}", name=f"Bench Patient {number}",
        date_of_birth=date(1960, 1, 1) + timedelta(days=number), nurse_ids=[nurse.id],
        patient_id=None, address=f"{number} Bench Street", phone="+1 312 555 0100")
    spec = plans.PlanSpec(
        product_id=staff.product_id, route="IV", dose_ug_per_kg=500, max_dose_ug=70_000,
        infusion_minutes=40, starts_on=starts_on,
        phases=[plans.PhaseSpec(name="maintenance", starts_on=starts_on, **WEEKLY_PHASE)])
    return plans.create(session, rt, staff.prescriber, patient.id, spec)


def admit_caseloads(session: Session, rt: Runtime, staff: Staff,
                    starts_on: date) -> list[Assignment]:
    """Admit every nurse's patients, one weekly slot each, committing nurse by nurse."""
    assignments = []
    for n, nurse in enumerate(staff.nurses):
        for slot in range(PATIENTS_PER_NURSE):
            plan = admit(session, rt, staff, nurse, n * PATIENTS_PER_NURSE + slot, starts_on)
            version = plans.active_version(session, plan.patient_id)
            assignments.append(Assignment(nurse.id, plan.patient_id, version.id, slot))
        session.commit()
    return assignments


def weekly_visits(staff: Staff, assignment: Assignment, first_monday: date, now: datetime,
                  rng: random.Random) -> list[dict]:
    """Return one patient's visit rows, one a week in its slot; past ones mostly completed."""
    timezone, series_id = ZoneInfo(TIMEZONE), uuid.uuid4()
    length = timedelta(minutes=int(Policy().value("visit_minutes")))
    hour = 9 if assignment.slot < 5 else 13
    rows = []
    for week in range(len(WEEKS)):
        day = first_monday + timedelta(weeks=week, days=assignment.slot % 5)
        start = datetime(day.year, day.month, day.day, hour, tzinfo=timezone).astimezone(UTC)
        status = (VisitStatus.SCHEDULED if start > now
                  else rng.choices(PAST_STATUSES, PAST_WEIGHTS)[0])
        done = status == VisitStatus.COMPLETED
        rows.append({
            "organisation_id": staff.admin.organisation_id, "patient_id": assignment.patient_id,
            "nurse_id": assignment.nurse_id, "plan_version_id": assignment.version_id,
            "phase_ordinal": 0, "scheduled_start": start, "scheduled_end": start + length,
            "status": status, "series_id": series_id,
            "checked_in_at": start if done else None,
            "checked_out_at": start + length if done else None,
            "created_at": now, "created_by_id": staff.admin.user_id, "updated_at": now})
    return rows


def insert_visits(app: Flask, staff: Staff, assignments: list[Assignment],
                  first_monday: date) -> None:
    """Bulk-insert a year of weekly visits for every assignment, in batches; then analyse."""
    now, rng = app.extensions["vigil.runtime"].clock.now(), random.Random(3)
    rows = [row for assignment in assignments
            for row in weekly_visits(staff, assignment, first_monday, now, rng)]
    with app.extensions["vigil.db"].engine.begin() as conn:
        for offset in range(0, len(rows), BATCH):
            conn.execute(insert(Visit.__table__), rows[offset:offset + BATCH])
        # Statistics, as autovacuum gathers after a load this size: without them PostgreSQL
        # answers the week fetch through ix_visit_organisation_id, all 100,000 rows.
        conn.execute(text("ANALYZE"))


def this_monday(app: Flask) -> date:
    """Return the Monday of the current week in the organisation's timezone."""
    today = app.extensions["vigil.runtime"].clock.now().astimezone(ZoneInfo(TIMEZONE)).date()
    return today - timedelta(days=today.weekday())


def seed(app: Flask, series: int) -> tuple[Staff, list[TreatmentPlan], dict[str, float]]:
    """Seed caseloads, their visits and `series` fresh patients, the n-th with the n-th nurse.

    Return the staff, the fresh patients' plans and the seconds each part of the seed took.
    """
    rt, monday = app.extensions["vigil.runtime"], this_monday(app)
    first_monday = monday + timedelta(weeks=WEEKS.start)
    seconds = {}
    start = time.perf_counter()
    with app.extensions["vigil.db"].sessions() as session:
        staff = add_staff(session, rt)
        assignments = admit_caseloads(session, rt, staff, first_monday)
        fresh = [admit(session, rt, staff, staff.nurses[run], NURSES * PATIENTS_PER_NURSE + run,
                       monday) for run in range(series)]
        session.commit()
    seconds["services"] = time.perf_counter() - start
    start = time.perf_counter()
    insert_visits(app, staff, assignments, first_monday)
    seconds["visits"] = time.perf_counter() - start
    return staff, fresh, seconds


def row_counts(app: Flask) -> str:
    """Count the rows of the tables the measured requests read."""
    models = (User, Patient, PatientNurse, TreatmentPlan, PlanVersion, PlanPhase, Visit)
    with app.extensions["vigil.db"].sessions() as session:
        return ", ".join(
            f"{model.__tablename__} {session.scalar(select(func.count()).select_from(model)):,}"
            for model in models)


def login(client: FlaskClient, username: str) -> dict[str, str]:
    """Sign `username` in and return the bearer header."""
    response = client.post("/api/v1/auth/login",
                           json={"org": ORG, "username": username, "password": PASSWORD})
    if response.status_code != 200:
        raise RuntimeError(f"login answered {response.status_code}: {response.json}")
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def schedule_series(client: FlaskClient, headers: dict[str, str], plan: TreatmentPlan,
                    nurse: User, first_start: datetime) -> None:
    """Schedule the weekly series under `plan` for `nurse`; every visit must be accepted."""
    response = client.post(f"/api/v1/plans/{plan.id}/visits", headers=headers, json={
        "nurse_id": str(nurse.id), "first_start": first_start.isoformat(),
        "rrule": SERIES_RULE})
    if response.status_code != 201 or len(response.json) != SERIES_LENGTH:
        raise RuntimeError(f"series answered {response.status_code}: {response.json}")


def fetch_week(client: FlaskClient, headers: dict[str, str], monday: date) -> int:
    """Fetch the caller's visits in the week from `monday` (local time); return how many."""
    since = datetime(monday.year, monday.month, monday.day, tzinfo=ZoneInfo(TIMEZONE))
    response = client.get("/api/v1/visits", headers=headers, query_string={
        "nurse": "me", "from": since.isoformat(),
        "to": (since + timedelta(weeks=1)).isoformat()})
    if response.status_code != 200:
        raise RuntimeError(f"week answered {response.status_code}: {response.json}")
    return len(response.json)


def measure_series(app: Flask, staff: Staff, fresh: list[TreatmentPlan]) -> list[float]:
    """Time one series per fresh plan, on Saturdays the nurse's caseload leaves free."""
    client = app.test_client()
    headers = login(client, Role.PRESCRIBER.value)
    saturday = this_monday(app) + timedelta(days=12)
    first_start = datetime(saturday.year, saturday.month, saturday.day, 10,
                           tzinfo=ZoneInfo(TIMEZONE))
    pending = iter(zip(fresh, staff.nurses, strict=False))
    # Untimed: the first series warms the caches.
    schedule_series(client, headers, *next(pending), first_start)
    return timed(lambda: schedule_series(client, headers, *next(pending), first_start),
                 len(fresh) - 1)


def measure_weeks(app: Flask, staff: Staff, requests: int) -> tuple[list[float], list[int]]:
    """Time week fetches by random nurses over random seeded weeks; return the rows too."""
    client, rng = app.test_client(), random.Random(7)
    tokens = [login(client, nurse.username) for nurse in staff.nurses]
    first_monday = this_monday(app) + timedelta(weeks=WEEKS.start)
    rows: list[int] = []

    def fetch() -> None:
        week = first_monday + timedelta(weeks=rng.randrange(len(WEEKS)))
        rows.append(fetch_week(client, rng.choice(tokens), week))

    fetch_week(client, tokens[0], first_monday)
    return timed(fetch, requests), rows


def main() -> None:
    """Seed a fresh database, time the series and the week fetches, and print the figures."""
    args = parse_args()
    with migrated_app(CHEAP_ARGON2) as app:
        staff, fresh, seconds = seed(app, args.runs + 1)
        print(f"database  {describe(app.extensions['vigil.db'].engine)}")
        print(f"seed      {seconds['services']:.1f} s through the services (users, patients, "
              f"plans); {seconds['visits']:.1f} s bulk-inserting visits in batches of {BATCH:,} "
              "and analysing")
        print(f"rows      {row_counts(app)}")
        print(f"machine   {machine()}")
        series = measure_series(app, staff, fresh)
        weeks, rows = measure_weeks(app, staff, args.requests)
        visits_per_s = SERIES_LENGTH * len(series) / (sum(series) / 1000)
        print_table({SERIES: series, WEEK: weeks}, {
            SERIES: f"{visits_per_s:.0f} visits/s",
            WEEK: f"rows {statistics.mean(rows):.1f} mean, {min(rows)}-{max(rows)}"})


if __name__ == "__main__":
    main()
