"""Signing in to the console: the API's accounts and lockout, its cookie, idle sign-out, CSRF."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.auth.models import TokenFamily
from backend.console import service
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import World


@pytest.fixture
def office(world: World):
    org = world.org()
    return org, {role: world.user(org, role) for role in Role}


def _families(world: World, user) -> list[TokenFamily]:
    world.session.expire_all()
    return list(world.session.scalars(select(TokenFamily).where(TokenFamily.user_id == user.id)))


def _actions(world: World, user) -> list[str]:
    world.session.expire_all()
    return list(world.session.scalars(select(AuditEvent.action).where(
        AuditEvent.user_id == user.id).order_by(AuditEvent.occurred_at, AuditEvent.id)))


def test_sign_in_page_labels_its_fields(desk: Desk):
    page = desk.get("/console/login").get_data(as_text=True)
    for label in ("Organisation", "Username", "Password"):
        assert f">{label}</label>" in page
    assert '<button type="submit">Sign in</button>' in page
    assert page.count("<h1>") == 1


@pytest.mark.parametrize("role", [Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER])
def test_desk_roles_sign_in_with_a_strict_cookie(world: World, office, role):
    org, users = office
    desk = Desk(world.app.test_client())
    answer = desk.sign_in(org, users[role])
    assert answer.status_code == 302
    cookie = answer.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/console"):
        assert attribute in cookie
    assert "Secure" not in cookie
    home = desk.get("/console/")
    assert "/console/login" not in home.headers.get("Location", "")
    families = _families(world, users[role])
    assert len(families) == 1 and families[0].device_id is None
    assert "auth.login" in _actions(world, users[role])


def test_the_cookie_is_secure_over_tls(world: World, office):
    org, users = office
    desk = Desk(world.app.test_client())
    tls = {"base_url": "https://localhost",
           "headers": {"Referer": "https://localhost/console/login"}}
    desk.get("/console/login", **tls)
    answer = desk.post("/console/login", {"org": org.slug, "username":
                                          users[Role.COMPLIANCE].username,
                                          "password": "correct horse battery staple"}, **tls)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert "Secure" in answer.headers["Set-Cookie"]


def test_a_nurse_is_refused_and_no_session_opens(world: World, office):
    org, users = office
    answer = Desk(world.app.test_client()).sign_in(org, users[Role.NURSE])
    assert answer.status_code == 403
    assert "phone app" in answer.get_data(as_text=True)
    assert _families(world, users[Role.NURSE]) == []


def test_a_wrong_password_is_refused_beside_the_form(world: World, office):
    org, users = office
    answer = Desk(world.app.test_client()).sign_in(org, users[Role.PHARMACIST], "wrong")
    assert answer.status_code == 401
    page = answer.get_data(as_text=True)
    assert "Wrong organisation, username or password." in page
    assert "wrong" not in page.split("</header>")[1].replace("Wrong", "")
    assert _families(world, users[Role.PHARMACIST]) == []


def test_the_lockout_is_the_api_login_s(world: World, office):
    org, users = office
    user = users[Role.COMPLIANCE]
    desk = Desk(world.app.test_client())
    for _ in range(world.app.config["LOGIN_MAX_PER_ACCOUNT"]):
        assert desk.sign_in(org, user, "wrong").status_code == 401
    assert desk.sign_in(org, user).status_code == 429
    api = world.client.post("/api/v1/auth/login", json={
        "org": org.slug, "username": user.username, "password": "correct horse battery staple"})
    assert api.status_code == 429


def test_unstorable_text_is_refused_by_field(desk: Desk, office):
    org, _users = office
    answer = desk.post("/console/login", {"org": org.slug, "username": "a\x00b",
                                          "password": "x"})
    assert answer.status_code == 422
    assert "NUL" in answer.get_data(as_text=True)


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/",
                                    "/api/v1/me", "/console//elsewhere.example"])
def test_sign_in_goes_on_only_to_a_console_page(world: World, office, target):
    org, users = office
    answer = Desk(world.app.test_client(), world).sign_in(org, users[Role.ADMIN], next=target)
    assert answer.headers["Location"] == "/console/"


def test_a_page_asks_a_stranger_to_sign_in(desk: Desk):
    answer = desk.get("/console/")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/console/login")


def test_a_post_without_its_csrf_token_is_refused(world: World, office):
    org, users = office
    desk = signed_in(world, org, users[Role.ADMIN])
    answer = desk.post("/console/logout", token=False)
    assert answer.status_code == 400
    assert "Reload the page" in answer.get_data(as_text=True)
    assert _families(world, users[Role.ADMIN])[0].revoked_at is None


def test_sign_out_ends_the_session_on_the_server(world: World, office):
    org, users = office
    desk = signed_in(world, org, users[Role.ADMIN])
    cookie = desk.client.get_cookie("vigil_console", path="/console").value
    assert desk.post("/console/logout").status_code == 302
    assert _families(world, users[Role.ADMIN])[0].revoked_reason == "logout"
    # The old cookie, replayed, opens nothing.
    replay = Desk(world.app.test_client())
    replay.client.set_cookie("vigil_console", cookie, path="/console")
    assert replay.get("/console/").headers["Location"].startswith("/console/login")


def test_a_new_sign_in_gets_a_new_cookie(world: World, office):
    org, users = office
    desk = Desk(world.app.test_client())
    desk.get("/console/login")
    before = desk.client.get_cookie("vigil_console", path="/console").value
    desk.sign_in(org, users[Role.ADMIN])
    assert desk.client.get_cookie("vigil_console", path="/console").value != before


def test_fifteen_idle_minutes_sign_out(world: World, office, clock):
    org, users = office
    desk = signed_in(world, org, users[Role.COMPLIANCE])
    clock.advance(minutes=14)
    assert "/console/login" not in desk.get("/console/").headers.get("Location", "")
    clock.advance(minutes=14)
    assert "/console/login" not in desk.get("/console/").headers.get("Location", "")
    clock.advance(minutes=15)
    answer = desk.get("/console/")
    assert answer.headers["Location"].startswith("/console/login?ended=idle")
    assert "15 minutes without activity" in desk.get(answer.headers["Location"]).get_data(
        as_text=True)
    assert _families(world, users[Role.COMPLIANCE])[0].revoked_reason == "idle"
    assert "auth.console_idle" in _actions(world, users[Role.COMPLIANCE])


def test_polling_does_not_keep_a_session_alive(world: World, office, clock):
    org, users = office
    desk = signed_in(world, org, users[Role.COMPLIANCE])
    cookie = desk.client.get_cookie("vigil_console", path="/console").value
    token = world.app.session_interface.get_signing_serializer(world.app).loads(cookie)["sid"]
    limits = service.Limits(idle=timedelta(minutes=15), lifetime=timedelta(hours=12))
    clock.advance(minutes=10)
    assert service.resume(world.session, world.rt, token, None, limits,
                          touch=False).caller is not None
    clock.advance(minutes=10)
    polled = service.resume(world.session, world.rt, token, None, limits, touch=False)
    assert polled.caller is None and polled.ended == "idle"


def test_a_session_ends_after_its_lifetime(world: World, office, clock):
    org, users = office
    desk = signed_in(world, org, users[Role.ADMIN])
    for elapsed in range(14, 12 * 60, 14):
        clock.advance(minutes=14)
        assert "/console/login" not in desk.get("/console/").headers.get("Location", ""), elapsed
    clock.advance(minutes=14)
    answer = desk.get("/console/")
    assert answer.headers["Location"].startswith("/console/login?ended=expired")


def test_deactivation_ends_a_console_session(world: World, office):
    org, users = office
    desk = signed_in(world, org, users[Role.COMPLIANCE])
    admin = world.headers(org, users[Role.ADMIN])
    changed = world.client.patch(f"/api/v1/users/{users[Role.COMPLIANCE].id}",
                                 json={"active": False}, headers=admin)
    assert changed.status_code == 200, changed.json
    assert desk.get("/console/").headers["Location"].startswith("/console/login")


def test_console_pages_allow_no_inline_script_or_other_origin(desk: Desk):
    answer = desk.get("/console/login")
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "<script>" not in answer.get_data(as_text=True)
    htmx = desk.client.get("/console/static/vendor/htmx/htmx.min.js")
    assert htmx.status_code == 200 and "javascript" in htmx.content_type
    htmx.close()


def test_a_poll_after_sign_out_sends_the_whole_page_to_sign_in(desk: Desk):
    answer = desk.get("/console/", headers={"HX-Request": "true"})
    assert answer.status_code == 204
    assert answer.headers["HX-Redirect"].startswith("/console/login")


def test_the_sign_in_fields_carry_their_autocomplete(desk: Desk):
    page = desk.get("/console/login").get_data(as_text=True)
    assert 'autocomplete="current-password"' in page and "&#34;" not in page


def test_a_refused_page_rolls_back_and_is_audited(world: World, office):
    org, users = office
    desk = signed_in(world, org, users[Role.COMPLIANCE])
    answer = desk.post("/console/movements", {"kind": "receive"})
    assert answer.status_code == 403
    refused = [a for a in _actions(world, users[Role.COMPLIANCE]) if a == "request.refused"]
    assert refused == ["request.refused"]
