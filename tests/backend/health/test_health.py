"""Liveness answers while the process is up; readiness only when the database answers at the
code's schema and the keys are loaded; both are in the OpenAPI document."""

from __future__ import annotations

import dataclasses

import pytest

from backend import create_app, schema
from backend.health.resources import HEADS
from tests.backend.conftest import make_app

READY = {"status": "ready", "checks": {"database": "ok", "schema": "ok", "keys": "ok"}}
UNREACHABLE = [
    pytest.param("postgresql+psycopg://nobody@127.0.0.1:1/none", id="postgresql"),
    pytest.param("sqlite:////nonexistent-vigil-dir/vigil.sqlite3", id="sqlite"),
]


@pytest.fixture(params=UNREACHABLE)
def unreachable_app(request, tmp_path):
    """Yield an app whose database cannot be reached (a closed port, a missing folder)."""
    app = create_app({"DATABASE_URL": request.param, "INSTANCE_PATH": tmp_path,
                      "VIGIL_ENV": "test"})
    yield app
    app.extensions["vigil.db"].engine.dispose()


@pytest.fixture
def app_on_empty(empty_engine, instance_path, clock):
    """Yield an app on the test's own empty database (SQLite and PostgreSQL)."""
    app = make_app(empty_engine.url.render_as_string(hide_password=False), instance_path, clock)
    yield app
    app.extensions["vigil.db"].engine.dispose()


def test_healthz_is_ok_while_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_healthz_stays_ok_when_the_database_is_unreachable(unreachable_app):
    # A liveness probe that failed here would have healthy processes restarted in an outage.
    response = unreachable_app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_ok_on_a_migrated_database_with_the_keys_loaded(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == READY


def test_readyz_is_503_when_the_database_is_unreachable(unreachable_app):
    response = unreachable_app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "not_ready", "checks": {
        "database": "failed", "schema": "skipped", "keys": "ok"}}


def test_readyz_is_503_until_the_schema_reaches_the_head(app_on_empty, empty_engine):
    client = app_on_empty.test_client()
    behind = {"status": "not_ready", "checks": {
        "database": "ok", "schema": "failed", "keys": "ok"}}
    empty = client.get("/readyz")
    assert (empty.status_code, empty.json) == (503, behind)

    schema.upgrade(empty_engine, "0001")
    older = client.get("/readyz")
    assert (older.status_code, older.json) == (503, behind)

    # The heads were read at startup; the database's revision is read at each probe.
    schema.upgrade(empty_engine)
    upgraded = client.get("/readyz")
    assert (upgraded.status_code, upgraded.json) == (200, READY)


def test_readyz_is_503_when_the_database_is_past_the_code(app):
    # Code rolled back under a newer schema is not ready either.
    app.extensions[HEADS] = frozenset({"0001"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "ok", "schema": "failed", "keys": "ok"}


@pytest.mark.parametrize("missing", [
    pytest.param({"token_secret": b""}, id="token_secret"),
    pytest.param({"blind_index_key": b""}, id="blind_index_key"),
    pytest.param({"phi_keys": {}}, id="phi_keys"),
    pytest.param({"phi_active": "unknown"}, id="phi_active"),
    pytest.param({"signing_key": None}, id="signing_key"),
])
def test_readyz_is_503_when_a_key_is_missing(app, missing):
    runtime = app.extensions["vigil.runtime"]
    app.extensions["vigil.runtime"] = dataclasses.replace(
        runtime, keys=dataclasses.replace(runtime.keys, **missing))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "not_ready", "checks": {
        "database": "ok", "schema": "ok", "keys": "failed"}}


def test_the_script_heads_are_the_revision_upgrade_leads_to(engine):
    assert schema.heads() == {schema.current(engine)}


def test_both_probes_are_documented_and_need_no_token(client):
    spec = client.get("/api/v1/openapi.json").json
    for path in ("/healthz", "/readyz"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [], path
        assert "200" in operation["responses"], path
    readiness = spec["paths"]["/readyz"]["get"]["responses"]
    assert readiness["503"]["content"]["application/json"]["schema"] == (
        readiness["200"]["content"]["application/json"]["schema"])
    assert not any(path.startswith("/api/v1/healthz") or path.startswith("/api/v1/readyz")
                   for path in spec["paths"])
