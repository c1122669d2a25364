"""Every error leaves through one JSON shape, and a refused request changes nothing."""

from __future__ import annotations

import pytest

from backend import logs
from backend.accounts.models import Role
from tests.backend.conftest import make_app
from tests.factories import World

NEW_USER = {"username": "newcomer", "display_name": "New Comer", "role": "nurse",
            "password": "a long enough password"}
SMALL_LIMIT = 1024


def error_of(response, status: int, code: str) -> dict:
    """Assert `response` is a Vigil error with `status` and `code`; return its error object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert set(response.json) == {"error"}
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    return error


def usernames(client, headers: dict) -> list[str]:
    """Return the usernames the admin behind `headers` can see."""
    response = client.get("/api/v1/users", headers=headers)
    assert response.status_code == 200, response.json
    return sorted(user["username"] for user in response.json)


def test_malformed_json_is_400(client):
    response = client.post("/api/v1/auth/login", data='{"org": ',
                           content_type="application/json")
    error = error_of(response, 400, "malformed_json")
    assert error["details"] == {"location": "json"}


def test_unknown_body_field_is_422_naming_it(client):
    body = {"org": "acme", "username": "alice", "password": "secret", "bogus": 1}
    error = error_of(client.post("/api/v1/auth/login", json=body), 422, "validation_error")
    assert error["details"]["location"] == "json"
    assert list(error["details"]["fields"]) == ["bogus"]
    assert "bogus" in error["message"]


def test_unknown_query_parameter_is_422_naming_it(client, world):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.COMPLIANCE))
    response = client.get("/api/v1/audit-events?bogus=1", headers=headers)
    error = error_of(response, 422, "validation_error")
    assert error["details"]["location"] == "query"
    assert list(error["details"]["fields"]) == ["bogus"]


def test_known_query_parameter_is_accepted(client, world):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.COMPLIANCE))
    assert client.get("/api/v1/audit-events?limit=5", headers=headers).status_code == 200


def test_wrong_role_type_is_422_naming_the_field(client, world):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.ADMIN))
    response = client.post("/api/v1/users", headers=headers, json={**NEW_USER, "role": 5})
    error = error_of(response, 422, "validation_error")
    assert list(error["details"]["fields"]) == ["role"]


def test_malformed_uuid_is_422_naming_the_field(client):
    body = {"org": "acme", "username": "alice", "password": "secret",
            "device_id": "not-a-uuid"}
    error = error_of(client.post("/api/v1/auth/login", json=body), 422, "validation_error")
    assert list(error["details"]["fields"]) == ["device_id"]


def test_every_missing_field_is_named(client):
    error = error_of(client.post("/api/v1/auth/login", json={}), 422, "validation_error")
    assert set(error["details"]["fields"]) == {"org", "username", "password"}


@pytest.fixture
def small_app(database_url, instance_path, clock, connection):
    """Return an app that accepts bodies of at most SMALL_LIMIT bytes, in the test's transaction."""
    app = make_app(database_url, instance_path, clock, MAX_CONTENT_LENGTH=SMALL_LIMIT)
    app.extensions["vigil.db"].use_connection(connection)
    yield app
    app.extensions["vigil.db"].engine.dispose()


def test_oversized_body_is_413_and_changes_nothing(small_app, client, world):
    small = World(small_app)
    org = small.org()
    headers = small.headers(org, small.user(org, Role.ADMIN))
    before = usernames(small.client, headers)
    # Valid apart from its size: passwords may be up to 1024 characters.
    body = {**NEW_USER, "password": "p" * 1000}
    response = small.client.post("/api/v1/users", headers=headers, json=body)
    error_of(response, 413, "payload_too_large")
    assert usernames(small.client, headers) == before
    # The same body passes under the default limit, so the 413 was about size alone.
    assert client.post("/api/v1/users", headers=headers, json=body).status_code == 201


def test_unknown_url_is_404_in_the_shape(client):
    error_of(client.get("/api/v1/no-such-thing"), 404, "not_found")


def test_wrong_method_is_405_with_allow(client):
    response = client.put("/api/v1/auth/login", json={})
    error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.fixture
def failing_app(app):
    """Return `app` with a test-only route that fails unexpectedly."""

    def explode():
        # Built at run time, so that the traceback's source line does not spell it.
        raise RuntimeError(" ".join(("secret", "detail")))

    app.add_url_rule("/test-only/explode", "test_only_explode", explode)
    return app


def test_unexpected_error_is_500_without_details(failing_app, caplog):
    response = failing_app.test_client().get("/test-only/explode")
    error_of(response, 500, "internal_error")
    body = response.get_data(as_text=True)
    assert "secret detail" not in body
    assert "Traceback" not in body
    assert "RuntimeError" not in body
    # Operators still need the cause: its type and where it was raised go to the log; its text,
    # which may quote a record's PHI, goes nowhere (backend/logs.py).
    [logged] = [record for record in caplog.records if record.exc_info]
    line = logs.JsonLines().format(logged)
    assert "RuntimeError" in line and "explode" in line
    assert "secret detail" not in line


def test_failed_validation_changes_nothing(client, world):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.ADMIN))
    before = usernames(client, headers)
    response = client.post("/api/v1/users", headers=headers, json={**NEW_USER, "bogus": 1})
    error_of(response, 422, "validation_error")
    assert usernames(client, headers) == before
    # Without the unknown field the same request succeeds, so the refusal was about it alone.
    assert client.post("/api/v1/users", headers=headers, json=NEW_USER).status_code == 201
    assert "newcomer" in usernames(client, headers)
