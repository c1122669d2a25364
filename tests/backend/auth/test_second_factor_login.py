"""Signing in with a second factor through the API: the challenge, its second call, its limits."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from backend.accounts.models import Organisation, Role
from backend.audit.models import AuditEvent
from tests.backend.mfa.authenticator import Authenticator, enrol
from tests.factories import PASSWORD, World

LOGIN, FACTOR = "/api/v1/auth/login", "/api/v1/auth/login/factor"


@pytest.fixture
def org(world: World):
    return world.org()


def _password(world: World, org, user, **extra):
    return world.client.post(LOGIN, json={"org": org.slug, "username": user.username,
                                          "password": PASSWORD, **extra})


def _challenge(world: World, org, user) -> str:
    answer = _password(world, org, user)
    assert answer.status_code == 200 and answer.json["mfa_required"] is True, answer.json
    return answer.json["challenge_token"]


def _second(world: World, token: str, code: str):
    return world.client.post(FACTOR, json={"challenge_token": token, "code": code})


@pytest.mark.parametrize("role", [Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST,
                                  Role.COMPLIANCE])
def test_a_desk_user_with_a_factor_gets_a_challenge_not_tokens(world: World, clock, org, role):
    enrolled = enrol(world, clock, org, world.user(org, role, factor=False))
    clock.advance(seconds=30)
    answer = _password(world, org, enrolled.user)
    assert answer.status_code == 200
    body = answer.json
    assert body["mfa_required"] is True and body["enrolment_required"] is False
    assert body["methods"] == ["totp", "recovery_code"]
    assert body["challenge_expires_in"] == 300
    assert not {"access_token", "refresh_token", "token_type"} & body.keys()
    signed = _second(world, body["challenge_token"], enrolled.app.code())
    assert signed.status_code == 200, signed.json
    assert signed.json["token_type"] == "Bearer" and "recovery_codes" not in signed.json
    me = world.client.get("/api/v1/me", headers={
        "Authorization": f"Bearer {signed.json['access_token']}"})
    assert me.status_code == 200
    [login] = world.session.scalars(select(AuditEvent).where(
        AuditEvent.user_id == enrolled.user.id, AuditEvent.action == "auth.login"
    ).order_by(AuditEvent.occurred_at.desc()).limit(1))
    assert login.detail == {"factor": "totp"}


def test_a_challenge_token_is_no_access_token_and_an_access_token_no_challenge(world: World,
                                                                               org):
    user = world.user(org, Role.PHARMACIST)
    token = _challenge(world, org, user)
    assert world.client.get("/api/v1/me", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401
    access = world.login(org, user)["access_token"]
    refused = _second(world, access, world.code(user))
    assert (refused.status_code, refused.json["error"]["code"]) == (401, "invalid_credentials")


def test_a_challenge_expires_after_five_minutes(world: World, clock, org):
    user = world.user(org, Role.ADMIN)
    token = _challenge(world, org, user)
    clock.advance(seconds=301)
    assert _second(world, token, world.code(user)).status_code == 401


def test_a_code_is_used_once_even_within_its_window(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.COMPLIANCE, factor=False))
    clock.advance(seconds=30)
    code = enrolled.app.code()
    assert _second(world, _challenge(world, org, enrolled.user), code).status_code == 200
    replayed = _second(world, _challenge(world, org, enrolled.user), code)
    assert (replayed.status_code, replayed.json["error"]["code"]) == (422, "invalid_code")


def test_a_recovery_code_signs_in_once(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.PRESCRIBER, factor=False))
    code = enrolled.recovery_codes[3].lower().replace("-", "")
    assert _second(world, _challenge(world, org, enrolled.user), code).status_code == 200
    again = _second(world, _challenge(world, org, enrolled.user), enrolled.recovery_codes[3])
    assert again.status_code == 422


def test_wrong_codes_count_with_wrong_passwords_toward_the_lockout(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    token = _challenge(world, org, enrolled.user)
    answers = [_second(world, token, enrolled.app.wrong_code()).status_code for _ in range(6)]
    assert answers[:5] == [422] * 5 and answers[5] == 429
    # Locked: the password itself is refused now, as after wrong passwords.
    assert _password(world, org, enrolled.user).status_code == 429
    clock.advance(seconds=901)
    assert _password(world, org, enrolled.user).status_code == 200


def test_a_nurse_signs_in_with_a_password_unless_her_organisation_covers_nurses(world: World,
                                                                                 clock, org):
    nurse = world.user(org, Role.NURSE)
    answer = _password(world, org, nurse)
    assert answer.json["mfa_required"] is False and "factor_due_at" not in answer.json
    world.session.execute(update(Organisation).where(Organisation.id == org.id).values(
        mfa_nurses=True, mfa_policy_at=clock.now()))
    world.commit()
    within = _password(world, org, nurse).json
    assert within["mfa_required"] is False
    assert within["factor_due_at"] == "2026-11-09T14:00:00+00:00"
    clock.advance(days=7)
    past = _password(world, org, nurse).json
    assert (past["mfa_required"], past["enrolment_required"]) == (True, True)


def test_past_the_grace_a_user_enrols_at_sign_in_and_gets_recovery_codes(world: World, clock,
                                                                         org):
    user = world.user(org, Role.COMPLIANCE, factor=False)
    assert _password(world, org, user).json["factor_due_at"] == "2026-11-09T14:00:00+00:00"
    clock.advance(days=7)
    token = _challenge(world, org, user)
    assert _second(world, token, "123456").status_code == 409
    begun = world.client.post("/api/v1/auth/login/enrol", json={"challenge_token": token})
    assert begun.status_code == 201, begun.json
    app = Authenticator(begun.json["otpauth_uri"], clock)
    assert _second(world, token, app.wrong_code()).status_code == 422
    signed = _second(world, token, app.code())
    assert signed.status_code == 200
    assert len(signed.json["recovery_codes"]) == 10
    # Enrolled: the next sign-in asks for the factor, not an enrolment.
    clock.advance(seconds=30)
    again = _password(world, org, user).json
    assert (again["mfa_required"], again["enrolment_required"]) == (True, False)
    assert world.client.post("/api/v1/auth/login/enrol", json={
        "challenge_token": again["challenge_token"]}).status_code == 409


def test_refresh_keeps_the_session_and_the_age_of_its_factor(world: World, clock, org):
    user = world.user(org, Role.ADMIN)
    tokens = world.login(org, user)
    clock.advance(seconds=600)
    refreshed = world.client.post("/api/v1/auth/refresh",
                                  json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    headers = {"Authorization": f"Bearer {refreshed.json['access_token']}"}
    clock.advance(seconds=301)
    # 901 seconds after the factor: a sensitive action asks for it again.
    refused = world.client.put("/api/v1/organisation/security-policy", headers=headers, json={
        "second_factor_for_nurses": True, "enrolment_grace_days": 7, "step_up_minutes": 15})
    assert (refused.status_code, refused.json["error"]["code"]) == (403, "mfa_required")
