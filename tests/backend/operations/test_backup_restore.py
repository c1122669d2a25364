"""The restore drill of docs/operations.md on PostgreSQL, run with the operator's own commands.

`vigil db upgrade`, `vigil ledger checkpoint` and `vigil ledger verify` run as processes beside
pg_dump, createdb and pg_restore. The dump holds the data and nothing else: the keys are backed
up apart from it (PHI is ciphertext under them and the ledger's signatures need the server's
key), here the one instance folder every step shares; the checkpoint export directory lives
apart from both and is what shows that a restored dump is older than the ledger it replaced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from backend.accounts.models import Role
from backend.clock import FixedClock
from backend.config import PROJECT_ROOT
from tests.backend.conftest import IN_CI, POSTGRES_URL, START, make_app, require_postgres
from tests.factories import Pharmacy, World

# The same entry point as the installed `vigil` script, without depending on its install.
VIGIL = [sys.executable, "-c", "from backend.cli import main; main()"]
TIMEOUT = 120  # seconds for any one command: generous, for a loaded CI machine
TOOLS = ("pg_dump", "pg_restore", "createdb", "dropdb")
SERVER = make_url(POSTGRES_URL)
RECEIVED_UG = 500_000


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `command` to its end, bounded by TIMEOUT, and return what it printed."""
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,  # noqa: S603 - fixed commands, no shell
                          timeout=TIMEOUT, check=False)


def succeeded(done: subprocess.CompletedProcess) -> str:
    """Assert that a command succeeded; return its output."""
    assert done.returncode == 0, f"{done.args[-3:]}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class Site:
    """One installation: its keys' instance folder, its checkpoint export, its databases."""

    root: Path
    tools: dict[str, str]
    databases: list[str] = field(default_factory=list)

    @property
    def instance(self) -> Path:
        """Return the instance folder, where the development keys are generated once."""
        return self.root / "instance"

    @property
    def checkpoints(self) -> Path:
        """Return the checkpoint export directory, kept apart from the database."""
        return self.root / "checkpoints"

    def url(self, database: str) -> str:
        """Return the SQLAlchemy URL of `database` on the test server."""
        return SERVER.set(database=database).render_as_string(hide_password=False)

    def libpq(self, database: str) -> str:
        """Return the connection string the PostgreSQL tools take for `database`."""
        return SERVER.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False)

    def tool(self, name: str, *args: str) -> str:
        """Run one of the PostgreSQL tools against the test server."""
        connect = ["--host", SERVER.host or "127.0.0.1", "--port", str(SERVER.port or 5432),
                   "--username", SERVER.username or "postgres"]
        env = {**os.environ, "PGPASSWORD": SERVER.password or ""}
        return succeeded(run([self.tools[name], *connect, *args], env))

    def createdb(self, suffix: str) -> str:
        """Create an empty database named after the test one; dropped at teardown."""
        database = f"{SERVER.database}_{suffix}"
        self.tool("dropdb", "--if-exists", "--force", database)
        self.tool("createdb", database)
        self.databases.append(database)
        return database

    def dump(self, database: str, name: str) -> Path:
        """Take a custom-format dump of `database`, as the nightly backup does."""
        path = self.root / "dumps" / f"{name}.dump"
        path.parent.mkdir(exist_ok=True)
        succeeded(run([self.tools["pg_dump"], "--format=custom", "--file", str(path),
                       "--dbname", self.libpq(database)]))
        return path

    def restore(self, dump: Path, suffix: str) -> str:
        """Restore `dump` into a fresh database; return its name."""
        database = self.createdb(suffix)
        succeeded(run([self.tools["pg_restore"], "--no-owner", "--exit-on-error",
                       "--dbname", self.libpq(database), str(dump)]))
        return database

    def vigil(self, database: str, *args: str,
              instance: Path | None = None) -> subprocess.CompletedProcess:
        """Run a `vigil` command on `database` with this site's keys and checkpoint export."""
        env = {**os.environ, "DATABASE_URL": self.url(database), "VIGIL_ENV": "test",
               "VIGIL_INSTANCE_PATH": str(instance or self.instance),
               "VIGIL_CHECKPOINT_DIR": str(self.checkpoints)}
        return run([*VIGIL, *args], env)

    def app(self, database: str) -> Flask:
        """Build the application on `database` with this site's keys and checkpoint export."""
        return make_app(self.url(database), self.instance, FixedClock(START),
                        CHECKPOINT_DIR=self.checkpoints)


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path) -> Iterator[Site]:
    """Yield a site on PostgreSQL with the PostgreSQL tools; drop its databases afterwards."""
    if request.param == "sqlite":
        pytest.skip("the drill is pg_dump and pg_restore's; a SQLite site copies its file")
    require_postgres(POSTGRES_URL)
    tools = {name: shutil.which(name) for name in TOOLS}
    if missing := [name for name, path in tools.items() if path is None]:
        if IN_CI:
            pytest.fail(f"CI=true and {', '.join(missing)} not installed")
        pytest.skip(f"{', '.join(missing)} not installed")
    site = Site(tmp_path, tools)
    try:
        yield site
    finally:
        for database in site.databases:
            site.tool("dropdb", "--if-exists", "--force", database)


@dataclass
class Seeded:
    """A pharmacy with stock received and dispensed, committed on the site's first database."""

    database: str
    app: Flask
    world: World
    pharmacy: Pharmacy

    def receive(self, lot: str) -> None:
        """Append one more custody entry to the pharmacy's chain."""
        assert self.pharmacy.receive(RECEIVED_UG, lot).status_code == 201


@pytest.fixture
def seeded(site) -> Iterator[Seeded]:
    """Migrate the site's database with `vigil db upgrade` and seed custody entries and PHI."""
    database = site.createdb("backup_source")
    succeeded(site.vigil(database, "db", "upgrade"))
    app = site.app(database)
    world = World(app)
    try:
        pharmacy = Pharmacy(world)
        seeded = Seeded(database, app, world, pharmacy)
        seeded.receive("L1")
        seeded.receive("L2")
        assert pharmacy.dispense(100_000).status_code == 201
        yield seeded
    finally:
        world.session.close()
        app.extensions["vigil.db"].engine.dispose()


def checkpoint(site: Site, seeded: Seeded) -> str:
    """Sign the chain head with `vigil ledger checkpoint`; return what it printed."""
    signed = succeeded(site.vigil(seeded.database, "ledger", "checkpoint"))
    assert f"{seeded.pharmacy.org.slug}: signed seq" in signed, signed
    return signed


def read_patient(site: Site, database: str, seeded: Seeded) -> dict:
    """Find the seeded patient by MRN through the API of an app on `database`."""
    app = site.app(database)
    restored = World(app)
    try:
        # The restored second factors are the seeded ones: the same authenticators sign in.
        restored.authenticators = seeded.world.authenticators
        pharmacy = seeded.pharmacy
        headers = restored.headers(pharmacy.org, pharmacy.users[Role.ADMIN])
        mrn = seeded.world.client.get(f"/api/v1/patients/{pharmacy.patient_id}",
                                      headers=pharmacy.as_(Role.ADMIN)).json["mrn"]
        found = restored.client.get("/api/v1/patients", query_string={"mrn": mrn},
                                    headers=headers)
        assert found.status_code == 200, found.json
        return found.json
    finally:
        restored.session.close()
        app.extensions["vigil.db"].engine.dispose()


def test_a_restored_dump_verifies_against_the_kept_checkpoints(site, seeded):
    checkpoint(site, seeded)
    dump = site.dump(seeded.database, "nightly")
    restored = site.restore(dump, "restored")
    succeeded(site.vigil(restored, "db", "upgrade"))

    verified = site.vigil(restored, "ledger", "verify")

    slug = seeded.pharmacy.org.slug
    assert f"{slug}: 3 entries, 1 checkpoints checked, OK" in succeeded(verified)
    patients = read_patient(site, restored, seeded)
    assert [(p["id"], p["name"], p["date_of_birth"]) for p in patients] == [
        (seeded.pharmacy.patient_id, "Pat Test", "1970-01-01")]
    # The same dump without the kept keys: the entries' details no longer decrypt to what
    # their hashes cover, so the ledger fails at its first entry.
    keyless = site.vigil(restored, "ledger", "verify", instance=site.root / "new-instance")
    assert keyless.returncode != 0
    assert f"{slug}: FAILED at seq 1" in keyless.stdout


def test_restoring_a_dump_older_than_the_checkpoints_fails_verify(site, seeded):
    checkpoint(site, seeded)
    older = site.dump(seeded.database, "monday")
    seeded.receive("L3")
    seeded.receive("L4")
    assert "signed seq 5" in checkpoint(site, seeded)
    restored = site.restore(older, "stale")

    verified = site.vigil(restored, "ledger", "verify")

    assert verified.returncode != 0
    assert (f"{seeded.pharmacy.org.slug}: FAILED at seq 4: entry seq 4 is missing: a signed "
            "checkpoint covers seq 5, the entries end at 3; the chain went backwards"
            ) in verified.stdout
    assert "failed verification" in verified.stderr
    # The newer dump, taken after the last checkpoint, verifies: only the older one lost data.
    current = site.restore(site.dump(seeded.database, "tuesday"), "current")
    assert "5 entries, 2 checkpoints checked, OK" in succeeded(site.vigil(current, "ledger",
                                                                          "verify"))
