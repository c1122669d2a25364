"""A plan version is an order signed with a fresh second factor, and its signature verifies."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import rfc8785
from sqlalchemy import func, select, update

from backend.accounts.models import Organisation, Role
from backend.plans.models import PlanVersion
from tests.factories import PASSWORD, Clinic, World

WINDOW = 900


@pytest.fixture
def clinic(world: World) -> Clinic:
    return Clinic(world)


def _body(clinic: Clinic, **overrides) -> dict:
    return {"product_id": clinic.product_id, "route": "IV", "dose_ug_per_kg": 500,
            "max_dose_ug": 70_000, "infusion_minutes": 40, "starts_on": "2026-11-02",
            **overrides}


def _write(clinic: Clinic, headers: dict, **overrides):
    return clinic.client.post(f"/api/v1/patients/{clinic.patient_id}/plans", headers=headers,
                              json=_body(clinic, **overrides))


def _refreshed(clinic: Clinic, tokens: dict) -> dict:
    answer = clinic.client.post("/api/v1/auth/refresh",
                                json={"refresh_token": tokens["refresh_token"]})
    assert answer.status_code == 200, answer.json
    return {"Authorization": f"Bearer {answer.json['access_token']}"}


def _versions(world: World) -> int:
    return world.session.scalar(select(func.count()).select_from(PlanVersion))


def _expected_hash(clinic: Clinic, plan: dict, version: dict) -> str:
    """Rebuild the signed content from what the API shows, independently of the server."""
    signature = version["signature"]
    content = {
        "organisation_id": str(clinic.org.id), "plan_id": plan["id"],
        "patient_id": plan["patient_id"], "version": version["version"],
        "product_id": version["product_id"], "route": version["route"],
        "dose_ug_per_kg": version["dose_ug_per_kg"], "dose_ug": version["dose_ug"],
        "max_dose_ug": version["max_dose_ug"], "infusion_minutes": version["infusion_minutes"],
        "policy_overrides": version["policy_overrides"] or {},
        "phases": [{key: phase[key] for key in (
            "ordinal", "name", "starts_on", "dose_ug_per_kg", "dose_ug", "min_interval_hours",
            "max_per_7_days", "max_per_28_days")} for phase in version["phases"]],
        "signer_id": signature["signed_by_id"], "signed_at": signature["signed_at"],
        "factor": {"method": signature["factor"], "factor_id": signature["factor_id"],
                   "proved_at": signature["factor_proved_at"]},
    }
    return hashlib.sha256(rfc8785.dumps(content)).hexdigest()


def test_a_plan_is_signed_with_the_factor_of_the_sign_in(clinic: Clinic, clock):
    tokens = clinic.world.login(clinic.org, clinic.prescriber)
    clock.advance(seconds=60)
    answer = _write(clinic, {"Authorization": f"Bearer {tokens['access_token']}"})
    assert answer.status_code == 201, answer.json
    [version] = answer.json["versions"]
    signature = version["signature"]
    assert signature["signed_by_id"] == str(clinic.prescriber.id)
    assert signature["signed_by_name"] == clinic.prescriber.display_name
    assert signature["factor"] == "totp" and signature["factor_id"]
    assert signature["signed_at"] == clock.now().isoformat()
    assert signature["factor_proved_at"] < signature["signed_at"]
    assert signature["verified"] is True
    assert signature["content_hash"] == _expected_hash(clinic, answer.json, version)


def test_a_stale_factor_is_refused_naming_the_action_and_nothing_is_written(clinic: Clinic,
                                                                             clock):
    tokens = clinic.world.login(clinic.org, clinic.prescriber)
    clock.advance(seconds=WINDOW + 1)
    # Refresh keeps the session, and the age of its factor.
    headers = _refreshed(clinic, tokens)
    before = _versions(clinic.world)
    refused = _write(clinic, headers)
    assert refused.status_code == 403
    error = refused.json["error"]
    assert error["code"] == "mfa_required"
    assert error["details"]["action"] == "plan.sign"
    assert error["details"]["enrolled"] is True
    assert error["details"]["step_up"] == "/api/v1/auth/step-up"
    assert _versions(clinic.world) == before


def test_a_step_up_makes_the_factor_fresh_and_is_what_the_signature_names(clinic: Clinic,
                                                                         clock):
    world = clinic.world
    tokens = world.login(clinic.org, clinic.prescriber)
    clock.advance(seconds=WINDOW + 1)
    headers = _refreshed(clinic, tokens)
    stepped = clinic.client.post("/api/v1/auth/step-up", headers=headers,
                                 json={"code": world.code(clinic.prescriber)})
    assert stepped.status_code == 200, stepped.json
    assert stepped.json["method"] == "totp"
    assert stepped.json["proved_at"] == clock.now().isoformat()
    written = _write(clinic, headers)
    assert written.status_code == 201, written.json
    assert written.json["versions"][0]["signature"]["factor_proved_at"] == (
        stepped.json["proved_at"])


def test_a_wrong_step_up_code_is_refused_and_the_action_still_is(clinic: Clinic, clock):
    world = clinic.world
    tokens = world.login(clinic.org, clinic.prescriber)
    clock.advance(seconds=WINDOW + 1)
    headers = _refreshed(clinic, tokens)
    right = world.code(clinic.prescriber)
    wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" != right)
    refused = clinic.client.post("/api/v1/auth/step-up", headers=headers, json={"code": wrong})
    assert (refused.status_code, refused.json["error"]["code"]) == (422, "invalid_code")
    assert _write(clinic, headers).status_code == 403


def test_the_organisations_window_decides_how_fresh(clinic: Clinic, clock):
    world = clinic.world
    world.session.execute(update(Organisation).where(Organisation.id == clinic.org.id)
                          .values(step_up_seconds=120))
    world.commit()
    headers = world.headers(clinic.org, clinic.prescriber)
    clock.advance(seconds=121)
    refused = _write(clinic, headers)
    assert refused.json["error"]["details"]["window_seconds"] == 120
    assert refused.status_code == 403


def test_a_prescriber_without_a_factor_cannot_sign_even_within_the_grace(world: World, clock):
    clinic = Clinic(world)
    newcomer = world.user(clinic.org, Role.PRESCRIBER, factor=False)
    answer = world.client.post("/api/v1/auth/login", json={
        "org": clinic.org.slug, "username": newcomer.username, "password": PASSWORD})
    assert answer.status_code == 200
    assert answer.json["mfa_required"] is False
    assert answer.json["factor_due_at"] == "2026-11-09T14:00:00+00:00"
    refused = _write(clinic, {"Authorization": f"Bearer {answer.json['access_token']}"})
    assert refused.status_code == 403
    details = refused.json["error"]["details"]
    assert (details["action"], details["enrolled"]) == ("plan.sign", False)


def test_a_recovery_code_step_up_is_named_in_the_signature(clinic: Clinic, clock):
    from tests.backend.mfa.authenticator import enrol

    world = clinic.world
    prescriber = world.user(clinic.org, Role.PRESCRIBER, factor=False)
    enrolled = enrol(world, clock, clinic.org, prescriber)
    clock.advance(seconds=WINDOW + 1)
    tokens = world.login(clinic.org, prescriber)
    clock.advance(seconds=WINDOW + 1)
    headers = _refreshed(clinic, tokens)
    stepped = clinic.client.post("/api/v1/auth/step-up", headers=headers,
                                 json={"code": enrolled.recovery_codes[0]})
    assert stepped.json["method"] == "recovery_code"
    written = _write(clinic, headers)
    signature = written.json["versions"][0]["signature"]
    assert (signature["factor"], signature["factor_id"]) == ("recovery_code", None)
    assert signature["content_hash"] == _expected_hash(clinic, written.json,
                                                       written.json["versions"][0])


def test_a_change_is_a_new_signed_version_and_the_first_still_verifies(clinic: Clinic, clock):
    plan = clinic.plan()
    clock.advance(seconds=3600)
    changed = clinic.client.put(f"/api/v1/plans/{plan['id']}", headers=clinic.as_(
        Role.PRESCRIBER), json={**_body(clinic, dose_ug_per_kg=400), "change_reason": "tolerance"})
    assert changed.status_code == 200, changed.json
    first, second = changed.json["versions"]
    assert first["signature"] == plan["versions"][0]["signature"]
    assert second["signature"]["signed_at"] == clock.now().isoformat()
    assert second["signature"]["content_hash"] != first["signature"]["content_hash"]
    assert all(v["signature"]["verified"] for v in (first, second))
    for version in (first, second):
        assert version["signature"]["content_hash"] == _expected_hash(clinic, changed.json,
                                                                      version)


@pytest.mark.parametrize("column, value", [("max_dose_ug", 140_000), ("route", "IM"),
                                           ("dose_ug_per_kg", 1000)])
def test_an_order_edited_after_signing_no_longer_verifies(clinic: Clinic, column, value):
    plan = clinic.plan()
    world = clinic.world
    version_id = uuid.UUID(plan["versions"][0]["id"])
    world.session.execute(update(PlanVersion).where(PlanVersion.id == version_id)
                          .values({column: value}))
    world.commit()
    world.session.expire_all()
    shown = clinic.client.get(f"/api/v1/plans/{plan['id']}", headers=clinic.as_(Role.PRESCRIBER))
    assert shown.json["versions"][0]["signature"]["verified"] is False
