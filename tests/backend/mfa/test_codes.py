"""Checking codes: one step either side, never a step twice, recovery codes once, and wrong
codes counted with wrong passwords toward one lockout."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.auth import limiter
from backend.auth.caller import Caller
from backend.auth.models import LoginFailure
from backend.mfa import service
from tests.backend.mfa.authenticator import RECOVERY_CODES, Enrolled, audit_rows, enrol, listed
from tests.factories import PASSWORD, World

LOGIN = "/api/v1/auth/login"


@pytest.fixture
def enrolled(world: World, clock) -> Enrolled:
    """Return a pharmacist with a confirmed factor, a step after the one that confirmed it."""
    org = world.org()
    enrolled = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    clock.advance(seconds=30)
    return enrolled


def renew(world: World, enrolled: Enrolled, code: str):
    """Ask for new recovery codes, proving the factor with `code`."""
    return world.client.post(RECOVERY_CODES, headers=enrolled.headers, json={"code": code})


def login(world: World, enrolled: Enrolled, password: str = PASSWORD):
    """Sign in with a password, as today: no second factor is asked yet."""
    return world.client.post(LOGIN, json={"org": enrolled.org.slug,
                                          "username": enrolled.user.username,
                                          "password": password})


def test_a_current_code_is_accepted(world: World, enrolled):
    assert renew(world, enrolled, enrolled.app.code()).status_code == 200


def test_a_used_code_is_refused_within_its_window(world: World, clock, enrolled):
    code = enrolled.app.code()
    assert renew(world, enrolled, code).status_code == 200
    replayed = renew(world, enrolled, code)
    assert replayed.status_code == 422
    assert replayed.json["error"]["code"] == "invalid_code"
    # Still one step inside the window, and still refused: its step is spent.
    clock.advance(seconds=30)
    assert renew(world, enrolled, code).status_code == 422
    assert renew(world, enrolled, enrolled.app.code()).status_code == 200


def test_the_code_that_confirmed_a_factor_is_spent(world: World, clock, enrolled):
    assert renew(world, enrolled, enrolled.app.code(-1)).status_code == 422


def test_a_code_of_the_next_step_is_accepted_once(world: World, clock, enrolled):
    ahead = enrolled.app.code(1)
    assert renew(world, enrolled, ahead).status_code == 200
    clock.advance(seconds=30)
    assert enrolled.app.code() == ahead
    assert renew(world, enrolled, ahead).status_code == 422
    assert renew(world, enrolled, enrolled.app.code(1)).status_code == 200


def test_codes_beyond_the_window_are_refused(world: World, enrolled):
    for steps in (-2, 2, 20):
        assert renew(world, enrolled, enrolled.app.code(steps)).status_code == 422


def test_a_recovery_code_works_once(world: World, enrolled):
    code = enrolled.recovery_codes[0]
    assert renew(world, enrolled, "AAAA-AAAA-AAAA-AAAA").status_code == 422
    first = renew(world, enrolled, code)
    assert first.status_code == 200, first.json
    assert len(first.json["recovery_codes"]) == 10
    assert renew(world, enrolled, code).status_code == 422
    assert listed(world, enrolled.headers)["recovery_codes_remaining"] == 10
    rows = audit_rows(world, user_id=enrolled.user.id)
    assert [row.detail for row in rows if row.action == "mfa.recovery_code_used"] == [
        {"purpose": "recovery_codes", "remaining": 9}]


def test_new_recovery_codes_void_the_old_ones(world: World, enrolled):
    fresh = renew(world, enrolled, enrolled.app.code()).json["recovery_codes"]
    assert not set(fresh) & set(enrolled.recovery_codes)
    assert renew(world, enrolled, enrolled.recovery_codes[1]).status_code == 422
    assert renew(world, enrolled, fresh[1].lower()).status_code == 200


def test_recovery_codes_need_a_confirmed_factor(world: World):
    org = world.org()
    user = world.user(org, Role.ADMIN, factor=False)
    refused = world.client.post(RECOVERY_CODES, headers=world.headers(org, user),
                                json={"code": "123456"})
    assert refused.status_code == 409


def test_a_wrong_code_is_counted_and_audited(world: World, enrolled):
    refused = renew(world, enrolled, enrolled.app.wrong_code())
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "invalid_code"
    account = limiter.account_key(enrolled.org.slug, enrolled.user.username)
    failures = world.session.scalars(select(LoginFailure.scope).where(
        LoginFailure.key.in_([account, "127.0.0.1"]))).all()
    assert sorted(failures) == [limiter.ADDRESS, limiter.FACTOR]
    failed = [row for row in audit_rows(world, user_id=enrolled.user.id)
              if row.action == "mfa.code_failed"]
    assert [(row.object_id, row.detail) for row in failed] == [
        (str(enrolled.user.id), {"purpose": "recovery_codes"})]


def test_wrong_codes_lock_the_password_login_too(world: World, app, clock, enrolled):
    limit = app.config["LOGIN_MAX_PER_ACCOUNT"]
    for _ in range(limit):
        assert renew(world, enrolled, enrolled.app.wrong_code()).status_code == 422
    locked = renew(world, enrolled, enrolled.app.code())
    assert (locked.status_code, locked.json["error"]["code"]) == (429, "locked_out")
    assert int(locked.headers["Retry-After"]) > 0
    refused = login(world, enrolled)
    assert (refused.status_code, refused.json["error"]["code"]) == (429, "locked_out")
    clock.advance(seconds=app.config["LOGIN_WINDOW_SECONDS"])
    assert login(world, enrolled).status_code == 200


def test_wrong_passwords_lock_the_codes_too(world: World, app, enrolled):
    for _ in range(app.config["LOGIN_MAX_PER_ACCOUNT"]):
        assert login(world, enrolled, "not the password").status_code == 401
    assert renew(world, enrolled, enrolled.app.code()).status_code == 429


def test_wrong_codes_and_passwords_add_up(world: World, app, enrolled):
    limit = app.config["LOGIN_MAX_PER_ACCOUNT"]
    for attempt in range(limit):
        if attempt % 2:
            assert login(world, enrolled, "not the password").status_code == 401
        else:
            assert renew(world, enrolled, enrolled.app.wrong_code()).status_code == 422
    assert login(world, enrolled).status_code == 429


def test_a_right_password_does_not_clear_wrong_codes(world: World, app, enrolled):
    limit = app.config["LOGIN_MAX_PER_ACCOUNT"]
    for _ in range(limit - 1):
        assert renew(world, enrolled, enrolled.app.wrong_code()).status_code == 422
    assert login(world, enrolled).status_code == 200
    assert renew(world, enrolled, enrolled.app.wrong_code()).status_code == 422
    assert login(world, enrolled).status_code == 429


def test_a_right_code_clears_wrong_codes(world: World, app, enrolled):
    limit = app.config["LOGIN_MAX_PER_ACCOUNT"]
    for _ in range(limit - 1):
        assert renew(world, enrolled, enrolled.app.wrong_code()).status_code == 422
    assert renew(world, enrolled, enrolled.app.code()).status_code == 200
    for _ in range(limit - 1):
        assert renew(world, enrolled, enrolled.app.wrong_code()).status_code == 422
    assert login(world, enrolled).status_code == 200


def test_the_service_checks_a_code_for_a_user(world: World, enrolled):
    rt, session = world.rt, world.session
    caller = Caller(enrolled.user.id, enrolled.org.id, enrolled.user.role, None, None, None)
    code = enrolled.app.code()
    proof = service.verify(session, rt, caller, enrolled.user, code, purpose="test")
    assert proof == service.Proof("totp", proof.factor_id)
    assert str(proof.factor_id) == enrolled.factor_id
    with pytest.raises(service.InvalidCode):
        service.verify(session, rt, caller, enrolled.user, code, purpose="test")
    recovered = service.verify(session, rt, caller, enrolled.user, enrolled.recovery_codes[0],
                               purpose="test")
    assert recovered == service.Proof("recovery_code")
