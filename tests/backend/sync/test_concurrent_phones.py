"""Eight phones sync at once with real servers: `vigil serve` on SQLite, gunicorn on PostgreSQL.

Each phone logs in, then pulls and pushes signed observations in turn, over HTTP to a server in
a process of its own, as phones do in a clinic. No answer may be a 5xx, and every pushed record
must be stored. The data are seeded through the app in-process before the server starts.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from backend import schema
from backend.accounts.models import Role
from backend.administration.models import Observation
from backend.clock import FixedClock
from backend.config import PROJECT_ROOT
from tests.backend.conftest import FAST_ARGON2, START, make_app, own_postgres_app
from tests.backend.sync.test_sync import VITALS
from tests.factories import PASSWORD, Clinic, Phone, World

PHONES, ROUNDS, RECORDS = 8, 8, 20
VISIT_AT = "2026-11-03T15:00:00+00:00"
# Generous for one request, yet a hung server fails the test instead of stalling the suite.
HTTP_TIMEOUT, READY_TIMEOUT = 30, 30


@dataclass(frozen=True)
class Seat:
    """A nurse with a registered phone and a visit to record observations on."""

    username: str
    device_id: str
    phone: Phone
    visit_id: str


@dataclass(frozen=True)
class Seeded:
    """An organisation whose nurses each hold a phone."""

    org: str
    seats: list[Seat]


@dataclass
class Synced:
    """What one phone sent and how the server answered."""

    answers: list[tuple[str, int, object]] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)


def sqlite_app(instance: Path) -> Flask:
    """Return an app on a freshly migrated SQLite file, where `vigil serve` keeps it."""
    app = make_app(f"sqlite:///{instance / 'vigil.sqlite3'}", instance, FixedClock(START))
    schema.upgrade(app.extensions["vigil.db"].engine)
    return app


def seed(app: Flask, phones: int) -> Seeded:
    """Make an organisation whose `phones` nurses each have a phone, a patient and a visit."""
    world = World(app)
    clinic = Clinic(world)
    seats = []
    for _ in range(phones):
        nurse = world.user(clinic.org, Role.NURSE)
        device_id, phone = world.device(clinic.org, nurse)
        patient_id = clinic.patient([nurse])
        clinic.plan(patient_id)
        visit = clinic.client.post("/api/v1/visits", headers=clinic.as_(Role.ADMIN), json={
            "patient_id": patient_id, "nurse_id": str(nurse.id), "scheduled_start": VISIT_AT})
        assert visit.status_code == 201, visit.json
        seats.append(Seat(nurse.username, str(device_id), phone, visit.json["id"]))
    world.session.close()
    return Seeded(clinic.org.slug, seats)


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(port: int, method: str, path: str, headers: dict[str, str],
         body: object = None) -> tuple[int, object]:
    """Send one request on a connection of its own; return the status and the decoded body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")[:500]


def _wait_until_ready(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if call(port, "GET", "/healthz", {})[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not answer /healthz")


@contextmanager
def served(command: Callable[[int], list[str]], env: dict[str, str], log: Path) -> Iterator[int]:
    """Run `command(port)` as a server with `env`, logging to `log`; yield its port once ready."""
    port = free_port()
    with log.open("wb") as output:
        server = subprocess.Popen(  # noqa: S603 - our own server, no shell
            command(port), cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(server, port)
            yield port
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(15)


def server_env(instance: Path, **settings: str) -> dict[str, str]:
    """Return the environment of a server on `instance`, with the tests' cheap argon2."""
    return {**os.environ, "VIGIL_INSTANCE_PATH": str(instance), **settings,
            **{f"VIGIL_{name}": str(value) for name, value in FAST_ARGON2.items()}}


def bin_of(name: str) -> str:
    """Return the path of a console script installed beside this Python."""
    return str(Path(sys.executable).with_name(name))


def _observations(seat: Seat, count: int) -> list[dict]:
    """Return `count` observations signed by the seat's phone, as WatermelonDB holds them."""
    rows = []
    for _ in range(count):
        at = datetime.now(UTC) - timedelta(minutes=1)
        row = {"id": str(uuid.uuid4()), "visit_id": seat.visit_id, **VITALS,
               "occurred_at": at.isoformat(timespec="seconds")}
        rows.append({**row, "signature": seat.phone.sign(row), "_status": "created",
                     "_changed": ""})
    return rows


def sync_phone(port: int, org: str, seat: Seat, start: threading.Barrier) -> Synced:
    """Log in, then pull and push in turn ROUNDS times, as one phone; record every answer."""
    synced = Synced()
    status, token = call(port, "POST", "/api/v1/auth/login", {}, {
        "org": org, "username": seat.username, "password": PASSWORD,
        "device_id": seat.device_id})
    synced.answers.append(("login", status, token))
    headers = {"Authorization": f"Bearer {token['access_token']}"} if status == 200 else {}
    start.wait()
    cursor = 0
    for _ in range(ROUNDS):
        clock = {"X-Device-Time": datetime.now(UTC).isoformat()}
        query = urllib.parse.urlencode({"last_pulled_at": cursor, "schema_version": 1})
        status, pulled = call(port, "GET", f"/api/v1/sync?{query}", {**headers, **clock})
        synced.answers.append(("pull", status, pulled))
        cursor = pulled["timestamp"] if status == 200 else cursor
        rows = _observations(seat, RECORDS)
        synced.pushed += [row["id"] for row in rows]
        status, pushed = call(
            port, "POST", f"/api/v1/sync?last_pulled_at={cursor}",
            {**headers, **clock, "Idempotency-Key": str(uuid.uuid4())},
            {"changes": {"observations": {"created": rows, "updated": [], "deleted": []}}})
        synced.answers.append(("push", status, pushed))
    return synced


def sync_at_once(port: int, seeded: Seeded) -> list[Synced]:
    """Run every seat's phone on a thread of its own, released together after their logins."""
    start = threading.Barrier(len(seeded.seats))
    with ThreadPoolExecutor(len(seeded.seats)) as pool:
        running = [pool.submit(sync_phone, port, seeded.org, seat, start)
                   for seat in seeded.seats]
        return [done.result(timeout=120) for done in running]


def stored(app: Flask, ids: list[str]) -> int:
    """Count the observations stored under `ids`."""
    with app.extensions["vigil.db"].sessions() as session:
        return session.scalar(select(func.count()).select_from(Observation).where(
            Observation.id.in_([uuid.UUID(i) for i in ids])))


def check(app: Flask, phones: list[Synced], log: Path) -> None:
    """Assert that every answer was the expected success and every pushed record is stored."""
    answers = [answer for phone in phones for answer in phone.answers]
    failed = [answer for answer in answers if answer[1] != 200]
    assert not failed, f"{len(failed)} of {len(answers)} failed, first {failed[:3]}; " \
                       f"server log ends: {log.read_text(errors='replace')[-3000:]}"
    assert len(answers) == PHONES * (1 + 2 * ROUNDS)
    pushes = [body for kind, _, body in answers if kind == "push"]
    assert all(body["applied"] == {"observations": RECORDS} and not body["quarantined"]
               for body in pushes), pushes
    pushed = [record for phone in phones for record in phone.pushed]
    assert len(set(pushed)) == PHONES * ROUNDS * RECORDS
    assert stored(app, pushed) == len(pushed)


def test_eight_phones_sync_at_once_against_vigil_serve_on_sqlite(tmp_path):
    instance = tmp_path / "instance"
    app = sqlite_app(instance)
    seeded = seed(app, PHONES)
    log = tmp_path / "serve.log"
    began = time.monotonic()
    with served(lambda port: [bin_of("vigil"), "serve", "--port", str(port)],
                server_env(instance), log) as port:
        phones = sync_at_once(port, seeded)
    elapsed = time.monotonic() - began
    check(app, phones, log)
    app.extensions["vigil.db"].engine.dispose()
    assert elapsed < 60, f"eight phones took {elapsed:.1f} s"


@pytest.mark.postgres_only
def test_eight_phones_sync_at_once_against_gunicorn_on_postgresql(tmp_path, instance_path):
    with own_postgres_app(instance_path, "phones") as app:
        seeded = seed(app, PHONES)
        log = tmp_path / "gunicorn.log"
        command = [bin_of("gunicorn"), "-w", "2", "--log-level", "warning"]
        began = time.monotonic()
        with served(lambda port: [*command, "-b", f"127.0.0.1:{port}", "backend:create_app()"],
                    server_env(instance_path, DATABASE_URL=app.config["DATABASE_URL"]),
                    log) as port:
            phones = sync_at_once(port, seeded)
        elapsed = time.monotonic() - began
        check(app, phones, log)
    assert elapsed < 60, f"eight phones took {elapsed:.1f} s"
