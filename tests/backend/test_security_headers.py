"""Every response carries the security headers: answers, errors, CSV, health, the docs and
their assets."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from flask import Flask

from backend.accounts.models import Role
from backend.api import SWAGGER_UI_URL
from backend.security_headers import API_POLICY, HSTS
from tests.backend.conftest import make_app
from tests.factories import World

ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
          "X-Frame-Options": "DENY"}
DOCS_ASSETS = ["swagger-ui.css", "swagger-ui-standalone-preset.js", "swagger-ui-bundle.js"]


@pytest.fixture
def headers(world: World) -> dict:
    """Return a pharmacist's Authorization header."""
    org = world.org()
    return world.headers(org, world.user(org, Role.PHARMACIST))


@pytest.fixture
def failing_app(app: Flask) -> Flask:
    """Return the app with one route that fails as no route should."""

    def boom():
        raise RuntimeError("an unexpected failure")

    app.add_url_rule("/boom", "boom", boom)
    return app


# Each request → the status and content type its answer has.
ANSWERS = {
    "a JSON answer": (lambda c, h: c.get("/api/v1/products", headers=h), 200,
                      "application/json"),
    "a CSV answer": (lambda c, h: c.get("/api/v1/custody/reports/inventory?format=csv",
                                        headers=h), 200, "text/csv"),
    "a write": (lambda c, h: c.post("/api/v1/auth/logout", headers=h), 204, None),
    "the health check": (lambda c, h: c.get("/healthz"), 200, "application/json"),
    "the OpenAPI document": (lambda c, h: c.get("/api/v1/openapi.json"), 200,
                             "application/json"),
    "no token": (lambda c, h: c.get("/api/v1/products"), 401, "application/json"),
    "a role refused": (lambda c, h: c.get("/api/v1/users", headers=h), 403, "application/json"),
    "an unknown route": (lambda c, h: c.get("/api/v1/nowhere", headers=h), 404,
                         "application/json"),
    "a wrong method": (lambda c, h: c.delete("/api/v1/products", headers=h), 405,
                       "application/json"),
    "a body refused": (lambda c, h: c.post("/api/v1/products", json={"name": 1}, headers=h),
                       422, "application/json"),
    "a wrong login": (lambda c, h: c.post("/api/v1/auth/login", json={
        "org": "nowhere", "username": "nobody", "password": "x"}), 401, "application/json"),
    "a server error": (lambda c, h: c.get("/boom"), 500, "application/json"),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_every_answer_carries_the_security_headers(failing_app: Flask, headers: dict,
                                                    case: str):
    send, status, content_type = ANSWERS[case]
    response = send(failing_app.test_client(), headers)
    assert response.status_code == status, (case, response.get_data(as_text=True))
    if content_type:
        assert response.mimetype == content_type
    for name, value in ALWAYS.items():
        assert response.headers[name] == value, (case, name)
    assert response.headers["Content-Security-Policy"] == API_POLICY
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers


def _directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in
            (part.split() for part in policy.split(";") if part.strip())}


def test_the_docs_page_may_load_its_assets_from_this_origin_and_nothing_else(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    for name, value in ALWAYS.items():
        assert page.headers[name] == value
    policy = _directives(page.headers["Content-Security-Policy"])
    [script] = re.findall(rb"<script>(.*?)</script>", page.get_data(), re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert policy == {
        "default-src": ["'none'"],
        # The bundle and its preset from this origin; the bootstrap script, and only it, inline.
        "script-src": ["'self'", f"'sha256-{digest}'"],
        # The bundle sets inline styles as it renders.
        "style-src": ["'self'", "'unsafe-inline'"],
        # Its icons are SVG data: URIs in the stylesheet.
        "img-src": ["'self'", "data:"],
        # The spec, and "try it out".
        "connect-src": ["'self'"],
        "base-uri": ["'none'"], "form-action": ["'none'"], "frame-ancestors": ["'none'"]}
    # Keywords, hashes and data: only: no host, so the page needs no other.
    assert all(source.startswith("'") or source == "data:"
               for sources in policy.values() for source in sources)


@pytest.mark.parametrize("name", DOCS_ASSETS)
def test_the_docs_assets_may_be_cached_but_are_never_sniffed_or_framed(client, name):
    with client.get(f"{SWAGGER_UI_URL}{name}") as response:  # closes the file it streams
        assert response.status_code == 200
    for header, value in ALWAYS.items():
        assert response.headers[header] == value, header
    assert response.headers["Content-Security-Policy"] == API_POLICY
    # No PHI, and a versioned URL: a year, and no need to ask again.
    assert response.cache_control.public
    assert response.cache_control.max_age == 365 * 24 * 60 * 60
    assert response.cache_control.immutable


# TRUST_PROXY, the X-Forwarded-Proto a client sends, the scheme the server saw → HSTS sent.
HSTS_CASES = [
    (False, None, "http", False),
    (False, "https", "http", False),
    (True, "https", "http", True),
    (True, "http", "http", False),
    (True, None, "http", False),
    (False, None, "https", True),
]


@pytest.mark.parametrize(("trust_proxy", "forwarded", "scheme", "sent"), HSTS_CASES)
def test_hsts_only_over_tls_or_from_a_trusted_proxy_that_says_so(
        database_url, instance_path, clock, trust_proxy, forwarded, scheme, sent):
    app = make_app(database_url, instance_path, clock, TRUST_PROXY=trust_proxy)
    try:
        response = app.test_client().get(
            "/healthz", base_url=f"{scheme}://vigil.example",
            headers={"X-Forwarded-Proto": forwarded} if forwarded else {})
    finally:
        app.extensions["vigil.db"].engine.dispose()
    assert response.status_code == 200
    assert response.headers.get("Strict-Transport-Security") == (HSTS if sent else None)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
