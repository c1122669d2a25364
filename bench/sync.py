"""Measure WatermelonDB sync: signed pushes, and nurses' pulls from 1,000,000 synced rows.

Seeds one organisation as bench/scan.py does: 200 nurses with registered phones (real Ed25519
keys) and 5,000 patients, 25 per nurse, with PHI, weights and weekly plans, through the
services; then --weeks of weekly sessions bulk-loaded with COPY (visits, EVV check-in and
check-out, the signed dose, custody administer and witnessed waste, daily dispense and return),
and --observations observations after each dose, signed by the nurse's phone. The change index
`sync_row` is filled as `backend/sync/sequence.py` would have numbered those rows: one
INSERT ... SELECT over every table, numbered in the order the server received the rows, with
the organisation's counter at the last number; then ANALYZE.

Push: --pushes nurses (and one more, untimed, to warm up) check in through the services to a
visit for each of their 25 patients; each then pushes --records signed observations spread over
those visits in one POST /api/v1/sync with its own Idempotency-Key, through the Flask test
client (no network). Pull: after a cursor, every nurse gets two visits scheduled and one of them
rescheduled through the services; --pulls incremental pulls from that cursor by random nurses
are timed, then one nurse's first pull from 0 in pages of --page. --profile pushes once more
under cProfile and prints its SQL statements by kind and its costliest functions. Then
--phones more nurses (default 4, as the README's `gunicorn -w 4`) push at once over HTTP to as
many gunicorn workers, as phones do to a production server, and the machine's throughput in
all is printed. Needs
PostgreSQL in BENCH_DATABASE_URL (its name must contain "bench"; its public schema is dropped
first); without it, says so and stops.
Usage: python bench/sync.py [--weeks 14] [--observations 8] [--pushes 20] [--records 500]
[--phones 4] [--pulls 200] [--page 1000] [--workers 2] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import http.client
import io
import json
import multiprocessing
import os
import pstats
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    String,
    Uuid,
    case,
    cast,
    event,
    false,
    func,
    insert,
    literal,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import scan
from backend.accounts.models import Role, User
from backend.administration.instruments import CADSS
from backend.administration.models import Observation
from backend.auth.caller import Caller, FactorUse
from backend.custody.models import CustodyEntry
from backend.devices.signatures import canonical_bytes
from backend.sync.models import SyncCounter, SyncRow
from backend.sync.pull import counter
from backend.sync.tables import (
    CUSTODY_ENTRIES,
    DISCHARGES,
    DOSES,
    EVV_EVENTS,
    OBSERVATIONS,
    OUTCOME_SCORES,
    PRE_DOSES,
    SCHEMA_VERSION,
    VISITS,
    SyncTable,
)
from backend.visits import evv
from backend.visits import service as visits
from backend.visits.models import Visit
from database import describe, migrated_app
from latency import machine, print_table
from machine import describe as describe_machine
from schedule import CHEAP_ARGON2, PASSWORD

# Signed events per second: one phone at a time, and the machine with four phones at once.
PHONE_TARGET_PER_S, MACHINE_TARGET_PER_S, PULL_TARGET_MS = 3_000, 6_000, 50
# Verifies timed for the Ed25519 ceiling, on each thread.
CEILING_VERIFIES = 4_000
SYNC = "/api/v1/sync"
# Observations every 15 minutes from the end of the infusion, scored on the short CADSS.
OBSERVE_EVERY = timedelta(minutes=15)
CADSS_SHORT = (1, 2, 6, 7, 15, 22)
VITALS = ("systolic", "diastolic", "heart_rate", "spo2", "respiratory_rate", "moaas")
OBSERVATION_COLUMNS = ("id", "organisation_id", "visit_id", "nurse_id", "device_id",
                       "device_signature", "signed_body", "occurred_at", "received_at", *VITALS,
                       "cadss_items", "cadss_total", "bprs_items", "bprs_total", "client_totals")
# Visits scheduled now must keep the weekly plan's limits against last week's sessions (a week
# out for the pushers' check-ins, three weeks out for the fresh changes), and be a visit's
# length and travel apart for one nurse.
PUSH_DAYS_AHEAD, FRESH_DAYS_AHEAD, VISIT_SPACING = 7, 21, timedelta(hours=4)
# Tables whose records come signed from a phone within a visit, seen by the patient's nurses.
SIGNED_TABLES = (EVV_EVENTS, PRE_DOSES, DOSES, OBSERVATIONS, DISCHARGES, OUTCOME_SCORES)
CHANGE_COLUMNS = ("record_id", "organisation_id", "patient_id", "nurse_id", "peer_nurse_id",
                  "changed_at")
STATEMENT_TARGET = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def parse_args() -> argparse.Namespace:
    """Read the size of the organisation, of the pushes and pulls, and whether to profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=14,
                        help="weeks of weekly sessions per patient, up to yesterday")
    parser.add_argument("--nurses", type=int, default=200,
                        help=f"nurses, each with {scan.PATIENTS_PER_NURSE} patients")
    parser.add_argument("--observations", type=int, default=8,
                        help="signed observations after each seeded dose")
    parser.add_argument("--pushes", type=int, default=20, help="pushes to time, one per nurse")
    parser.add_argument("--records", type=int, default=500, help="observations per push")
    # gunicorn's advice is 2 x cores + 1 workers; the README serves with -w 4.
    parser.add_argument("--phones", type=int, default=4,
                        help="phones pushing at once to as many gunicorn workers (1: none)")
    parser.add_argument("--pulls", type=int, default=200, help="incremental pulls to time")
    parser.add_argument("--page", type=int, default=1000, help="page size of the first pull")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes generating and signing the sessions")
    parser.add_argument("--profile", action="store_true",
                        help="profile one more push: its SQL statements and costliest functions")
    args = parser.parse_args()
    if args.nurses <= max(scan.LATE_WASTER, args.pushes + 2):
        parser.error(f"scan.py's injected misuse needs {scan.LATE_WASTER + 1} nurses, and each "
                     "push, the warm-up and the profiled push a nurse of their own")
    if min(args.pushes, args.pulls) < 2:
        parser.error("percentiles need at least 2 samples")
    return args


# --- seeding -------------------------------------------------------------------------------


def observation(rng: random.Random, visit_id: str, occurred_at: datetime) -> dict:
    """Return an unsigned observation as WatermelonDB holds it: every column, JSON as text."""
    items = {str(number): rng.randint(0, 2) for number in CADSS_SHORT}
    values = {"visit_id": visit_id, "occurred_at": occurred_at.isoformat(),
              "systolic": rng.randint(110, 150), "diastolic": rng.randint(60, 95),
              "heart_rate": rng.randint(58, 100), "spo2": rng.randint(94, 100),
              "respiratory_rate": rng.randint(12, 20), "moaas": rng.randint(4, 5),
              "cadss_items": json.dumps(items, sort_keys=True, separators=(",", ":"))}
    return {"id": scan.random_id(rng), **{column.name: values.get(column.name)
                                          for column in OBSERVATIONS.columns
                                          if column.name != "signature"}}


def stored_observation(nurse: int, record: dict, received_at: datetime) -> tuple:
    """Return the row the push would store for `record`, signed by the nurse's phone."""
    clinic, seat = scan.CLINIC, scan.CLINIC.seats[nurse]
    return (record["id"], clinic.organisation_id, record["visit_id"], seat.id, seat.device_id,
            scan.sign(nurse, record), record, datetime.fromisoformat(record["occurred_at"]),
            received_at, *(record[name] for name in VITALS),
            record["cadss_items"], CADSS.total("cadss_items", json.loads(record["cadss_items"])),
            None, None, "{}")


def store_observations(nurse: int, per_session: int) -> int:
    """Sign and COPY observations after each of the nurse's doses; return how many (worker)."""
    rng = random.Random(scan.SEED * 1_000 + nurse)
    with scan.DATABASE.cursor() as cursor:
        doses = cursor.execute(
            "SELECT visit_id, infusion_ended_at FROM dose_administration WHERE nurse_id = %s",
            (scan.CLINIC.seats[nurse].id,)).fetchall()
        rows = []
        for visit_id, ended in doses:
            for number in range(per_session):
                at = ended + OBSERVE_EVERY * number
                rows.append(stored_observation(nurse, observation(rng, str(visit_id), at),
                                               at + timedelta(seconds=rng.uniform(1, 30))))
        scan.copy_rows(cursor, Observation, OBSERVATION_COLUMNS, rows)
    scan.DATABASE.commit()
    return len(rows)


def load_observations(app: Flask, clinic: scan.Clinic, per_session: int, workers: int) -> int:
    """Store `per_session` observations after every seeded dose; return how many."""
    engine = app.extensions["vigil.db"].engine
    # Forked workers must not inherit pooled connections.
    engine.dispose()
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=scan.adopt, initargs=(clinic, url)) as pool:
        return sum(pool.map(partial(store_observations, per_session=per_session),
                            range(len(clinic.seats))))


def audience(table: SyncTable) -> Select:
    """Return each bulk-loaded record of `table` with who may see it and when it was received.

    The same scoping as the table's `audience` reader: signed records by their visit's patient,
    visits by their patient, custody entries by the nurses whose bag they move.
    """
    nobody = cast(null(), Uuid)
    if table is VISITS:
        columns = (Visit.id, Visit.organisation_id, Visit.patient_id, nobody, nobody,
                   Visit.updated_at)
    elif table is CUSTODY_ENTRIES:
        columns = (CustodyEntry.id, CustodyEntry.organisation_id, nobody,
                   bag_nurse(CustodyEntry.from_holder), bag_nurse(CustodyEntry.to_holder),
                   CustodyEntry.received_at)
    else:
        columns = (table.model.id, Visit.organisation_id, Visit.patient_id, nobody, nobody,
                   table.model.received_at)
    query = select(literal(table.name, String).label("table_name"), *(
        column.label(label) for column, label in zip(columns, CHANGE_COLUMNS, strict=True)))
    if table in SIGNED_TABLES:
        query = query.join(Visit, Visit.id == table.model.visit_id)
    return query


def bag_nurse(holder: ColumnElement[str]) -> ColumnElement[uuid.UUID]:
    """Return the nurse whose bag `holder` names, or NULL, as `tables.bag_nurse` does."""
    return case((holder.startswith("bag:"), cast(func.substr(holder, 5), Uuid)))


def index_changes(session: Session, organisation_id: uuid.UUID) -> int:
    """Number every bulk-loaded record in receipt order after the counter; return how many."""
    base = counter(session, organisation_id)[0]
    changes = union_all(*(audience(table) for table in (VISITS, *SIGNED_TABLES,
                                                         CUSTODY_ENTRIES))).subquery()
    c = changes.c
    seq = base + func.row_number().over(order_by=(c.changed_at, c.table_name, c.record_id))
    numbered = select(changes, seq.label("seq")).subquery()
    n = numbered.c
    session.execute(insert(SyncRow).from_select(
        ["table_name", "record_id", "organisation_id", "seq", "created_seq", "deleted",
         "patient_id", "nurse_id", "peer_nurse_id", "changed_at"],
        select(n.table_name, n.record_id, n.organisation_id, n.seq, n.seq, false(),
               n.patient_id, n.nurse_id, n.peer_nurse_id, n.changed_at)))
    top = session.execute(update(SyncCounter).where(
        SyncCounter.organisation_id == organisation_id).values(value=select(
            func.max(SyncRow.seq)).where(SyncRow.organisation_id == organisation_id)
            .scalar_subquery()).returning(SyncCounter.value)).scalar_one()
    return top - base


@dataclass(frozen=True)
class Seeded:
    """The seeded organisation, how many observations were generated, and the seed's times."""

    clinic: scan.Clinic
    observations: int
    indexed: int
    seconds: dict[str, float]
    # The 1-minute load average as the seed began: other work on the machine slows it.
    load_average: float


@contextmanager
def timing(seconds: dict[str, float], part: str) -> Iterator[None]:
    """Add the seconds the block takes to `seconds[part]`."""
    began = time.perf_counter()
    yield
    seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - began


def seed(app: Flask, args: argparse.Namespace) -> Seeded:
    """Seed through the services, bulk-load sessions and observations, index them; time each."""
    seconds: dict[str, float] = {}
    load_average = os.getloadavg()[0]
    with timing(seconds, "services"):
        clinic = scan.seed_services(app, args.nurses, args.weeks)
    with timing(seconds, "sessions"):
        scan.load_sessions(app, clinic, args.workers)
    with timing(seconds, "observations"):
        observations = load_observations(app, clinic, args.observations, args.workers)
    with timing(seconds, "change index"), app.extensions["vigil.db"].sessions() as session:
        indexed = index_changes(session, uuid.UUID(clinic.organisation_id))
        session.commit()
    with timing(seconds, "ANALYZE"), app.extensions["vigil.db"].engine.begin() as conn:
        # Autovacuum is off on the bench server: without statistics the planner guesses.
        conn.execute(text("ANALYZE"))
    return Seeded(clinic, observations, indexed, seconds, load_average)


# --- pushing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pusher:
    """A nurse checked in to a visit at each of her patients' homes."""

    nurse: int
    visit_ids: tuple[str, ...]


def caller(clinic: scan.Clinic, user_id: str, role: Role, device_id: str | None = None) -> Caller:
    """Return a caller of the organisation outside any request, on a phone if `device_id`."""
    return Caller(uuid.UUID(user_id), uuid.UUID(clinic.organisation_id), role, None,
                  uuid.UUID(device_id) if device_id else None, None, FactorUse.standing("bench"))


def check_in(app: Flask, clinic: scan.Clinic, nurses: range) -> list[Pusher]:
    """Schedule a visit a week out for each of the nurses' patients, and check in to each."""
    rt = app.extensions["vigil.runtime"]
    admin = caller(clinic, clinic.admin_id, Role.ADMIN)
    first = datetime.combine(rt.clock.now().date() + timedelta(days=PUSH_DAYS_AHEAD),
                             clock_time(), UTC)
    pushers = []
    with app.app_context(), app.extensions["vigil.db"].sessions() as session:
        for nurse in nurses:
            seat = clinic.seats[nurse]
            phone = caller(clinic, seat.id, Role.NURSE, seat.device_id)
            visit_ids = []
            for slot, home in enumerate(clinic.homes[nurse]):
                visit = visits.schedule(session, rt, admin, visits.VisitRequest(
                    uuid.UUID(home.id), phone.user_id, first + VISIT_SPACING * slot))
                evv.verify_presence(session, rt, phone, visit.id, "check_in", evv.Position(
                    home.latitude, home.longitude, 10, rt.clock.now()))
                visit_ids.append(str(visit.id))
            session.commit()
            pushers.append(Pusher(nurse, tuple(visit_ids)))
    return pushers


def phone_headers(app: Flask, client: FlaskClient, clinic: scan.Clinic,
                  nurses: list[int]) -> dict[int, dict[str, str]]:
    """Log each nurse in on her phone; return her request headers by nurse number."""
    with app.extensions["vigil.db"].sessions() as session:
        names = dict(session.execute(select(User.id, User.username).where(
            User.id.in_([uuid.UUID(clinic.seats[nurse].id) for nurse in nurses]))).all())
    headers = {}
    for nurse in nurses:
        seat = clinic.seats[nurse]
        response = client.post("/api/v1/auth/login", json={
            "org": scan.ORG, "username": names[uuid.UUID(seat.id)], "password": PASSWORD,
            "device_id": seat.device_id})
        if "access_token" not in (response.json or {}):
            raise RuntimeError(f"login answered {response.status_code}: {response.json}")
        headers[nurse] = {"Authorization": f"Bearer {response.json['access_token']}"}
    return headers


def push_body(clinic: scan.Clinic, pusher: Pusher, records: int) -> bytes:
    """Return a push of `records` observations spread over the pusher's visits, each signed."""
    key = Ed25519PrivateKey.from_private_bytes(clinic.seats[pusher.nurse].private_key)
    rng, now = random.Random(pusher.nurse), datetime.now(UTC)
    created = []
    for number in range(records):
        record = observation(rng, pusher.visit_ids[number % len(pusher.visit_ids)],
                             now + timedelta(seconds=number))
        signature = base64.b64encode(key.sign(canonical_bytes(record))).decode()
        created.append({**record, "signature": signature, "_status": "created", "_changed": ""})
    return json.dumps({"changes": {OBSERVATIONS.name: {
        "created": created, "updated": [], "deleted": []}}}).encode()


def timed_push(client: FlaskClient, headers: dict[str, str], body: bytes, cursor: int,
               records: int) -> float:
    """Push `body` under a fresh Idempotency-Key; return the milliseconds it took.

    Raise if any record was not applied: a fast push that quarantines proves nothing.
    """
    began = time.perf_counter()
    response = client.post(SYNC, query_string={"last_pulled_at": cursor,
                                               "schema_version": SCHEMA_VERSION},
                           headers={**headers, "Idempotency-Key": str(uuid.uuid4()),
                                    "X-Device-Time": datetime.now(UTC).isoformat()},
                           data=body, content_type="application/json")
    spent = (time.perf_counter() - began) * 1000
    answer = response.json or {}
    if response.status_code != 200 or answer.get("quarantined") \
            or answer.get("applied", {}).get(OBSERVATIONS.name) != records:
        raise RuntimeError(f"push answered {response.status_code}: {str(answer)[:500]}")
    return spent


@dataclass
class Statements:
    """SQL statements run, by verb and first table, and the seconds spent waiting on each."""

    count: Counter[str]
    seconds: Counter[str]


def statement_kind(statement: str) -> str:
    """Return a statement's verb and the first table it names."""
    verb = statement.split(None, 1)[0].upper()
    target = STATEMENT_TARGET.search(statement)
    return f"{verb} {target.group(1)}" if target and verb != "SAVEPOINT" else verb


@contextmanager
def counted(engine: Engine) -> Iterator[Statements]:
    """Count the statements `engine` runs inside the block, by kind, with their time."""
    statements, started = Statements(Counter(), Counter()), []

    def before(*_args) -> None:
        started.append(time.perf_counter())

    def after(_conn, _cursor, statement: str, *_args) -> None:
        kind = statement_kind(statement)
        statements.count[kind] += 1
        statements.seconds[kind] += time.perf_counter() - started.pop()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


@dataclass(frozen=True)
class Profiled:
    """One push run under cProfile, with the statements it ran."""

    milliseconds: float
    statements: Statements
    profile: cProfile.Profile


@dataclass(frozen=True)
class Served:
    """Pushes from several phones at once to gunicorn workers over HTTP."""

    phones: int
    samples: list[float]
    wall_seconds: float


@dataclass(frozen=True)
class Pushed:
    """The timed pushes, the optional profiled one, and how long preparing them took."""

    samples: list[float]
    profiled: Profiled | None
    prepare_seconds: float
    served: Served | None
    # The app's CPU over the timed pushes, both threads, PostgreSQL's own excluded: a figure a
    # loaded machine disturbs less than the wall clock.
    cpu_seconds: float = 0.0


def profiled_push(app: Flask, client: FlaskClient, headers: dict[str, str], body: bytes,
                  cursor: int, records: int) -> Profiled:
    """Push once under cProfile, counting its statements."""
    profile = cProfile.Profile()
    with counted(app.extensions["vigil.db"].engine) as statements:
        profile.enable()
        spent = timed_push(client, headers, body, cursor, records)
        profile.disable()
    return Profiled(spent, statements, profile)


def free_port() -> int:
    """Return a TCP port on the loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(app: Flask, workers: int) -> Iterator[int]:
    """Serve the bench's database with `workers` gunicorn workers; yield their port."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": app.config["DATABASE_URL"],
           "VIGIL_INSTANCE_PATH": app.instance_path,
           **{f"VIGIL_{name}": str(value) for name, value in CHEAP_ARGON2.items()}}
    server = subprocess.Popen(  # noqa: S603 - our own server, no shell
        [str(Path(sys.executable).with_name("gunicorn")), "-w", str(workers), "-b",
         f"127.0.0.1:{port}", "--log-level", "warning", "backend:create_app()"],
        cwd=Path(__file__).resolve().parents[1], env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("gunicorn did not answer /healthz")
            time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(30)


def http_push(port: int, headers: dict[str, str], body: bytes, cursor: int,
              records: int) -> float:
    """Push `body` over HTTP under a fresh Idempotency-Key; return the milliseconds it took."""
    query = urllib.parse.urlencode({"last_pulled_at": cursor, "schema_version": SCHEMA_VERSION})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    began = time.perf_counter()
    connection.request("POST", f"{SYNC}?{query}", body=body, headers={
        **headers, "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4()),
        "X-Device-Time": datetime.now(UTC).isoformat()})
    response = connection.getresponse()
    answer = json.loads(response.read())
    spent = (time.perf_counter() - began) * 1000
    connection.close()
    applied = answer.get("applied", {}).get(OBSERVATIONS.name)
    if response.status != 200 or answer.get("quarantined") or applied != records:
        raise RuntimeError(f"push answered: {str(answer)[:500]}")
    return spent


def serve_pushes(app: Flask, phones: int, pushes: list[tuple[dict[str, str], bytes]],
                 cursor: int, records: int) -> Served:
    """Push from `phones` phones at once, each its share in turn, to as many workers.

    The first `phones` pushes go at once untimed, so that every worker has served one.
    """
    with gunicorn(app, phones) as port:
        def phone(share: list[tuple[dict[str, str], bytes]],
                  start: threading.Barrier) -> list[float]:
            start.wait()
            return [http_push(port, headers, body, cursor, records) for headers, body in share]

        def at_once(shares: list[list[tuple[dict[str, str], bytes]]]) -> tuple[list, float]:
            start = threading.Barrier(phones + 1)
            with ThreadPoolExecutor(phones) as pool:
                running = [pool.submit(phone, share, start) for share in shares]
                start.wait()
                began = time.perf_counter()
                samples = [ms for done in running for ms in done.result()]
                return samples, time.perf_counter() - began

        at_once([[push] for push in pushes[:phones]])
        samples, wall = at_once([pushes[phones + i::phones] for i in range(phones)])
    return Served(phones, samples, wall)


def measure_pushes(app: Flask, clinic: scan.Clinic, args: argparse.Namespace) -> Pushed:
    """Check the pushers in, push once to warm up, then time one push per nurse.

    Then, with --phones above 1, as many more nurses push at once to that many gunicorn
    workers, as phones do to a production server.
    """
    began = time.perf_counter()
    served_pushes = args.pushes + args.phones if args.phones > 1 else 0
    pushers = check_in(app, clinic, range(args.pushes + 1 + args.profile + served_pushes))
    client = app.test_client()
    headers = phone_headers(app, client, clinic, [pusher.nurse for pusher in pushers])
    bodies = [push_body(clinic, pusher, args.records) for pusher in pushers]
    with app.extensions["vigil.db"].sessions() as session:
        cursor = counter(session, uuid.UUID(clinic.organisation_id))[0]
    prepared = time.perf_counter() - began
    timed_push(client, headers[pushers[0].nurse], bodies[0], cursor, args.records)
    cpu_began = time.process_time()
    samples = [timed_push(client, headers[pusher.nurse], body, cursor, args.records)
               for pusher, body in zip(pushers[1:args.pushes + 1], bodies[1:args.pushes + 1],
                                       strict=True)]
    cpu_seconds = time.process_time() - cpu_began
    profiled = (profiled_push(app, client, headers[pushers[args.pushes + 1].nurse],
                              bodies[args.pushes + 1], cursor, args.records)
                if args.profile else None)
    served = None
    if served_pushes:
        rest = range(len(pushers) - served_pushes, len(pushers))
        served = serve_pushes(app, args.phones, [(headers[pushers[i].nurse], bodies[i])
                                                 for i in rest], cursor, args.records)
    return Pushed(samples, profiled, prepared, served, cpu_seconds)


# --- pulling -------------------------------------------------------------------------------


def fresh_changes(app: Flask, clinic: scan.Clinic) -> int:
    """Schedule two visits for every nurse and reschedule one; return the cursor before them.

    Each nurse commits on her own, so her changes are numbered among everyone else's.
    """
    rt = app.extensions["vigil.runtime"]
    admin = caller(clinic, clinic.admin_id, Role.ADMIN)
    first = datetime.combine(rt.clock.now().date() + timedelta(days=FRESH_DAYS_AHEAD),
                             clock_time(8), UTC)
    with app.app_context(), app.extensions["vigil.db"].sessions() as session:
        cursor = counter(session, uuid.UUID(clinic.organisation_id))[0]
        for seat, homes in zip(clinic.seats, clinic.homes, strict=True):
            moved, _kept = [visits.schedule(session, rt, admin, visits.VisitRequest(
                uuid.UUID(home.id), uuid.UUID(seat.id), first + VISIT_SPACING * slot))
                for slot, home in enumerate(homes[:2])]
            visits.reschedule(session, rt, admin, moved.id,
                              scheduled_start=moved.scheduled_start + timedelta(days=1),
                              scheduled_end=None, nurse_id=None, override_reason=None)
            session.commit()
    return cursor


def timed_pull(client: FlaskClient, headers: dict[str, str], cursor: int,
               limit: int | None = None) -> tuple[float, dict]:
    """Pull from `cursor` as the phone would; return the milliseconds it took and the answer."""
    query = {"last_pulled_at": cursor, "schema_version": SCHEMA_VERSION}
    if limit:
        query["limit"] = limit
    began = time.perf_counter()
    response = client.get(SYNC, query_string=query, headers={
        **headers, "X-Device-Time": datetime.now(UTC).isoformat()})
    spent = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"pull answered {response.status_code}: {response.json}")
    return spent, response.json


def record_count(answer: dict) -> int:
    """Count the records a pull returned, created, updated and deleted."""
    return sum(len(records) for table in answer["changes"].values()
               for records in table.values())


@dataclass(frozen=True)
class Pulled:
    """Timed incremental pulls and one first pull, page by page."""

    cursor: int
    changes_since: int
    incremental: list[float]
    records: list[int]
    first_nurse: int
    pages: list[float]
    first_records: int


def first_pull(client: FlaskClient, headers: dict[str, str], page: int) -> tuple[list[float],
                                                                               int]:
    """Pull everything from 0 in pages; return each page's milliseconds and the records."""
    cursor, more, pages, records = 0, True, [], 0
    while more:
        spent, answer = timed_pull(client, headers, cursor, page)
        pages.append(spent)
        records += record_count(answer)
        cursor, more = answer["timestamp"], answer["has_more"]
    return pages, records


def measure_pulls(app: Flask, clinic: scan.Clinic, args: argparse.Namespace) -> Pulled:
    """Make fresh changes, time incremental pulls from before them, then one first pull."""
    cursor = fresh_changes(app, clinic)
    with app.extensions["vigil.db"].sessions() as session:
        since = session.scalar(select(func.count()).select_from(SyncRow).where(
            SyncRow.seq > cursor))
    client = app.test_client()
    headers = phone_headers(app, client, clinic, list(range(len(clinic.seats))))
    rng = random.Random(scan.SEED)
    timed_pull(client, headers[0], cursor)
    incremental, records = [], []
    for _ in range(args.pulls):
        spent, answer = timed_pull(client, headers[rng.randrange(len(headers))], cursor)
        incremental.append(spent)
        records.append(record_count(answer))
    # The last nurse pushed nothing: her first pull holds only the seeded sessions.
    nurse = len(clinic.seats) - 1
    pages, first_records = first_pull(client, headers[nurse], args.page)
    return Pulled(cursor, since, incremental, records, nurse, pages, first_records)


# --- printing ------------------------------------------------------------------------------


def sync_rows(app: Flask) -> str:
    """Describe the change index: rows by table and the counter."""
    with app.extensions["vigil.db"].sessions() as session:
        by_table = session.execute(select(SyncRow.table_name, func.count())
                                   .group_by(SyncRow.table_name)
                                   .order_by(func.count().desc())).all()
        top = session.scalar(select(func.max(SyncCounter.value)))
    total = sum(count for _name, count in by_table)
    return (f"sync_row {total:,} (" + ", ".join(f"{name} {count:,}" for name, count in by_table)
            + f"); counter at {top:,}")


def print_seed(seeded: Seeded, args: argparse.Namespace) -> None:
    """Print how long each part of the seed took."""
    seconds = seeded.seconds
    print(f"seed      {sum(seconds.values()):.0f} s (load average {seeded.load_average:.1f} as "
          f"it began): services {seconds['services']:.0f} s ({args.nurses} nurses and phones, "
          f"{args.nurses * scan.PATIENTS_PER_NURSE:,} patients with PHI, weights and plans, "
          f"numbered by the app); sessions {seconds['sessions']:.0f} s ({args.weeks} weeks, "
          f"COPY from {args.workers} processes); observations {seconds['observations']:.0f} s "
          f"({seeded.observations:,} signed, COPY); change index "
          f"{seconds['change index']:.0f} s (one INSERT ... SELECT of {seeded.indexed:,} rows "
          f"in receipt order); ANALYZE {seconds['ANALYZE']:.0f} s")


def print_figures(pushed: Pushed, pulled: Pulled, args: argparse.Namespace) -> None:
    """Print the push and pull latencies, throughput and targets."""
    events_per_s = args.records * len(pushed.samples) / (sum(pushed.samples) / 1000)
    p95 = statistics.quantiles(pulled.incremental, n=100, method="inclusive")[94]
    print_table({
        f"POST /sync, {args.records} signed observations": pushed.samples,
        "GET /sync, incremental": pulled.incremental},
        {f"POST /sync, {args.records} signed observations": f"{events_per_s:,.0f} events/s"})
    # One phone at a time is one process, verifying on two threads; the machine's target is
    # what its workers serve to phones pushing at once.
    print(f"push      {len(pushed.samples)} pushes by as many nurses one after another, each of "
          f"{args.records} observations over her {scan.PATIENTS_PER_NURSE} checked-in visits: "
          f"{events_per_s:,.0f} events/s for one phone at a time, target ≥ "
          f"{PHONE_TARGET_PER_S:,} ({'met' if events_per_s >= PHONE_TARGET_PER_S else 'missed'});"
          f" {pushed.cpu_seconds * 1e6 / (args.records * len(pushed.samples)):.0f} µs of the "
          f"app's CPU per record; check-ins, logins and signing beforehand "
          f"{pushed.prepare_seconds:.0f} s")
    if pushed.served:
        served = pushed.served
        aggregate = args.records * len(served.samples) / served.wall_seconds
        print(f"served    {len(served.samples)} pushes of {args.records} from {served.phones} "
              f"phones at once over HTTP to gunicorn -w {served.phones}: {aggregate:,.0f} "
              f"events/s in all, p50 {statistics.median(served.samples):.0f} ms, p95 "
              f"{statistics.quantiles(served.samples, n=100, method='inclusive')[94]:.0f} ms "
              f"per push; target ≥ {MACHINE_TARGET_PER_S:,} "
              f"({'met' if aggregate >= MACHINE_TARGET_PER_S else 'missed'})")
    print(f"pull      {len(pulled.incremental)} incremental pulls by random nurses from cursor "
          f"{pulled.cursor:,} ({pulled.changes_since:,} changes in the organisation since, "
          f"{statistics.mean(pulled.records):.1f} records per pull): p95 {p95:.1f} ms, target "
          f"≤ {PULL_TARGET_MS} ms ({'met' if p95 <= PULL_TARGET_MS else 'missed'})")
    print(f"first     nurse {pulled.first_nurse} from 0: {len(pulled.pages)} pages of up to "
          f"{args.page:,}, {pulled.first_records:,} records, {sum(pulled.pages):,.0f} ms in all "
          f"(slowest page {max(pulled.pages):.0f} ms)")


def ed25519_ceiling() -> tuple[float, float]:
    """Return Ed25519 verifies per second of one observation on one thread, and on two."""
    key = Ed25519PrivateKey.generate()
    message = canonical_bytes(observation(random.Random(1), str(uuid.uuid4()), datetime.now(UTC)))
    signature, public = key.sign(message), key.public_key()

    def verify(_thread: int) -> None:
        for _ in range(CEILING_VERIFIES):
            public.verify(signature, message)

    def per_second(threads: int) -> float:
        began = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(verify, range(threads)))
        return threads * CEILING_VERIFIES / (time.perf_counter() - began)

    return per_second(1), per_second(2)


def print_ceiling(one: float, two: float) -> None:
    """Print the Ed25519 ceiling: what verifying alone allows on one core and on two threads."""
    print(f"ceiling   Ed25519 verify, measured in this run: {one:,.0f}/s on one core "
          f"({1e6 / one:.0f} µs each), {two:,.0f}/s on two threads ({two / one:.2f}x)")


def print_profile(profiled: Profiled, records: int) -> None:
    """Print the profiled push's statements by kind, then its costliest functions."""
    count, seconds = profiled.statements.count, profiled.statements.seconds
    waited = sum(seconds.values()) * 1000
    print(f"profile   one push of {records} under cProfile: {profiled.milliseconds:.0f} ms, "
          f"{sum(count.values()):,} statements ({sum(count.values()) / records:.1f} per "
          f"record), {waited:.0f} ms of it in PostgreSQL's answers")
    for kind, number in count.most_common(16):
        print(f"          {kind:<40}{number:>7,}{number / records:>7.2f}/record"
              f"{seconds[kind] * 1000:>8.0f} ms")
    print_costliest(profiled.profile)


def print_costliest(profile: cProfile.Profile) -> None:
    """Print the functions with the most own time, then Vigil's own by cumulative time."""
    root = f"{Path(__file__).resolve().parents[1]}/"
    for order, restriction, lines in (("tottime", "", 15), ("cumulative", "/backend/", 40)):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        if not restriction:
            stats.strip_dirs()
        stats.sort_stats(order).print_stats(restriction, lines)
        print(f"profile   by {order}" + (" in backend/" if restriction else ""))
        print("\n".join(line.replace(root, "") for line in out.getvalue().splitlines()[4:]
                        if line.strip() and not line.startswith("   List reduced")))


def main() -> None:
    """Seed a million synced rows, time pushes and pulls, and print the figures."""
    args = parse_args()
    print(describe_machine(), flush=True)
    if not os.environ.get("BENCH_DATABASE_URL"):
        # `make bench` runs on machines without PostgreSQL; COPY and this size need it.
        print("sync      skipped: set BENCH_DATABASE_URL to a PostgreSQL bench database")
        return
    with migrated_app(CHEAP_ARGON2) as app:
        seeded = seed(app, args)
        pushed = measure_pushes(app, seeded.clinic, args)
        pulled = measure_pulls(app, seeded.clinic, args)
        ceiling = ed25519_ceiling()
        name = make_url(os.environ["BENCH_DATABASE_URL"]).database
        print(f"database  {describe(app.extensions['vigil.db'].engine)}, {name}, on this "
              "machine")
        print(f"machine   {machine()}")
        print_seed(seeded, args)
        print(f"rows      {sync_rows(app)}")
        print_figures(pushed, pulled, args)
        print_ceiling(*ceiling)
        if pushed.profiled:
            print_profile(pushed.profiled, args.records)


if __name__ == "__main__":
    main()
