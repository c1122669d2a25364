"""Migration 0009 encrypts the free text rows already hold, and everything still reads the same.

A database is seeded at head, taken down to the revision before 0009 (which decrypts every
sealed value back into its clear column, as the data stood before), then up again: the clear
text is found before and gone after, every read answers as it did, the ledger verifies, each
phone's signature checks over the decrypted body, and retries are still recognised.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import inspect, select, text

from backend import create_app, schema
from backend.accounts.models import Role
from backend.administration.models import SignedRecord
from backend.cli import cli
from backend.clock import FixedClock
from backend.devices.models import Device
from backend.devices.signatures import verify_with_key
from backend.phi.cipher import PhiCipher
from backend.phi.registry import encrypted_columns
from backend.visits.models import EvvEvent
from tests.backend.conftest import FAST_ARGON2, START
from tests.backend.phi.seeded import FIELDS, Seeder, needle, seed
from tests.backend.phi.test_phi_dump import dumped, needles_in, own_postgres, sqlite_bytes

KEYS = {"PHI_KEYS": f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}",
        "PHI_ACTIVE_KEY": "k1"}
SCRIPTS = ScriptDirectory(str(schema.MIGRATIONS))
BEFORE = SCRIPTS.get_revision("0009").down_revision
# Fields whose column a later revision adds: they are dropped on the way down, not decrypted.
ADDED_AFTER_0009 = {"plan_dose_justification"}


def _app(tmp_path: Path, url: str) -> Flask:
    return create_app({"INSTANCE_PATH": tmp_path, "DATABASE_URL": url, "VIGIL_ENV": "test",
                       "CLOCK": FixedClock(START), **KEYS, **FAST_ARGON2})


def _signatures_hold(app: Flask) -> int:
    """Check each stored phone signature over its decrypted body; return how many."""
    checked = 0
    with app.extensions["vigil.db"].sessions() as session:
        for model in (*SignedRecord.__subclasses__(), EvvEvent):
            for record in session.scalars(select(model)):
                if record.signed_body is None:
                    continue
                device = session.get(Device, record.device_id)
                verify_with_key(device.public_key, record.signed_body, record.device_signature)
                checked += 1
    return checked


def _retries_are_recognised(app: Flask, seeder: Seeder) -> None:
    client = app.test_client()
    visit_id, dose = seeder.dose
    again = client.post(f"/api/v1/visits/{visit_id}/dose", headers=seeder.as_(
        Role.NURSE, phone=True), json=dose)
    assert again.status_code == 201, again.json
    cursor, discharge = seeder.resent
    resent = seeder.push(seeder.as_(Role.NURSE, phone=True), cursor, {"discharges": [discharge]})
    assert (resent.status_code, resent.json["quarantined"]) == (200, []), resent.json
    assert resent.json["unchanged"] == {"discharges": 1}


def _before_0016(reads: dict[str, object]) -> dict[str, object]:
    """Return the reads without the patient's sex, a column 0016 adds: gone on the way down."""
    return {**reads, "patients": [{name: value for name, value in patient.items()
                                   if name != "sex"} for patient in reads["patients"]]}


def _before_0018(reads: dict[str, object]) -> dict[str, object]:
    """Return the reads without each flag's occurrences, which 0018 counts afresh: coming back
    up, a flag is a case of one occurrence, its own key."""
    case = ("occurrences", "occurrence_key", "occurrence_list")
    return {**reads, "flags": [{name: value for name, value in flag.items() if name not in case}
                               for flag in reads["flags"]]}


def _migrate_round_trip(app: Flask, raw) -> None:
    """Seed at head, go below 0009 and back up; check what is stored and what is read."""
    engine = app.extensions["vigil.db"].engine
    phi = PhiCipher.from_keyring(app.extensions["vigil.runtime"].keys)
    schema.upgrade(engine)
    seeder = seed(app, app.extensions["vigil.runtime"].clock)
    before = seeder.reads(app)

    schema.downgrade(engine, BEFORE, phi)
    # Tables made after 0009 (second factors) go on the way down and come back empty.
    tables = set(inspect(engine).get_table_names())
    clear = needles_in(raw(), seeder.slug)
    # Every field the seed wrote into holds clear text below 0009: the seed reached them all.
    assert {needle(field) for field in FIELDS if field not in ADDED_AFTER_0009} <= set(clear)

    schema.upgrade(engine, "head", phi)
    assert needles_in(raw(), seeder.slug) == []
    assert _before_0018(_before_0016(seeder.reads(app))) == _before_0018(_before_0016(before))
    verified = app.test_cli_runner().invoke(cli, ["ledger", "verify"])
    assert verified.exit_code == 0, verified.output
    # Five REST records, a discharge of a whole session, a check-in and two records by sync.
    assert _signatures_hold(app) == 9
    _retries_are_recognised(app, seeder)
    status = app.test_cli_runner().invoke(cli, ["keys", "status"]).output
    for declared in encrypted_columns():
        assert declared.table in status or declared.table not in tables


def test_upgrading_sqlite_encrypts_what_rows_hold(tmp_path):
    app = _app(tmp_path, f"sqlite:///{tmp_path / 'vigil.sqlite3'}")
    try:
        _migrate_round_trip(app, lambda: sqlite_bytes(tmp_path, "vigil.sqlite3"))
    finally:
        app.extensions["vigil.db"].engine.dispose()


@pytest.fixture
def pg_dump() -> str:
    """Return the path of pg_dump; skip without it."""
    path = shutil.which("pg_dump")
    if path is None:
        pytest.skip("pg_dump is not installed")
    return path


@pytest.fixture
def pg_app(tmp_path) -> Iterator[tuple[Flask, str]]:
    """Yield an app on an empty PostgreSQL database of its own, and its URL."""
    with own_postgres("phi_migration") as url:
        app = _app(tmp_path, url)
        try:
            yield app, url
        finally:
            app.extensions["vigil.db"].engine.dispose()


def test_upgrading_postgresql_encrypts_what_rows_hold(pg_app, pg_dump):
    app, url = pg_app
    _migrate_round_trip(app, lambda: dumped(pg_dump, url))


def test_the_revision_refuses_to_run_without_the_keys(tmp_path):
    app = _app(tmp_path, f"sqlite:///{tmp_path / 'vigil.sqlite3'}")
    engine = app.extensions["vigil.db"].engine
    try:
        schema.upgrade(engine)
        seed(app, app.extensions["vigil.runtime"].clock)
        with pytest.raises(RuntimeError, match="needs the PHI keys"):
            schema.downgrade(engine, BEFORE)
        assert schema.current(engine) == SCRIPTS.get_current_head()
    finally:
        engine.dispose()


APPEND_ONLY = ("pre_dose", "dose_administration", "monitoring_observation", "discharge",
               "outcome_score", "quarantined_event", "evv_event", "custody_entry", "flag_event")


def _update_trigger(connection, table: str) -> str:
    """Return the definition of the trigger that refuses UPDATEs on `table`."""
    if connection.dialect.name == "postgresql":
        return connection.scalar(text(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = :name"),
            {"name": f"{table}_append_only"})
    return connection.scalar(text("SELECT sql FROM sqlite_master WHERE name = :name"),
                             {"name": f"{table}_no_update"})


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_append_only_tables_let_only_their_ciphertext_be_rewritten(engine, table):
    """Key rotation may rewrite a row's ciphertext; every other column, now and added later,
    stays refused: the trigger names them all."""
    sealed = {declared.attribute(name) for declared in encrypted_columns()
              if declared.table == table for name in declared.names}
    assert sealed, f"{table} holds no ciphertext"
    with engine.connect() as connection:
        definition = _update_trigger(connection, table)
        columns = {column["name"] for column in inspect(connection).get_columns(table)}
    guarded = re.search(r"UPDATE OF (.+?) (?:OR|ON) ", definition).group(1)
    assert {name.strip().strip('"') for name in guarded.split(",")} == columns - sealed
