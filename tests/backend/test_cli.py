"""The `vigil` command migrates, creates organisations and users, seeds the demo once, and lists
the users without a second factor."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import func, select

from backend import create_app, schema
from backend.accounts.models import Organisation, Role, User
from backend.cli import cli
from backend.db import build_engine
from tests.backend.mfa.authenticator import begin, enrol
from tests.factories import World

PASSWORD = "a long enough password"


@pytest.fixture
def database_file(tmp_path, monkeypatch):
    """Point the command at a fresh instance folder and SQLite file; return the file's URL."""
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    settings = {"VIGIL_INSTANCE_PATH": str(tmp_path), "DATABASE_URL": url,
                # Cheap argon2 parameters keep the tests fast.
                "VIGIL_ARGON2_TIME_COST": "1", "VIGIL_ARGON2_MEMORY_KIB": "1024",
                "VIGIL_ARGON2_PARALLELISM": "1"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return url


def vigil(*args: str, env: dict[str, str] | None = None):
    """Run `vigil ARGS` and return click's result."""
    return CliRunner(env=env).invoke(cli, list(args))


def succeeded(result) -> str:
    """Assert the command exited 0 and return what it printed."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def demo_logins(printed: str) -> dict[str, str]:
    """Return username → password from the output of `vigil demo`."""
    rows = [line.split() for line in printed.splitlines() if line.startswith("  ")]
    return {username: password for username, password in rows}


def login(org: str, username: str, password: str):
    """Sign in through the API of an app built from the same environment as the command."""
    app = create_app()
    try:
        return app.test_client().post("/api/v1/auth/login", json={
            "org": org, "username": username, "password": password})
    finally:
        app.extensions["vigil.db"].engine.dispose()


def count(url: str, statement) -> int:
    """Return the integer `statement` selects from the database at `url`."""
    engine = build_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(statement)
    finally:
        engine.dispose()


def test_db_upgrade_then_current(database_file):
    assert succeeded(vigil("db", "current")).strip() == "empty"
    assert "0001" in succeeded(vigil("db", "upgrade", "0001"))
    assert succeeded(vigil("db", "current")).strip() == "0001"
    head = ScriptDirectory(str(schema.MIGRATIONS)).get_current_head()
    succeeded(vigil("db", "upgrade"))
    assert succeeded(vigil("db", "current")).strip() == head


def test_db_downgrade_to_base_empties(database_file):
    succeeded(vigil("db", "upgrade"))
    succeeded(vigil("db", "downgrade", "base"))
    assert succeeded(vigil("db", "current")).strip() == "empty"


def test_org_create(database_file):
    succeeded(vigil("db", "upgrade"))
    printed = succeeded(vigil("org", "create", "acme", "--name", "Acme", "--dea", "FV0000000"))
    assert "created organisation acme" in printed
    assert count(database_file, select(func.count()).select_from(Organisation)
                 .where(Organisation.slug == "acme", Organisation.name == "Acme")) == 1


def test_org_create_refuses_a_bad_dea_number(database_file):
    succeeded(vigil("db", "upgrade"))
    result = vigil("org", "create", "acme", "--name", "Acme", "--dea", "FV0000001")
    assert result.exit_code != 0
    assert "dea_registration" in result.output
    assert "check digit" in result.output
    assert count(database_file, select(func.count()).select_from(Organisation)) == 0


def test_org_create_refuses_a_taken_slug(database_file):
    succeeded(vigil("db", "upgrade"))
    succeeded(vigil("org", "create", "acme", "--name", "Acme", "--dea", "FV0000000"))
    result = vigil("org", "create", "acme", "--name", "Other", "--dea", "FV0000000")
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_user_create_takes_the_password_from_the_environment(database_file):
    succeeded(vigil("db", "upgrade"))
    succeeded(vigil("org", "create", "acme", "--name", "Acme", "--dea", "FV0000000"))
    printed = succeeded(vigil("user", "create", "--org", "acme", "--role", "nurse", "alice",
                              env={"VIGIL_PASSWORD": PASSWORD}))
    assert "created nurse alice in acme" in printed
    assert login("acme", "alice", PASSWORD).status_code == 200
    assert login("acme", "alice", "not the password").status_code == 401


def test_user_create_refuses_an_unknown_organisation(database_file):
    succeeded(vigil("db", "upgrade"))
    result = vigil("user", "create", "--org", "nowhere", "--role", "nurse", "alice",
                   env={"VIGIL_PASSWORD": PASSWORD})
    assert result.exit_code != 0
    assert "nowhere" in result.output
    assert count(database_file, select(func.count()).select_from(User)) == 0


def test_demo_is_idempotent_and_its_logins_work(database_file):
    first = demo_logins(succeeded(vigil("demo")))
    second = demo_logins(succeeded(vigil("demo")))
    assert second == first
    assert set(first) == {"demo-admin", "demo-prescriber", "demo-pharmacist", "demo-nurse",
                          "demo-compliance"}
    assert count(database_file, select(func.count()).select_from(Organisation)) == 1
    assert count(database_file, select(func.count()).select_from(User).join(Organisation)
                 .where(Organisation.slug == "demo")) == 5
    response = login("demo", "demo-nurse", first["demo-nurse"])
    assert response.status_code == 200, response.json
    assert response.json["access_token"]


def test_user_no_factor_lists_who_needs_a_factor_and_when_it_is_due(app, world: World, clock):
    org, other = world.org(), world.org()
    # The World enrols desk users; these are in their enrolment grace without one.
    admin = world.user(org, Role.ADMIN)
    pending = world.user(org, Role.PRESCRIBER, factor=False)
    assert begin(world, world.headers(org, pending)).status_code == 201
    bare = world.user(org, Role.PHARMACIST, factor=False)
    removed = enrol(world, clock, org, world.user(org, Role.COMPLIANCE, factor=False))
    clock.advance(seconds=30)
    assert world.client.delete(f"/api/v1/me/factors/{removed.factor_id}", headers=removed.headers,
                               json={"code": removed.app.code()}).status_code == 204
    nurse = world.user(org, Role.NURSE)
    gone = world.user(org, Role.PHARMACIST, factor=False)
    assert world.client.patch(f"/api/v1/users/{gone.id}", headers=world.headers(org, admin),
                              json={"active": False}).status_code == 200
    elsewhere = world.user(other, Role.ADMIN, factor=False)

    def listed(*options: str) -> dict[tuple[str, str, str], str]:
        printed = succeeded(app.test_cli_runner().invoke(cli, ["user", "no-factor", *options]))
        *rows, total = printed.splitlines()
        assert total == f"{len(rows)} user(s) without a confirmed second factor"
        return {tuple(row.split()[:3]): row.split(")  ", 1)[1] for row in rows}

    due = f"due {org.created_at + timedelta(days=7):%Y-%m-%d %H:%M} UTC"
    ours = {(org.slug, user.role.value, user.username): due
            for user in (pending, bare, removed.user)}
    assert listed("--org", org.slug) == ours
    everyone = listed()
    assert everyone.items() >= (ours | {(other.slug, "admin", elsewhere.username): due}).items()
    assert not {username for _, _, username in everyone} & {
        admin.username, gone.username}
    assert "nurse" not in {role for _, role, _ in everyone}
    # Where the policy asks nurses for a factor, they are listed too; past the grace, overdue.
    world.session.get(Organisation, org.id).mfa_nurses = True
    world.commit()
    clock.advance(days=8)
    overdue = due.replace("due", "overdue since")
    assert listed("--org", org.slug) == {key: overdue for key in ours} | {
        (org.slug, "nurse", nurse.username): overdue}
    refused = app.test_cli_runner().invoke(cli, ["user", "no-factor", "--org", "nowhere"])
    assert refused.exit_code != 0 and "nowhere" in refused.output
