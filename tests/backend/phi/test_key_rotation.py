"""`vigil keys` re-encrypts PHI under the active key in committed batches, resumable anywhere."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from backend import create_app, schema
from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.auth.caller import Caller
from backend.cli import cli
from backend.config import PROJECT_ROOT
from backend.keys import KEY_FILE
from backend.patients import service as patients
from backend.patients.models import PATIENT_PHI, Patient
from backend.phi.cipher import PhiCipher
from backend.phi.registry import encrypted_columns
from tests.backend.conftest import FAST_ARGON2, make_app
from tests.backend.phi.seeded import seed as seed_every_field
from tests.factories import World

KEYS = {kid: base64.b64encode(secrets.token_bytes(32)).decode() for kid in ("old", "new")}
OTHER_KEYS = {"VIGIL_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
              "VIGIL_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
              "VIGIL_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
# The same entry point as the installed `vigil` script, without depending on its install.
VIGIL = [sys.executable, "-c", "from backend.cli import main; main()"]
TIMEOUT = 60


def phi_keys(*kids: str) -> str:
    """Return a VIGIL_PHI_KEYS value holding `kids`."""
    return ",".join(f"{kid}:{KEYS[kid]}" for kid in kids)


@pytest.fixture
def apps(database_url, instance_path, clock, connection):
    """Return a factory of apps in the test's transaction, each configured with some PHI keys."""
    made = []

    def factory(*kids: str, active: str) -> Flask:
        app = make_app(database_url, instance_path, clock, PHI_KEYS=phi_keys(*kids),
                       PHI_ACTIVE_KEY=active)
        app.extensions["vigil.db"].use_connection(connection)
        made.append(app)
        return app

    yield factory
    for app in made:
        app.extensions["vigil.db"].engine.dispose()


def seed(app: Flask, count: int) -> uuid.UUID:
    """Register `count` patients through the service, optional fields on every other one."""
    world = World(app)
    org = world.org()
    admin = world.user(org, Role.ADMIN, factor=False)
    caller = Caller(admin.id, org.id, Role.ADMIN, None, None, None)
    for i in range(count):
        details = {"address": f"{i} Rotation Street", "phone": f"+1 555 01{i:04}",
                   "emergency_contact": f"Kin of {i}", "notes": f"Note {i}"} if i % 2 else {}
        patients.register(world.session, world.rt, caller, mrn=f"ROT-{i}", name=f"Patient {i}",
                          date_of_birth=date(1950, 1, 1) + timedelta(days=i), nurse_ids=[],
                          patient_id=None, **details)
    world.commit()
    world.session.close()
    return org.id


def _fields(patient: Patient) -> list[tuple[str, str]]:
    return [(name, getattr(patient, PATIENT_PHI.attribute(name))) for name in PATIENT_PHI.names
            if getattr(patient, PATIENT_PHI.attribute(name)) is not None]


def stored_values(app: Flask) -> dict[tuple[uuid.UUID, str], str]:
    """Return every stored ciphertext, by (patient, field)."""
    with app.extensions["vigil.db"].sessions() as session:
        return {(patient.id, name): value for patient in session.scalars(select(Patient))
                for name, value in _fields(patient)}


def plaintexts(app: Flask) -> dict[tuple[uuid.UUID, str], str]:
    """Decrypt every stored value with `app`'s keys; any failure raises."""
    box = PhiCipher.from_keyring(app.extensions["vigil.runtime"].keys)
    with app.extensions["vigil.db"].sessions() as session:
        return {(patient.id, name): box.decrypt(value, PATIENT_PHI.place(patient, name))
                for patient in session.scalars(select(Patient))
                for name, value in _fields(patient)}


def key_ids(app: Flask) -> Counter:
    """Return how many stored values name each key id."""
    return Counter(value.split(".")[1] for value in stored_values(app).values())


def rows_by_key(app: Flask) -> Counter:
    """Return how many patient rows are wholly under one key id, and how many are mixed."""
    kids: dict[uuid.UUID, set[str]] = {}
    for (patient_id, _), value in stored_values(app).items():
        kids.setdefault(patient_id, set()).add(value.split(".")[1])
    return Counter(next(iter(found)) if len(found) == 1 else "mixed" for found in kids.values())


def vigil(app: Flask, *args: str):
    """Run `vigil ARGS` in-process against `app`; return click's result."""
    return app.test_cli_runner().invoke(cli, list(args))


def succeeded(result) -> str:
    """Assert the command exited 0 and return its output."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_rotation_moves_every_value_to_the_new_key_and_all_still_decrypt(apps):
    old = apps("old", active="old")
    organisation_id = seed(old, 12)
    before = plaintexts(old)
    assert set(key_ids(old)) == {"old"}
    new = apps("old", "new", active="new")
    output = succeeded(vigil(new, "keys", "rotate", "--batch-size", "5"))
    assert "every value is under key new" in output
    assert key_ids(new) == Counter({"new": len(before)})
    assert plaintexts(new) == before
    assert plaintexts(apps("new", active="new")) == before
    status = succeeded(vigil(new, "keys", "status"))
    assert "key old: 0 values; it can be removed from VIGIL_PHI_KEYS" in status
    assert "patient.name" in status
    with new.extensions["vigil.db"].sessions() as session:
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "phi.rotate"))
        assert {(e.organisation_id, e.detail["key_id"]) for e in audited} == {
            (organisation_id, "new")}


def test_status_counts_values_per_key_per_column(apps):
    seed(apps("old", active="old"), 6)
    new = apps("old", "new", active="new")
    succeeded(vigil(new, "keys", "rotate", "--batch-size", "2", "--max-batches", "1"))
    status = succeeded(vigil(new, "keys", "status")).splitlines()
    assert ["patient.name", "new", "2"] in [line.split() for line in status]
    assert ["patient.name", "old", "4"] in [line.split() for line in status]
    assert "active key: new" in status
    assert not any("can be removed" in line for line in status)


def test_rotation_stopped_after_one_batch_resumes(apps):
    old = apps("old", active="old")
    seed(old, 12)
    before = plaintexts(old)
    new = apps("old", "new", active="new")
    output = succeeded(vigil(new, "keys", "rotate", "--batch-size", "5", "--max-batches", "1"))
    assert "7 rows still hold values under older keys; run again to continue" in output
    assert rows_by_key(new) == Counter({"new": 5, "old": 7})
    assert plaintexts(new) == before
    succeeded(vigil(new, "keys", "rotate", "--batch-size", "5"))
    assert rows_by_key(new) == Counter({"new": 12})
    assert plaintexts(new) == before


def test_a_failure_inside_a_batch_rolls_back_only_that_batch(apps, monkeypatch):
    old = apps("old", active="old")
    seed(old, 30)
    before = plaintexts(old)
    new = apps("old", "new", active="new")
    encrypt, calls = PhiCipher.encrypt, Counter()

    def failing_encrypt(self, plaintext, place):
        calls["encrypt"] += 1
        # Past two whole batches (at most 2 × 5 rows × 7 fields), so inside a later one.
        if calls["encrypt"] == 73:
            raise RuntimeError("disk on fire")
        return encrypt(self, plaintext, place)

    monkeypatch.setattr(PhiCipher, "encrypt", failing_encrypt)
    failed = vigil(new, "keys", "rotate", "--batch-size", "5")
    assert isinstance(failed.exception, RuntimeError)
    rows = rows_by_key(new)
    assert "mixed" not in rows
    assert rows["new"] >= 10
    assert rows["new"] % 5 == 0
    assert rows["old"] > 0
    assert plaintexts(new) == before
    monkeypatch.setattr(PhiCipher, "encrypt", encrypt)
    succeeded(vigil(new, "keys", "rotate", "--batch-size", "5"))
    assert rows_by_key(new) == Counter({"new": 30})
    assert plaintexts(new) == before


def test_rotation_refuses_when_stored_values_name_an_unconfigured_key(apps):
    seed(apps("old", active="old"), 3)
    new_only = apps("new", active="new")
    refused = vigil(new_only, "keys", "rotate")
    assert refused.exit_code == 1
    assert "not configured: 'old'" in refused.output
    assert set(key_ids(new_only)) == {"old"}
    assert "key 'old': NOT CONFIGURED" in succeeded(vigil(new_only, "keys", "status"))


def test_an_unreadable_value_stops_rotation_naming_it(apps):
    old = apps("old", active="old")
    seed(old, 2)
    with old.extensions["vigil.db"].sessions() as session:
        first, second = session.scalars(select(Patient).order_by(Patient.id)).all()
        first.name_enc = second.name_enc
        session.commit()
    refused = vigil(apps("old", "new", active="new"), "keys", "rotate")
    assert refused.exit_code == 1
    assert f"patient.name of row {first.id} fails its integrity check" in refused.output


def test_rotation_covers_every_sealed_value_append_only_tables_included(apps, clock):
    """Signed bodies, payloads, notes and the ledger's details move too, and read the same."""
    seeder = seed_every_field(apps("old", active="old"), clock)
    new = apps("old", "new", active="new")
    before = seeder.reads(new)
    assert "every value is under key new" in succeeded(
        vigil(new, "keys", "rotate", "--batch-size", "7"))
    status = succeeded(vigil(new, "keys", "status"))
    assert "key old: 0 values; it can be removed from VIGIL_PHI_KEYS" in status
    listed = {line.split()[0] for line in status.splitlines() if "." in line.split()[0]}
    # The seed fills every encrypted column, and status counts each of them.
    assert listed == {f"{declared.table}.{name}" for declared in encrypted_columns()
                      for name in declared.names}
    new_only = apps("new", active="new")
    assert seeder.reads(new_only) == before
    assert succeeded(vigil(new_only, "ledger", "verify"))


@pytest.fixture
def dev_instance(tmp_path):
    """Return a factory of development apps on a fresh instance folder."""
    made = []

    def factory(**overrides) -> Flask:
        app = create_app({"INSTANCE_PATH": tmp_path, "DATABASE_URL": "sqlite://",
                          "VIGIL_ENV": "development", **FAST_ARGON2, **overrides})
        made.append(app)
        return app

    yield factory
    for app in made:
        app.extensions["vigil.db"].engine.dispose()


def test_add_appends_a_development_key_and_makes_it_active(dev_instance, tmp_path):
    first = dev_instance().extensions["vigil.runtime"].keys
    added = succeeded(vigil(dev_instance(), "keys", "add")).split()[3]
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.loads(key_file.read_text())["PHI_ACTIVE_KEY"] == added
    keys = dev_instance().extensions["vigil.runtime"].keys
    assert keys.phi_active == added != first.phi_active
    assert keys.phi_keys == {**first.phi_keys, added: keys.phi_keys[added]}


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"VIGIL_ENV": "production", "PHI_KEYS": phi_keys("old"), "SECRET_KEY": OTHER_KEYS[
        "VIGIL_SECRET_KEY"], "SIGNING_KEY": OTHER_KEYS["VIGIL_SIGNING_KEY"],
      "BLIND_INDEX_KEY": OTHER_KEYS["VIGIL_BLIND_INDEX_KEY"]}, "refused in production"),
    ({"PHI_KEYS": phi_keys("old")}, "come from VIGIL_PHI_KEYS"),
])
def test_add_refuses_keys_it_does_not_own(dev_instance, tmp_path, overrides, reason):
    app = dev_instance(**overrides)
    key_file = tmp_path / KEY_FILE
    before = key_file.read_text() if key_file.exists() else None
    refused = vigil(app, "keys", "add")
    assert refused.exit_code == 1
    assert reason in refused.output
    assert (key_file.read_text() if key_file.exists() else None) == before


def _environment(tmp_path: Path, url: str, *kids: str) -> dict[str, str]:
    return {**os.environ, **OTHER_KEYS, "VIGIL_INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": url, "VIGIL_ENV": "test", "VIGIL_PHI_KEYS": phi_keys(*kids),
            "VIGIL_PHI_ACTIVE_KEY": kids[-1], "PYTHONUNBUFFERED": "1"}


def _file_app(tmp_path: Path, url: str, *kids: str) -> Flask:
    return create_app({"INSTANCE_PATH": tmp_path, "DATABASE_URL": url, "VIGIL_ENV": "test",
                       "PHI_KEYS": phi_keys(*kids), "PHI_ACTIVE_KEY": kids[-1],
                       "SECRET_KEY": OTHER_KEYS["VIGIL_SECRET_KEY"],
                       "SIGNING_KEY": OTHER_KEYS["VIGIL_SIGNING_KEY"],
                       "BLIND_INDEX_KEY": OTHER_KEYS["VIGIL_BLIND_INDEX_KEY"], **FAST_ARGON2})


def test_a_killed_rotation_leaves_everything_readable_and_a_rerun_finishes(tmp_path):
    """Acceptance: SIGKILL a real `vigil keys rotate` between batches, then run it again."""
    url = f"sqlite:///{tmp_path / 'rotate.sqlite3'}"
    old = _file_app(tmp_path, url, "old")
    schema.upgrade(old.extensions["vigil.db"].engine)
    seed(old, 300)
    before = plaintexts(old)
    both = _file_app(tmp_path, url, "old", "new")
    log = tmp_path / "rotate.log"
    with log.open("w") as out:
        process = subprocess.Popen(  # noqa: S603 - our own command, no shell
            [*VIGIL, "keys", "rotate", "--batch-size", "5", "--pause", "0.05"], cwd=PROJECT_ROOT,
            env=_environment(tmp_path, url, "old", "new"), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while rows_by_key(both)["new"] < 5:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no batch was committed in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(TIMEOUT) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    interrupted = rows_by_key(both)
    assert 5 <= interrupted["new"] < 300, log.read_text()
    assert "mixed" not in interrupted
    assert plaintexts(both) == before
    rerun = subprocess.run(  # noqa: S603 - our own command, no shell
        [*VIGIL, "keys", "rotate", "--batch-size", "5"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, env=_environment(tmp_path, url, "old", "new"), timeout=TIMEOUT, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert rows_by_key(both) == Counter({"new": 300})
    new_only = _file_app(tmp_path, url, "new")
    assert plaintexts(new_only) == before
    for app in (old, both, new_only):
        app.extensions["vigil.db"].engine.dispose()
