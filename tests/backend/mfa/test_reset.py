"""An admin resets a user's second factors: all of them and every recovery code, audited."""

from __future__ import annotations

from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.mfa.models import RecoveryCode, SecondFactor
from tests.backend.mfa.authenticator import Authenticator, audit_rows, begin, enrol, listed
from tests.factories import PASSWORD, World


def reset(world: World, headers: dict, user_id):
    """Reset a user's factors."""
    return world.client.post(f"/api/v1/users/{user_id}/factors/reset", headers=headers)


def test_a_reset_removes_every_factor_and_recovery_code(world: World, clock):
    org = world.org()
    admin = world.user(org, Role.ADMIN, factor=False)
    enrolled = enrol(world, clock, org, world.user(org, Role.PRESCRIBER, factor=False))
    pending = begin(world, enrolled.headers, code=enrolled.recovery_codes[0]).json
    assert reset(world, world.headers(org, admin), enrolled.user.id).status_code == 204
    # No session outlives the factor it was proved with.
    assert world.client.get("/api/v1/me", headers=enrolled.headers).status_code == 401
    removed = world.session.scalars(select(SecondFactor).where(
        SecondFactor.user_id == enrolled.user.id).execution_options(populate_existing=True)).all()
    assert {str(factor.id) for factor in removed} == {enrolled.factor_id, pending["factor"]["id"]}
    assert all(factor.removed_at == clock.now() and factor.removed_by_id == admin.id
               and factor.secret_enc is None for factor in removed)
    assert world.session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == enrolled.user.id)) == 0
    [row] = audit_rows(world, action_prefix="mfa.reset")
    assert (row.user_id, row.object_type, row.object_id) == (admin.id, "user",
                                                             str(enrolled.user.id))
    assert sorted(row.detail["factors"]) == sorted([enrolled.factor_id, pending["factor"]["id"]])
    assert row.detail["recovery_codes"] == 10


def test_after_a_reset_the_user_enrols_again_at_sign_in(world: World, clock):
    org = world.org()
    admin = world.user(org, Role.ADMIN, factor=False)
    enrolled = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    reset(world, world.headers(org, admin), enrolled.user.id)
    clock.advance(seconds=30)
    challenged = world.client.post("/api/v1/auth/login", json={
        "org": org.slug, "username": enrolled.user.username, "password": PASSWORD}).json
    # No grace after a reset: the factor is due at once.
    assert (challenged["mfa_required"], challenged["enrolment_required"]) == (True, True)
    assert "access_token" not in challenged
    token = challenged["challenge_token"]
    refused = world.client.post("/api/v1/auth/login/factor", json={
        "challenge_token": token, "code": enrolled.recovery_codes[0]})
    assert refused.status_code == 409
    begun = world.client.post("/api/v1/auth/login/enrol", json={"challenge_token": token})
    assert begun.status_code == 201, begun.json
    app = Authenticator(begun.json["otpauth_uri"], clock)
    assert app.secret != enrolled.app.secret
    signed = world.client.post("/api/v1/auth/login/factor", json={
        "challenge_token": token, "code": app.code()})
    assert signed.status_code == 200, signed.json
    assert len(signed.json["recovery_codes"]) == 10
    headers = {"Authorization": f"Bearer {signed.json['access_token']}"}
    assert listed(world, headers)["recovery_codes_remaining"] == 10


def test_another_organisations_user_is_not_found(world: World, clock):
    org, other = world.org(), world.org()
    admin = world.user(org, Role.ADMIN, factor=False)
    theirs = enrol(world, clock, other, world.user(other, Role.PHARMACIST, factor=False))
    refused = reset(world, world.headers(org, admin), theirs.user.id)
    assert refused.status_code == 404
    assert len(listed(world, theirs.headers)["factors"]) == 1
    assert audit_rows(world, action_prefix="mfa.reset") == []


def test_only_an_admin_resets(world: World, clock):
    org = world.org()
    enrolled = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    for role in (Role.PRESCRIBER, Role.PHARMACIST, Role.COMPLIANCE, Role.NURSE):
        refused = reset(world, world.headers(org, world.user(org, role)), enrolled.user.id)
        assert (refused.status_code, refused.json["error"]["code"]) == (403, "forbidden")
    assert len(listed(world, enrolled.headers)["factors"]) == 1


def test_an_admin_cannot_reset_her_own_factors(world: World, clock):
    org = world.org()
    enrolled = enrol(world, clock, org, world.user(org, Role.ADMIN, factor=False))
    refused = reset(world, enrolled.headers, enrolled.user.id)
    assert refused.status_code == 409
    assert len(listed(world, enrolled.headers)["factors"]) == 1
