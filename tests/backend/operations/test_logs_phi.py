"""Acceptance: a whole session with distinctive PHI, logged at DEBUG as JSON, leaves none of it.

Every record of every logger goes through Vigil's own JSON handler (and pytest's caplog) while
the session registers a patient, finds her by MRN, plans, schedules, moves stock, sends bad
input, pushes by sync (a quarantined record, a malformed push), reads her at the console and
fails twice with PHI in the exception. Each line must be JSON; request lines carry their id,
route, status and duration; none holds a PHI value or a patient id.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backend import db, logs
from backend.accounts.models import Role
from backend.jobs import scheduler
from tests.backend.console.conftest import Desk
from tests.backend.sync.test_sync import DAY1, Handset, session_rows
from tests.factories import Pharmacy, World

PHI = {"name": "Zebulon Quillfeather-Marchbanks", "mrn": "MRN-QX-7748213",
       "date_of_birth": "1937-05-14", "address": "77 Kittiwake Close, Saltmarsh Ferry",
       "phone": "+1 312 555 0187", "emergency_contact": "Ottoline Quillfeather (daughter)",
       "notes": "Frightened of needles since the Brannockmoor flood."}
SEARCH = "MRN-QX-7748213"
REQUEST_FIELDS = ("request_id", "route", "method", "status", "duration_ms")
HEX_ID = re.compile(r"[0-9a-f]{32}")


class Captured:
    """Every line Vigil's JSON handler wrote, at DEBUG, from every logger."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logs.handler("json", self.stream)

    def lines(self) -> list[dict]:
        """Return each line parsed as JSON (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def requests(self) -> list[dict]:
        """Return the one-per-request lines."""
        return [line for line in self.lines() if line["logger"] == "backend.requests"]


@pytest.fixture
def captured(caplog):
    """Send every logger's records at DEBUG to a JSON handler on the root logger."""
    caplog.set_level(logging.DEBUG)
    # Loggers that set their own level (apscheduler, werkzeug) are opened up too; SQLAlchemy's
    # statement log stays at INFO, where the engine hides parameters (its DEBUG prints rows,
    # which no Vigil setting turns on).
    loaded = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    levels = {logger: logger.level for logger in loaded}
    for logger in loaded:
        logger.setLevel(logging.INFO if logger.name.startswith("sqlalchemy") else logging.DEBUG)
    capture = Captured()
    logging.getLogger().addHandler(capture.handler)
    yield capture
    logging.getLogger().removeHandler(capture.handler)
    for logger, level in levels.items():
        logger.setLevel(level)


@pytest.fixture
def failing(app):
    """Add test-only routes that fail with PHI in the exception and in a statement's values."""

    def explode():
        raise RuntimeError(f"could not file {PHI['name']}")

    def bad_statement():
        db.session().execute(text("SELECT no_such_column FROM patient WHERE id = :name"),
                             {"name": PHI["name"]})

    app.add_url_rule("/test-only/explode", "test_only_explode", explode)
    app.add_url_rule("/test-only/statement", "test_only_statement", bad_statement)
    return app


def answered(response, status: int):
    """Assert `response`'s status and that it carries a request id."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert logs.SAFE_REQUEST_ID.fullmatch(response.headers["X-Request-Id"])
    return response


def rest_session(pharmacy: Pharmacy) -> str:
    """Register the PHI patient, find her, plan, schedule, move stock, and refuse bad input."""
    client, admin = pharmacy.client, pharmacy.as_(Role.ADMIN)
    created = answered(client.post("/api/v1/patients", headers=admin, json={
        **PHI, "nurse_ids": [str(pharmacy.nurse.id)]}), 201)
    patient_id = created.json["id"]
    answered(client.get("/api/v1/patients", headers=admin, query_string={"mrn": SEARCH}), 200)
    answered(client.get(f"/api/v1/patients/{patient_id}", headers=admin), 200)
    answered(client.patch(f"/api/v1/patients/{patient_id}", headers=admin,
                          json={"notes": PHI["notes"] + " Again."}), 200)
    answered(client.post("/api/v1/patients", headers=admin, json=PHI), 409)
    answered(client.post("/api/v1/patients", headers=admin, json={
        **PHI, "mrn": "MRN-QX-2", "date_of_birth": PHI["name"]}), 422)
    answered(client.post("/api/v1/patients", headers=admin, json={
        **PHI, "mrn": "MRN-QX-3", "favourite_saying": PHI["notes"]}), 422)
    answered(client.patch(f"/api/v1/patients/{patient_id}", headers=admin,
                          json={"phone": PHI["phone"] * 10}), 422)
    pharmacy.plan(patient_id=patient_id)
    answered(pharmacy.receive(200_000, lot="L-QX"), 201)
    answered(pharmacy.dispense(100_000, lot="L-QX"), 201)
    answered(pharmacy.post(Role.PHARMACIST, {"kind": "receive", "lot": PHI["name"],
                                             "quantity_ug": -1, "details": {}}), 422)
    return patient_id


def sync_session(pharmacy: Pharmacy, patient_id: str) -> None:
    """Push a visit's session with a forged record, then a malformed push carrying PHI."""
    visit = answered(pharmacy.client.post("/api/v1/visits", headers=pharmacy.as_(Role.ADMIN),
                                          json={"patient_id": patient_id,
                                                "nurse_id": str(pharmacy.nurse.id),
                                                "scheduled_start": DAY1}), 201).json
    handset = Handset(pharmacy)
    handset.sync_pull()
    changes = session_rows(handset, visit["id"], pharmacy.product_id)
    forged = changes["evv_events"]["created"][0]
    forged["reason"] = PHI["notes"]
    pushed = answered(handset.push(changes, key="qx-1"), 200)
    assert [q["record_id"] for q in pushed.json["quarantined"]] == [forged["id"]]
    answered(handset.push({"observations": {"created": [
        {"id": str(uuid.uuid4()), "colour": PHI["name"]}]}}), 400)
    answered(handset.push({}, cursor=PHI["mrn"]), 422)


def console_session(pharmacy: Pharmacy, patient_id: str) -> None:
    """Sign in at the console, find the patient by MRN and open her page."""
    desk = Desk(pharmacy.world.app.test_client(), pharmacy.world)
    answered(desk.sign_in(pharmacy.org, pharmacy.users[Role.ADMIN]), 302)
    found = answered(desk.get("/console/patients", query_string={"mrn": SEARCH}), 200)
    assert PHI["name"] in found.get_data(as_text=True)
    answered(desk.get(f"/console/patients/{patient_id}"), 200)


def test_a_whole_session_logs_no_phi(pharmacy_with_failures, captured, caplog):
    pharmacy = pharmacy_with_failures
    patient_id = rest_session(pharmacy)
    sync_session(pharmacy, patient_id)
    console_session(pharmacy, patient_id)
    answered(pharmacy.client.get("/test-only/explode"), 500)
    answered(pharmacy.client.get("/test-only/statement"), 500)

    written = captured.stream.getvalue()
    lines = captured.lines()
    for value in (*PHI.values(), patient_id):
        assert value not in written, value
        assert all(value not in json.dumps(line, ensure_ascii=False) for line in lines), value
    # The statement's values stay out of the error itself, whichever formatter prints it.
    errors = [record.exc_info[1] for record in caplog.records if record.exc_info]
    statement = next(error for error in errors if isinstance(error, DBAPIError))
    assert PHI["name"] not in str(statement)
    # Operators still learn what failed and where: the type, not the text.
    assert any("builtins.RuntimeError" in line.get("exc_info", "") for line in lines)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)

    requests = captured.requests()
    assert len(requests) >= 20
    for line in requests:
        assert all(line.get(name) is not None for name in REQUEST_FIELDS if name != "route"), line
        assert "?" not in (line["route"] or "")
    routes = {line["route"] for line in requests}
    assert {"/api/v1/patients", "/api/v1/patients/<uuid:patient_id>", "/api/v1/sync",
            "/console/patients/<patient_id>", "/test-only/explode"} <= routes
    statuses = {line["status"] for line in requests}
    assert {200, 201, 400, 409, 422, 500} <= statuses
    signed_in = [line for line in requests
                 if line["route"] in {"/api/v1/patients", "/console/patients/<patient_id>"}]
    assert all(line["user_id"] and line["organisation_id"] == str(pharmacy.org.id)
               for line in signed_in)


@pytest.fixture
def pharmacy_with_failures(world: World, failing) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    return pharmacy


def test_a_safe_request_id_round_trips_into_every_line(client, captured):
    response = answered(client.get("/healthz", headers={"X-Request-Id": "trace-42.a_B"}), 200)
    assert response.headers["X-Request-Id"] == "trace-42.a_B"
    [line] = captured.requests()
    assert (line["request_id"], line["route"], line["status"]) == ("trace-42.a_B", "/healthz", 200)
    assert line["duration_ms"] >= 0


@pytest.mark.parametrize("offered", [
    f"{PHI['name']}", "a" * 65, "id;drop", "id\tinjected", "ünïcode", ""])
def test_an_unsafe_request_id_is_replaced(client, captured, offered):
    response = answered(client.get("/api/v1/no-such-thing", headers={"X-Request-Id": offered}),
                        404)
    made = response.headers["X-Request-Id"]
    assert HEX_ID.fullmatch(made)
    [line] = captured.requests()
    assert line["request_id"] == made and line["route"] is None
    assert offered not in captured.stream.getvalue() or offered == ""


def test_lines_inside_a_request_carry_its_id(app, captured):
    def noisy():
        logging.getLogger("backend.test_only").warning("inside")
        return "ok"

    app.add_url_rule("/test-only/noisy", "test_only_noisy", noisy)
    response = app.test_client().get("/test-only/noisy")
    inside = next(line for line in captured.lines() if line["message"] == "inside")
    assert inside["request_id"] == response.headers["X-Request-Id"]


def test_a_job_run_logs_its_job_slot_holder_duration_and_counts(app, captured):
    rt = runtime_of(app)
    spec = scheduler.JobSpec("log_test", 60, lambda _session, _rt: {"judged": 3})
    scheduler.run_job(app.extensions["vigil.db"].sessions, rt, spec, Held(), "host:1:ab")
    scheduler.run_job(app.extensions["vigil.db"].sessions, rt, spec, Held(), "host:1:ab")
    ran, again = [line for line in captured.lines() if line.get("job") == "log_test"]
    slot = scheduler.slot_of(rt.clock.now(), 60)
    assert (ran["slot"], ran["holder"], ran["outcome"]) == (slot, "host:1:ab", {"judged": 3})
    assert ran["duration_ms"] >= 0
    assert again["message"] == f"job log_test slot {slot} already ran"


def test_a_failing_job_logs_its_exception_without_its_text(app, captured):
    def failing(_session, _rt):
        raise ValueError(PHI["name"])

    spec = scheduler.JobSpec("log_test_failing", 60, failing)
    with pytest.raises(ValueError, match="Quillfeather"):
        scheduler.run_job(app.extensions["vigil.db"].sessions, runtime_of(app), spec, Held(),
                          "host:1:ab")
    [line] = [line for line in captured.lines() if line.get("job") == "log_test_failing"]
    assert line["level"] == "ERROR" and "builtins.ValueError" in line["exc_info"]
    assert PHI["name"] not in captured.stream.getvalue()


class Held:
    """A scheduler lock this process always holds."""

    def held(self) -> bool:
        """Tell that the lock is held."""
        return True


def runtime_of(app):
    """Return `app`'s runtime."""
    return app.extensions["vigil.runtime"]
