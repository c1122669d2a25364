"""Acceptance: a real WatermelonDB client (tests/sync_client) syncs with a real server process.

The module seeds a SQLite file through the services, starts `vigil serve` on it, and runs the
Node harness once; the tests read its summary and the server's database.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Engine, func, select

from backend import config, create_app, schema
from backend.accounts.models import Role
from backend.administration.models import (
    Discharge,
    DoseRecord,
    Observation,
    PreDose,
    QuarantinedEvent,
)
from backend.clock import FixedClock
from backend.config import PROJECT_ROOT
from backend.custody.models import CustodyEntry
from backend.db import build_engine
from backend.flags.models import Flag
from backend.phi.cipher import PhiCipher
from backend.phi.sealed import open_stored
from backend.sync import checks
from backend.sync.models import SyncPush
from backend.sync.tables import SCHEMA_VERSION, TABLES
from backend.visits.models import EvvEvent, Visit
from tests.backend.conftest import FAST_ARGON2, IN_CI
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, Phone, World

CLIENT = PROJECT_ROOT / "tests" / "sync_client"
# The same entry point as the installed `vigil` script, without depending on its install.
VIGIL = [sys.executable, "-c", "from backend.cli import main; main()"]
DOSE_UG = 40_000
WASTE_UG = 5_000
WEIGHT_KG = "80"
OBSERVATIONS = 8
TIMEOUT = 60


@dataclass(frozen=True)
class Seeded:
    """What the seed made: the organisation, its users, phone, patient and visits."""

    org: str
    nurse: str
    admin: str
    nurse_id: uuid.UUID
    device_id: uuid.UUID
    device_key_pem: str
    patient_id: uuid.UUID
    product_id: uuid.UUID
    visits: tuple[uuid.UUID, uuid.UUID]
    witness_id: uuid.UUID
    witness_device_id: uuid.UUID
    witness_key_pem: str


@dataclass(frozen=True)
class Run:
    """The harness's summary and the server's database after it."""

    summary: dict
    engine: Engine
    seeded: Seeded
    judged: dict
    # The server's PHI cipher, to read what it stores encrypted.
    phi: PhiCipher


def node_binary() -> str:
    """Return the path of `node`; skip without it, except in CI, where that is a failure."""
    found = shutil.which("node")
    if found:
        return found
    if IN_CI:
        pytest.fail("CI=true and node is not on PATH")
    pytest.skip("node is not on PATH")


def install_client() -> None:
    """Install the harness's locked packages when they are missing."""
    if (CLIENT / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed without npm; run `npm ci --prefix tests/sync_client`")
    subprocess.run([npm, "ci", "--prefix", str(CLIENT)], check=True,  # noqa: S603 - fixed
                   capture_output=True, timeout=300)


def phone_schema() -> dict:
    """Return the WatermelonDB appSchema of the synced tables, as the server defines them."""
    return {"version": SCHEMA_VERSION, "tables": [
        {"name": table.name, "columns": [
            {"name": c.name, "type": c.type, "isOptional": c.optional} for c in table.columns]}
        for table in TABLES]}


def seed(url: str, instance: Path) -> Seeded:
    """Make the organisation through the services, on a clock a day behind the real one."""
    # The first visit was booked yesterday for two and a half hours ago, so the phone's offline
    # session ends before it syncs on the server's real clock; the second is two days later.
    now = datetime.now(UTC).replace(microsecond=0)
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": instance, "VIGIL_ENV": "test",
                      "CLOCK": FixedClock(now - timedelta(days=1)), **FAST_ARGON2})
    world = World(app)
    pharmacy = Pharmacy(world)
    yesterday = (now - timedelta(days=1, minutes=10)).isoformat()
    pharmacy.plan(starts_on=(now - timedelta(days=2)).date().isoformat())
    weighed = pharmacy.client.post(
        f"/api/v1/patients/{pharmacy.patient_id}/weights", headers=pharmacy.as_(Role.PRESCRIBER),
        json={"weight_kg": WEIGHT_KG, "measured_at": yesterday})
    assert weighed.status_code == 201, weighed.json
    for body in ({"kind": "receive", "quantity_ug": 1_000_000, "details": SUPPLIER},
                 {"kind": "dispense", "quantity_ug": 500_000,
                  "nurse_id": str(pharmacy.nurse.id), "details": {"seal_id": "S-1"}}):
        posted = pharmacy.post(Role.PHARMACIST, {**body, "occurred_at": yesterday})
        assert posted.status_code == 201, posted.json
    visits = []
    for start in (now - timedelta(minutes=150), now + timedelta(hours=48)):
        booked = pharmacy.schedule(start.isoformat())
        assert booked.status_code == 201, booked.json
        visits.append(uuid.UUID(booked.json["id"]))
    # A colleague who witnesses the nurse's wastes, confirming each on her own phone.
    witness = world.user(pharmacy.org, Role.NURSE)
    witness_device, witness_phone = world.device(pharmacy.org, witness)
    # The harness's admin signs in with a password: a new admin, within the enrolment grace
    # (rescheduling asks for no fresh second factor).
    scheduler = world.user(pharmacy.org, Role.ADMIN, factor=False)
    seeded = Seeded(pharmacy.org.slug, pharmacy.nurse.username, scheduler.username,
                    pharmacy.nurse.id, pharmacy.device_id,
                    pem(pharmacy.phone), uuid.UUID(pharmacy.patient_id),
                    uuid.UUID(pharmacy.product_id), (visits[0], visits[1]), witness.id,
                    witness_device, pem(witness_phone))
    world.session.close()
    app.extensions["vigil.db"].engine.dispose()
    return seeded


def pem(phone: Phone) -> str:
    """Return the phone's private key in PEM, as the harness loads it."""
    return phone.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                           NoEncryption()).decode()


def free_port() -> int:
    """Return a TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(url: str, instance: Path) -> dict[str, str]:
    """Return the environment of a server process on `url` with the seed's instance keys."""
    vigil = {setting.env for setting in config.SETTINGS} | {"VIGIL_INSTANCE_PATH"}
    inherited = {k: v for k, v in os.environ.items() if k not in vigil}
    return {**inherited, "DATABASE_URL": url, "VIGIL_INSTANCE_PATH": str(instance),
            "VIGIL_ENV": "test", "PYTHONUNBUFFERED": "1"}


def wait_until_healthy(base: str, process: subprocess.Popen, log: Path) -> None:
    """Poll /healthz until the server answers; fail if it exits or stays silent."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the server did not answer within {TIMEOUT}s:\n{log.read_text()}")


def run_harness(node: str, base: str, seeded: Seeded, schema_file: Path) -> dict:
    """Run the Node harness against the server and return its summary."""
    env = {**os.environ, "VIGIL_URL": base, "VIGIL_ORG": seeded.org,
           "VIGIL_NURSE": seeded.nurse, "VIGIL_ADMIN": seeded.admin,
           "VIGIL_PASSWORD": PASSWORD, "VIGIL_DEVICE_ID": str(seeded.device_id),
           "VIGIL_DEVICE_KEY_PEM": seeded.device_key_pem, "VIGIL_DOSE_UG": str(DOSE_UG),
           "VIGIL_WITNESS_ID": str(seeded.witness_id),
           "VIGIL_WITNESS_DEVICE_ID": str(seeded.witness_device_id),
           "VIGIL_WITNESS_KEY_PEM": seeded.witness_key_pem, "VIGIL_WASTE_UG": str(WASTE_UG),
           "VIGIL_SCHEMA_FILE": str(schema_file), "NODE_ENV": "development"}
    ran = subprocess.run([node, str(CLIENT / "harness.mjs")], env=env,  # noqa: S603 - fixed
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=CLIENT)
    assert ran.returncode == 0, f"harness failed:\n{ran.stderr}"
    return json.loads(ran.stdout)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """Seed, serve, run the harness once, and stop the server."""
    node = node_binary()
    install_client()
    instance = tmp_path_factory.mktemp("sync-client")
    url = f"sqlite:///{instance / 'vigil.sqlite3'}"
    engine = build_engine(url)
    schema.upgrade(engine)
    with pytest.MonkeyPatch.context() as patch:
        for setting in config.SETTINGS:
            patch.delenv(setting.env, raising=False)
        seeded = seed(url, instance)
    schema_file = instance / "phone-schema.json"
    schema_file.write_text(json.dumps(phone_schema()))
    port = free_port()
    log = instance / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(  # noqa: S603 - our own command, no shell
            [*VIGIL, "serve", "--port", str(port)], cwd=PROJECT_ROOT,
            env=server_environment(url, instance), stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, server, log)
        summary = run_harness(node, base, seeded, schema_file)
    finally:
        server.terminate()
        server.wait(TIMEOUT)
    with pytest.MonkeyPatch.context() as patch:
        for setting in config.SETTINGS:
            patch.delenv(setting.env, raising=False)
        judged, phi = judge_synced_sessions(url, instance)
    yield Run(summary, engine, seeded, judged, phi)
    engine.dispose()


def judge_synced_sessions(url: str, instance: Path) -> tuple[dict, PhiCipher]:
    """Run the scheduler's `sync_checks` job once, as `vigil scheduler` does after pushes.

    Return its outcome and the server's PHI cipher.
    """
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": instance, "VIGIL_ENV": "test"})
    with app.extensions["vigil.db"].sessions() as session:
        outcome = checks.judge_pending(session, app.extensions["vigil.runtime"])
        session.commit()
    app.extensions["vigil.db"].engine.dispose()
    return outcome, PhiCipher.from_keyring(app.extensions["vigil.runtime"].keys)


def count(engine: Engine, model: type, *where) -> int:
    """Return how many rows of `model` match `where`."""
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model).where(*where))


def local_rows(run: Run, stage: str, table: str, visit_id: uuid.UUID) -> list[dict]:
    """Return the phone's rows of `table` for one visit at a stage of the run."""
    return [row for row in run.summary[stage][table] if row["visit_id"] == str(visit_id)]


def test_the_first_pull_brings_the_schedule(run):
    pulled = run.summary["first_pull"]
    assert sorted(v["id"] for v in pulled["visits"]) == sorted(str(v) for v in run.seeded.visits)
    assert {v["status"] for v in pulled["visits"]} == {"scheduled"}
    assert [p["id"] for p in pulled["patients"]] == [str(run.seeded.patient_id)]
    assert [p["id"] for p in pulled["products"]] == [str(run.seeded.product_id)]
    assert len(pulled["plan_versions"]) == 1
    assert "dispense" in [e["kind"] for e in pulled["custody_entries"]]
    assert {row["_status"] for name, rows in pulled.items() if name != "unsynced"
            for row in rows} == {"synced"}
    assert run.summary["visits"] == {"first": str(run.seeded.visits[0]),
                                     "second": str(run.seeded.visits[1])}


def test_the_phone_holds_only_its_own_bags_custody_entries(run):
    pulled = run.summary["first_pull"]["custody_entries"]
    assert [entry["kind"] for entry in pulled] == ["dispense"]


def test_a_push_whose_answer_was_lost_is_replayed_and_applied_once(run):
    dropped, retried = run.summary["pushes"][:2]
    assert run.summary["dropped"]["message"] == "connection dropped before the answer arrived"
    assert run.summary["unsynced_after_drop"] is True
    assert dropped["dropped"] is True and dropped["replayed"] is False
    assert retried["key"] == dropped["key"]
    assert retried["replayed"] is True and retried["answer"] == dropped["answer"]
    assert dropped["answer"]["applied"] == {"evv_events": 2, "pre_doses": 1, "doses": 1,
                                            "observations": OBSERVATIONS, "discharges": 1,
                                            "custody_entries": 1, "visits": 1}
    assert dropped["answer"]["quarantined"] == []
    after = run.summary["after_retry"]
    assert after["unsynced"] is False
    assert {row["_status"] for name, rows in after.items() if name != "unsynced"
            for row in rows} == {"synced"}
    with run.engine.connect() as conn:
        logged = conn.execute(select(SyncPush).where(
            SyncPush.idempotency_key == dropped["key"])).all()
    assert [(row.state, row.response_status, row.last_pulled_at) for row in logged] == [
        ("done", 200, dropped["last_pulled_at"])]
    assert logged[0].response_body == dropped["answer"]


def test_the_session_is_stored_once_with_its_custody_entry(run):
    visit_id = run.seeded.visits[0]
    for model, expected in ((PreDose, 1), (DoseRecord, 1), (Observation, OBSERVATIONS),
                            (Discharge, 1), (EvvEvent, 2), (QuarantinedEvent, 0)):
        assert count(run.engine, model, model.visit_id == visit_id) == expected, model
    with run.engine.connect() as conn:
        visit = conn.execute(select(Visit).where(Visit.id == visit_id)).one()
        kinds = conn.scalars(select(EvvEvent.kind).where(EvvEvent.visit_id == visit_id)
                             .order_by(EvvEvent.occurred_at)).all()
        dose = conn.execute(select(DoseRecord).where(DoseRecord.visit_id == visit_id)).one()
        custody = conn.execute(select(CustodyEntry).where(
            CustodyEntry.visit_id == visit_id).order_by(CustodyEntry.seq)).all()
    assert visit.status == "completed"
    assert kinds == ["check_in", "check_out"]
    assert dose.quantity_ug == DOSE_UG
    [waste] = run.summary["made"]["custody_entries"][:1]
    bag = f"bag:{run.seeded.nurse_id}"
    assert [(c.id, c.kind, c.quantity_ug, c.from_holder, c.to_holder) for c in custody][:2] == [
        (dose.custody_entry_id, "administer", DOSE_UG, bag, f"patient:{run.seeded.patient_id}"),
        (uuid.UUID(waste), "waste", WASTE_UG, bag, "waste")]
    pulled = local_rows(run, "after_retry", "custody_entries", visit_id)
    assert sorted((row["id"], row["kind"]) for row in pulled) == sorted([
        (str(dose.custody_entry_id), "administer"), (waste, "waste")])


def test_a_visit_moved_between_pull_and_push_refuses_the_push_with_409(run):
    conflict, refused = run.summary["conflict"], run.summary["pushes"][2]
    assert (conflict["status"], conflict["code"]) == (409, "sync_conflict")
    assert conflict["details"]["record_id"] == str(run.seeded.visits[1])
    assert conflict["details"]["last_pulled_at"] == refused["last_pulled_at"]
    assert conflict["details"]["changed_at_seq"] > refused["last_pulled_at"]
    with run.engine.connect() as conn:
        logged = conn.execute(select(SyncPush).where(SyncPush.response_status == 409)).all()
    # The refusal frees its key: the phone pulls and pushes again, with whatever key it likes;
    # the log still says which key was refused.
    assert [(row.idempotency_key, row.last_pulled_at, row.summary) for row in logged] == [
        (None, refused["last_pulled_at"],
         {"refused": "sync_conflict", "idempotency_key": refused["key"]})]


def test_the_check_in_on_the_moved_visit_is_quarantined_and_flagged(run):
    second = run.seeded.visits[1]
    pushed = run.summary["pushes"][3]
    # The server never stored it: the phone's next pull deleted its copy (quarantine keeps it).
    assert local_rows(run, "final", "evv_events", second) == []
    assert pushed["status"] == 200 and pushed["key"] != run.summary["pushes"][2]["key"]
    assert pushed["answer"]["kept_server_values"] == [
        {"table": "visits", "record_id": str(second), "fields": ["status"]}]
    with run.engine.connect() as conn:
        held = conn.execute(select(QuarantinedEvent)).all()
        flags = conn.execute(select(Flag).where(Flag.rule_id == "sync.quarantined_event")).all()
        visits = {v.id: v for v in conn.execute(select(Visit)).all()}
    check_in = {"id": pushed["answer"]["quarantined"][0]["record_id"]}
    assert [(q.record_type, q.record_id, q.visit_id, q.reason) for q in held] == [
        ("evv_events", check_in["id"], second,
         "conflict: The visit is rescheduled; this needs scheduled.")]
    assert pushed["answer"]["quarantined"] == [
        {"table": "evv_events", "record_id": check_in["id"], "quarantine_id": str(held[0].id),
         "reason": held[0].reason}]
    assert [(f.subject_id, open_stored(run.phi, Flag, "evidence", f.organisation_id, f.id,
                                       f.evidence_enc)["quarantine_id"]) for f in flags] == [
        (str(run.seeded.device_id), str(held[0].id))]
    assert count(run.engine, EvvEvent, EvvEvent.visit_id == second) == 0
    moved_to = uuid.UUID(run.summary["rescheduled_as"])
    assert visits[second].status == "rescheduled"
    assert (visits[moved_to].status, visits[moved_to].rescheduled_from_id) == (
        "scheduled", second)
    assert {"id": str(moved_to), "_status": "synced", "status": "scheduled"} in (
        run.summary["final"]["visits"])
    assert run.summary["final"]["unsynced"] is False


def test_the_phone_ends_with_the_servers_status_of_the_moved_visit(run):
    [local] = [v for v in run.summary["final"]["visits"] if v["id"] == str(run.seeded.visits[1])]
    assert local["status"] == "rescheduled"


def test_an_offline_visit_is_judged_by_the_phones_times(run):
    assert run.judged == {"judged": 1}
    with run.engine.connect() as conn:
        rules = conn.scalars(select(Flag.rule_id).where(
            Flag.subject_id == str(run.seeded.visits[0]))).all()
    assert "evv.visit_too_short" not in rules


def test_watermelondb_logs_no_warning_or_error_in_development_mode(run):
    # Among them, "already exists locally" for a record the phone pushed and pulled back as
    # created, and "doesn't exist locally" for an update of one it never had.
    assert run.summary["node_env"] == "development"
    assert run.summary["logged"] == []


def test_nothing_the_phone_made_comes_back_to_it_as_created(run):
    made = {record_id for ids in run.summary["made"].values() for record_id in ids}
    created = {record_id for pull in run.summary["pulls"]
               for ids in pull["created"].values() for record_id in ids}
    # The observations, the rest of the session, two wastes and three check-ins or outs.
    assert len(made) == OBSERVATIONS + 3 + 2 + 3
    assert made.isdisjoint(created)


def test_the_phones_custody_entries_keep_their_witnesses_signatures(run):
    custody = run.summary["custody"]
    # The waste without holders came back once, as updated, with the server's holders.
    assert [pull["updated"].get("custody_entries", []) for pull in run.summary["pulls"]
            if custody["bare"] in pull["updated"].get("custody_entries", [])] == [
        [custody["bare"]]]
    with run.engine.connect() as conn:
        stored = {str(entry.id): entry for entry in conn.execute(select(CustodyEntry).where(
            CustodyEntry.kind == "waste"))}
    assert sorted(stored) == sorted(row["id"] for row in custody["rows"])
    for row in custody["rows"]:
        entry = stored[row["id"]]
        assert (row["_status"], row["from_holder"], row["to_holder"]) == (
            "synced", f"bag:{run.seeded.nurse_id}", "waste")
        assert [c["method"] for c in entry.confirmations] == ["device_signature"]
        assert json.loads(row["witnesses"]) == [
            {"user_id": str(run.seeded.witness_id),
             "device_id": str(run.seeded.witness_device_id), "signature": c["signature"]}
            for c in entry.confirmations]
