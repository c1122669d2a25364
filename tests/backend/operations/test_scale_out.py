"""Acceptance: two web servers and three schedulers on one PostgreSQL database behave as one.

Two gunicorn instances on two ports share the database and the instance folder's keys; three
`vigil scheduler` processes compete for the advisory lock. Phones push signed records to both
servers at once — the same batch to both, a retry of a batch to the other server, and records
that break a rule — and then the database is read back: every record stored once, every job
slot run once by the one active scheduler, every flag raised once. A token, a revocation and a
console session each cross from one server to the other.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from backend.accounts.models import Role
from backend.administration.models import Observation, QuarantinedEvent
from backend.clock import SystemClock
from backend.config import PROJECT_ROOT
from backend.db import build_engine
from backend.flags.models import Flag, FlagAction, FlagEvent, FlagOccurrence
from backend.jobs.models import JobRun
from backend.jobs.scheduler import ADVISORY_KEY
from backend.sync.models import PendingCheck
from tests.backend.conftest import make_app, own_postgres_database
from tests.backend.jobs.test_scheduler_processes import VIGIL
from tests.backend.sync.test_concurrent_phones import Seat, free_port, server_env
from tests.backend.sync.test_sync import VITALS
from tests.factories import PASSWORD, Clinic, World

pytestmark = pytest.mark.postgres_only

PHONES, RECORDS = 4, 10
# Alarming at any baseline: the `sync_checks` job flags the visit once it judges the session.
ALARMING = {**VITALS, "systolic": 195, "diastolic": 115}
# Short periods, so that a few slots of each pass while the phones sync.
SCHEDULE = ("--every", "heartbeat=2", "--every", "sync_checks=2", "--retry-seconds", "0.5")
RUN_FOR = "400"  # a safety net: a scheduler the test fails to stop still exits by itself
# Bounds on a hang, not on speed: four workers and three schedulers booting on a loaded two-core
# CI machine have taken over 45 s.
HTTP_TIMEOUT, READY_TIMEOUT, SETTLE_TIMEOUT = 30, 120, 60
CSRF_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Process:
    """A server or scheduler process and the file its output goes to."""

    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self) -> str:
        """Return the end of what the process printed."""
        return f"--- {self.name} (pid {self.popen.pid})\n" \
               f"{self.log.read_text(errors='replace')[-2500:]}"


@dataclass
class Fleet:
    """Every process of the deployment, so that a failure can show all their output."""

    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str], folder: Path) -> Process:
        """Start `command` with its output in a log file of its own."""
        log = folder / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(  # noqa: S603 - our own command, no shell
                command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        """Return the tail of every process's output, for a failure message."""
        return "\n".join(process.tail() for process in self.processes)

    def stop(self, processes: list[Process]) -> None:
        """Ask `processes` to stop, then kill what is left after a while."""
        for process in processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.popen.wait(15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(15)


@dataclass(frozen=True)
class Answer:
    """A server's answer: status, headers and the decoded body."""

    status: int
    headers: dict[str, str]
    body: object


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: object = None, form: dict[str, str] | None = None) -> Answer:
    """Send one request on a connection of its own, as JSON or as a form."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    sent = {"Content-Type": "application/json", **(headers or {})}
    payload = None if body is None else json.dumps(body)
    if form is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
        payload = urllib.parse.urlencode(form)
    try:
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        got = {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()
    try:
        return Answer(response.status, got, json.loads(raw))
    except ValueError:
        return Answer(response.status, got, raw.decode(errors="replace"))


@dataclass(frozen=True)
class Seeded:
    """The organisation, its phones, a spare phone to revoke, and a desk user's sign-in."""

    org: str
    seats: list[Seat]
    spare: Seat
    desk_username: str
    desk_code: Callable[[], str]


def seed(url: str, instance: Path) -> Seeded:
    """Make an organisation whose nurses each hold a phone with a visit, on the real clock."""
    app = make_app(url, instance, SystemClock())
    world = World(app)
    try:
        clinic = Clinic(world)
        starts = (datetime.now(UTC) + timedelta(hours=2)).isoformat(timespec="seconds")
        seats = []
        for _ in range(PHONES + 1):
            nurse = world.user(clinic.org, Role.NURSE)
            device_id, phone = world.device(clinic.org, nurse)
            patient_id = clinic.patient([nurse])
            clinic.plan(patient_id)
            visit = clinic.client.post("/api/v1/visits", headers=clinic.as_(Role.ADMIN), json={
                "patient_id": patient_id, "nurse_id": str(nurse.id), "scheduled_start": starts})
            assert visit.status_code == 201, visit.json
            seats.append(Seat(nurse.username, str(device_id), phone, visit.json["id"]))
        desk = clinic.users[Role.COMPLIANCE]
    finally:
        world.session.close()
        app.extensions["vigil.db"].engine.dispose()
    return Seeded(clinic.org.slug, seats[:-1], seats[-1], desk.username,
                  lambda: world.totp(desk).now())


def row(seat: Seat, vitals: dict, *, forged: bool = False) -> dict:
    """Return an observation signed by the seat's phone (a forged one altered after signing)."""
    at = datetime.now(UTC) - timedelta(minutes=1)
    columns = {"id": str(uuid.uuid4()), "visit_id": seat.visit_id, **vitals,
               "occurred_at": at.isoformat(timespec="seconds")}
    signature = seat.phone.sign(columns)
    if forged:
        columns["heart_rate"] += 40
    return {**columns, "signature": signature, "_status": "created", "_changed": ""}


@dataclass
class Synced:
    """One phone's session: its token, cursor, what it pushed and how the servers answered."""

    seat: Seat
    token: str = ""
    cursor: int = 0
    stored: list[str] = field(default_factory=list)
    answers: list[tuple[str, Answer]] = field(default_factory=list)

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Return the bearer token, the phone's time, and an idempotency key if given."""
        sent = {"Authorization": f"Bearer {self.token}",
                "X-Device-Time": datetime.now(UTC).isoformat()}
        return {**sent, "Idempotency-Key": key} if key else sent

    def push(self, port: int, rows: list[dict], key: str) -> Answer:
        """Push `rows`, retrying while another push of the same records or key still runs."""
        body = {"changes": {"observations": {"created": rows, "updated": [], "deleted": []}}}
        deadline = time.monotonic() + HTTP_TIMEOUT
        while True:
            answer = request(port, "POST", f"/api/v1/sync?last_pulled_at={self.cursor}",
                             self.headers(key), body)
            if answer.status != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.answers.append(("push", answer))
        return answer


def sync_phone(ports: tuple[int, int], org: str, seat: Seat, start: threading.Barrier) -> Synced:
    """Log in on one server, pull on the other, and push each batch to both of them."""
    first, second = ports
    phone = Synced(seat)
    login = request(first, "POST", "/api/v1/auth/login", body={
        "org": org, "username": seat.username, "password": PASSWORD,
        "device_id": seat.device_id})
    phone.answers.append(("login", login))
    phone.token = login.body["access_token"] if login.status == 200 else ""
    start.wait()
    query = urllib.parse.urlencode({"last_pulled_at": 0, "schema_version": 1})
    pulled = request(second, "GET", f"/api/v1/sync?{query}", phone.headers())
    phone.answers.append(("pull", pulled))
    phone.cursor = pulled.body["timestamp"] if pulled.status == 200 else 0
    with ThreadPoolExecutor(2) as both:
        # The same batch to both servers at once, under one key: one applies, one replays.
        batch = [row(seat, VITALS) for _ in range(RECORDS)] + [row(seat, ALARMING)]
        key = str(uuid.uuid4())
        list(both.map(lambda port: phone.push(port, batch, key), ports))
        phone.stored += [record["id"] for record in batch]
        # A batch with a forged record, retried under its key on the other server.
        batch = [row(seat, VITALS) for _ in range(RECORDS)] + [row(seat, VITALS, forged=True)]
        key = str(uuid.uuid4())
        phone.push(second, batch, key)
        phone.push(first, batch, key)
        phone.stored += [record["id"] for record in batch[:-1]]
        # The same records to both servers at once under two keys: one stores them, one finds
        # them stored; the forged record is refused by each push that runs.
        batch = [row(seat, VITALS) for _ in range(RECORDS)] + [batch[-1]]
        list(both.map(lambda port: phone.push(port, batch, str(uuid.uuid4())), ports))
        phone.stored += [record["id"] for record in batch[:-1]]
    return phone


def sync_at_once(ports: tuple[int, int], seeded: Seeded) -> list[Synced]:
    """Run every seat's phone on a thread of its own, released together after their logins."""
    start = threading.Barrier(len(seeded.seats))
    with ThreadPoolExecutor(len(seeded.seats)) as pool:
        running = [pool.submit(sync_phone, ports, seeded.org, seat, start)
                   for seat in seeded.seats]
        return [done.result(timeout=120) for done in running]


def check_answers(phones: list[Synced], logs: str) -> None:
    """Assert that every answer succeeded, and that a retry under a key was a replay."""
    answers = [(kind, answer) for phone in phones for kind, answer in phone.answers]
    failed = [(kind, answer.status, answer.body) for kind, answer in answers
              if answer.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} failed, first {failed[:3]}\n{logs}"
    for phone in phones:
        pushes = [answer for kind, answer in phone.answers if kind == "push"]
        replayed = [answer for answer in pushes
                    if answer.headers.get("idempotent-replayed") == "true"]
        # Batch one's second copy and batch two's retry replay the first answer.
        assert len(replayed) == 2, [answer.headers for answer in pushes]
        assert pushes[3].body == pushes[2].body


def count_by_id(engine: Engine, model, ids: list[str]) -> dict[str, int]:
    """Return how many rows of `model` each of `ids` has."""
    with engine.connect() as conn:
        counted = conn.execute(select(model.id, func.count()).where(
            model.id.in_([uuid.UUID(i) for i in ids])).group_by(model.id))
        return {str(record_id): rows for record_id, rows in counted}


def check_records(engine: Engine, phones: list[Synced]) -> None:
    """Assert that every pushed record is stored exactly once, and no forged one at all."""
    pushed = [record for phone in phones for record in phone.stored]
    assert len(pushed) == len(set(pushed)) == PHONES * (3 * RECORDS + 1)
    counted = count_by_id(engine, Observation, pushed)
    assert set(counted) == set(pushed)
    assert set(counted.values()) == {1}
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Observation)) == len(pushed)


def settled(engine: Engine, seeded: Seeded) -> bool:
    """Tell whether the schedulers judged every synced session and ran a few heartbeats."""
    with engine.connect() as conn:
        pending = conn.scalar(select(func.count()).select_from(PendingCheck))
        alarms = conn.scalar(select(func.count(func.distinct(Flag.subject_id))).where(
            Flag.rule_id == "monitoring.alarming_vitals"))
    return pending == 0 and alarms == len(seeded.seats) and heartbeats(engine) >= 3


def heartbeats(engine: Engine) -> int:
    """Count the heartbeat slots run so far."""
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(JobRun).where(
            JobRun.job == "heartbeat"))


def wait_for(condition: Callable[[], bool], what: str, seconds: float,
             logs: Callable[[], str]) -> None:
    """Check `condition` every fifth of a second; fail, showing the logs, after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} timed out\n{logs()}"
        time.sleep(0.2)


class LockWatch(threading.Thread):
    """Sample, until stopped, how many sessions hold the scheduler's advisory lock."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        """Take a sample every fifth of a second."""
        while not self.stopped.wait(0.2):
            with self.engine.connect() as conn:
                self.samples.append(len(conn.execute(text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND classid = :high AND objid = :low"),
                    {"high": ADVISORY_KEY >> 32, "low": ADVISORY_KEY & 0xFFFF_FFFF}).all()))

    def stop(self) -> list[int]:
        """Stop sampling; return the samples."""
        self.stopped.set()
        if self.is_alive():
            self.join(10)
        return self.samples


def check_job_runs(engine: Engine, schedulers: list[Process], logs: str) -> None:
    """Assert one run per (job, slot), all by one of the schedulers, and judged sessions."""
    with engine.connect() as conn:
        runs = list(conn.execute(select(JobRun.job, JobRun.slot, JobRun.holder,
                                        JobRun.outcome)))
    slots = [(run.job, run.slot) for run in runs]
    assert len(slots) == len(set(slots)), logs
    assert {"heartbeat", "sync_checks"} <= {run.job for run in runs}, logs
    # Nobody failed over, so one scheduler held the lock throughout and ran every slot.
    holders = {run.holder for run in runs}
    assert len(holders) == 1, (holders, logs)
    pids = {process.popen.pid for process in schedulers}
    assert int(next(iter(holders)).split(":")[-2]) in pids, logs
    judged = sum(run.outcome.get("judged", 0) for run in runs if run.job == "sync_checks")
    assert judged >= PHONES, (judged, logs)


def check_flags(engine: Engine, phones: list[Synced], logs: str) -> None:
    """Assert one flag per case, raised once, with one occurrence per quarantined delivery."""
    with engine.connect() as conn:
        flags = list(conn.execute(select(Flag.id, Flag.rule_id, Flag.subject_id,
                                         Flag.dedup_key, Flag.occurrences)))
        raised = dict(conn.execute(select(FlagEvent.flag_id, func.count()).where(
            FlagEvent.action == FlagAction.RAISED).group_by(FlagEvent.flag_id)).all())
        occurrences = dict(conn.execute(select(FlagOccurrence.flag_id, func.count())
                                        .group_by(FlagOccurrence.flag_id)).all())
        held = dict(conn.execute(select(QuarantinedEvent.device_id, func.count())
                                 .group_by(QuarantinedEvent.device_id)).all())
    assert len({flag.dedup_key for flag in flags}) == len(flags), logs
    assert all(raised.get(flag.id) == 1 for flag in flags), (flags, raised, logs)
    cases = {(flag.rule_id, flag.subject_id): flag for flag in flags}
    assert len(cases) == len(flags), flags
    for phone in phones:
        alarm = cases[("monitoring.alarming_vitals", phone.seat.visit_id)]
        quarantine = cases[("sync.quarantined_event", phone.seat.device_id)]
        # Judged after each of two pushes, the one alarming reading counts once.
        assert alarm.occurrences == 1, alarm
        # The forged record was held by batch two's push (its retry replayed the answer) and
        # by each of batch three's two pushes: one case, three occurrences, one per holding.
        assert held[uuid.UUID(phone.seat.device_id)] == 3, phone.answers
        assert quarantine.occurrences == occurrences[quarantine.id] == 3, quarantine


def check_revocations_cross(ports: tuple[int, int], seeded: Seeded) -> None:
    """Assert that a sign-out and a device revoked on one server are refused on the other."""
    first, second = ports
    seat = seeded.spare
    query = "/api/v1/sync?" + urllib.parse.urlencode({"last_pulled_at": 0, "schema_version": 1})

    def login(port: int) -> Answer:
        return request(port, "POST", "/api/v1/auth/login", body={
            "org": seeded.org, "username": seat.username, "password": PASSWORD,
            "device_id": seat.device_id})

    bearer = {"Authorization": f"Bearer {login(second).body['access_token']}"}
    assert request(first, "GET", query, bearer).status == 200
    assert request(first, "POST", "/api/v1/auth/logout", bearer).status == 204
    assert request(second, "GET", query, bearer).status == 401
    bearer = {"Authorization": f"Bearer {login(first).body['access_token']}"}
    assert request(second, "GET", query, bearer).status == 200
    assert request(first, "DELETE", f"/api/v1/devices/{seat.device_id}", bearer).status == 204
    assert request(second, "GET", query, bearer).status == 401
    assert login(second).status != 200


class Browser:
    """A desk user's browser: one cookie, and the CSRF token of the last page it opened."""

    def __init__(self) -> None:
        self.cookie = ""
        self.token = ""

    def open(self, port: int, method: str, path: str, form: dict | None = None) -> Answer:
        """Open a console page on the server at `port`, keeping the cookie it sets."""
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if form is not None:
            form = {**form, "csrf_token": self.token}
        answer = request(port, method, path, headers, form=form)
        if cookie := answer.headers.get("set-cookie"):
            self.cookie = cookie.split(";", 1)[0]
        if isinstance(answer.body, str) and (found := CSRF_TOKEN.search(answer.body)):
            self.token = found.group(1)
        return answer


def check_console_session_crosses(ports: tuple[int, int], seeded: Seeded) -> None:
    """Assert that a console session signed in on one server is the same on the other."""
    first, second = ports
    browser = Browser()
    browser.open(first, "GET", "/console/login")
    answer = browser.open(first, "POST", "/console/login", {
        "org": seeded.org, "username": seeded.desk_username, "password": PASSWORD})
    assert answer.headers.get("location") == "/console/login/factor", answer
    browser.open(second, "GET", "/console/login/factor")
    answer = browser.open(first, "POST", "/console/login/factor", {"code": seeded.desk_code()})
    assert answer.status == 302 and "/login" not in answer.headers["location"], answer
    home = browser.open(second, "GET", "/console/")
    assert home.status == 302 and "/login" not in home.headers["location"], home
    assert browser.open(second, "GET", home.headers["location"]).status == 200
    assert browser.open(second, "POST", "/console/logout", {}).status == 302
    assert "/login" in browser.open(first, "GET", "/console/").headers["location"]


def healthy(port: int) -> bool:
    """Tell whether the server at `port` answers /healthz."""
    try:
        return request(port, "GET", "/healthz").status == 200
    except OSError:
        return False


@pytest.fixture
def scale_out_database() -> Iterator[str]:
    """Yield a freshly migrated PostgreSQL database of the test's own, dropped afterwards."""
    url = own_postgres_database("scale_out")
    yield url
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{target.database}" WITH (FORCE)'))
    admin.dispose()


def test_two_servers_and_three_schedulers_on_one_database_act_as_one(scale_out_database,
                                                                      tmp_path):
    instance = tmp_path / "instance"
    # The seed makes the instance's keys first, so every process below reads the same ones.
    seeded = seed(scale_out_database, instance)
    env = server_env(instance, DATABASE_URL=scale_out_database, PYTHONUNBUFFERED="1")
    fleet, ports = Fleet(), (free_port(), free_port())
    engine = build_engine(scale_out_database)
    watch = LockWatch(engine)
    try:
        for port in ports:
            fleet.start(f"server-{port}", [
                sys.executable, "-m", "gunicorn", "-w", "2", "--log-level", "warning",
                "-b", f"127.0.0.1:{port}", "backend:create_app()"], env, tmp_path)
        schedulers = [fleet.start(f"scheduler-{number}", [
            *VIGIL, "scheduler", *SCHEDULE, "--run-for", RUN_FOR], env, tmp_path)
            for number in range(3)]
        watch.start()
        wait_for(lambda: all(map(healthy, ports)), "the servers' start", READY_TIMEOUT,
                 fleet.logs)
        # The phones push while the jobs run: wait for the active scheduler's first slot.
        wait_for(lambda: heartbeats(engine) > 0, "the first heartbeat", READY_TIMEOUT,
                 fleet.logs)
        phones = sync_at_once(ports, seeded)
        check_revocations_cross(ports, seeded)
        check_console_session_crosses(ports, seeded)
        wait_for(lambda: settled(engine, seeded), "judging the synced sessions",
                 SETTLE_TIMEOUT, fleet.logs)
        fleet.stop(schedulers)
        holders = watch.stop()
        logs = fleet.logs()
        # One holder at a time, and someone held it: every sample saw one (or, while the
        # active one started or stopped, none).
        assert set(holders) <= {0, 1} and 1 in holders, (holders, logs)
        assert all(s.popen.returncode == 0 for s in schedulers), logs
        check_answers(phones, logs)
        check_records(engine, phones)
        check_job_runs(engine, schedulers, logs)
        check_flags(engine, phones, logs)
    finally:
        watch.stop()
        fleet.stop(fleet.processes)
        engine.dispose()
