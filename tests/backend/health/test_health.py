"""The health check tells a load balancer whether the database answers."""

from __future__ import annotations

import pytest

from backend import create_app


def test_healthz_is_ok_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("unreachable_url", [
    pytest.param("postgresql+psycopg://nobody@127.0.0.1:1/none", id="postgresql"),
    pytest.param("sqlite:////nonexistent-vigil-dir/vigil.sqlite3", id="sqlite"),
])
def test_healthz_is_503_when_the_database_is_unreachable(tmp_path, unreachable_url):
    app = create_app({"DATABASE_URL": unreachable_url, "INSTANCE_PATH": tmp_path,
                      "VIGIL_ENV": "test"})
    response = app.test_client().get("/healthz")
    app.extensions["vigil.db"].engine.dispose()
    assert response.status_code == 503
    assert response.json == {"status": "error", "database": "error"}
