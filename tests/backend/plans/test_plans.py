"""Products and treatment plans: catalogue, versions with history, defaults from policy."""

from __future__ import annotations

import pytest

from backend.accounts.models import Role
from tests.factories import ESKETAMINE, RACEMIC_50, Clinic, World


@pytest.fixture
def clinic(world: World) -> Clinic:
    return Clinic(world)


def test_catalogue_holds_strengths_in_micrograms(clinic: Clinic):
    listed = clinic.client.get("/api/v1/products", headers=clinic.as_(Role.NURSE)).json
    vial = next(p for p in listed if p["id"] == clinic.product_id)
    assert vial["container_ug"] == 500_000
    assert vial["unit"] == "mL"
    assert vial["units_per_container"] == "10.000"


def test_a_nurse_cannot_add_products(clinic: Clinic):
    response = clinic.client.post("/api/v1/products", headers=clinic.as_(Role.NURSE),
                                  json=RACEMIC_50)
    assert response.status_code == 403


def test_plan_defaults_come_from_policy(clinic: Clinic):
    plan = clinic.plan()
    phases = plan["versions"][0]["phases"]
    assert [(p["name"], p["starts_on"], p["min_interval_hours"], p["max_per_7_days"],
             p["max_per_28_days"]) for p in phases] == [
        ("induction", "2026-11-02", 48, 2, 8),
        ("maintenance", "2026-11-30", 48, 1, 4),
        ("taper", "2026-12-28", 48, 1, 2)]


def test_a_change_makes_a_new_version_and_keeps_history(clinic: Clinic):
    plan = clinic.plan()
    revised = clinic.client.put(f"/api/v1/plans/{plan['id']}", headers=clinic.as_(
        Role.PRESCRIBER), json={"product_id": clinic.product_id, "route": "IV",
                                "dose_ug_per_kg": 400, "max_dose_ug": 60_000,
                                "infusion_minutes": 40, "starts_on": "2026-11-02",
                                "change_reason": "dissociation at 0.5 mg/kg"})
    assert revised.status_code == 200, revised.json
    assert revised.json["current_version"] == 2
    versions = clinic.client.get(f"/api/v1/plans/{plan['id']}",
                                 headers=clinic.as_(Role.COMPLIANCE)).json["versions"]
    assert [(v["version"], v["dose_ug_per_kg"], v["change_reason"]) for v in versions] == [
        (1, 500, None), (2, 400, "dissociation at 0.5 mg/kg")]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"dose_ug_per_kg": 1_200}, "dose_ug_per_kg"),
    ({"route": "intranasal"}, "route"),
    ({"dose_ug": 35_000}, "dose_ug_per_kg"),
    ({"phases": [{"name": "late", "starts_on": "2026-11-09", "min_interval_hours": 48,
                  "max_per_7_days": 2, "max_per_28_days": 8}]}, "phases"),
])
def test_invalid_plans_are_refused_naming_the_field(clinic: Clinic, overrides, field):
    body = {"product_id": clinic.product_id, "route": "IV", "dose_ug_per_kg": 500,
            "max_dose_ug": 70_000, "infusion_minutes": 40, "starts_on": "2026-11-02",
            **overrides}
    response = clinic.client.post(f"/api/v1/patients/{clinic.patient_id}/plans",
                                  headers=clinic.as_(Role.PRESCRIBER), json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]


def test_one_active_plan_per_patient(clinic: Clinic):
    clinic.plan()
    response = clinic.client.post(f"/api/v1/patients/{clinic.patient_id}/plans",
                                  headers=clinic.as_(Role.PRESCRIBER), json={
                                      "product_id": clinic.product_id, "route": "IV",
                                      "dose_ug_per_kg": 500, "max_dose_ug": 70_000,
                                      "infusion_minutes": 40, "starts_on": "2026-11-02"})
    assert response.status_code == 409
    assert response.json["error"]["details"]["rule"] == "active_plan_exists"


def test_pharmacist_cannot_write_plans(clinic: Clinic):
    response = clinic.client.post(f"/api/v1/patients/{clinic.patient_id}/plans",
                                  headers=clinic.as_(Role.PHARMACIST), json={})
    assert response.status_code == 403


def test_plan_of_another_nurses_patient_is_hidden(clinic: Clinic, world: World):
    other = world.user(clinic.org, Role.NURSE)
    plan = clinic.plan()
    response = clinic.client.get(f"/api/v1/plans/{plan['id']}",
                                 headers=world.headers(clinic.org, other))
    assert response.status_code == 404


def test_esketamine_products_record_that_home_use_is_forbidden(clinic: Clinic):
    product_id = clinic.product(ESKETAMINE)
    listed = clinic.client.get("/api/v1/products", headers=clinic.as_(Role.ADMIN)).json
    assert next(p for p in listed if p["id"] == product_id)[
        "home_administration_allowed"] is False


def test_policy_lists_thresholds_with_sources_and_admin_overrides(clinic: Clinic):
    listed = clinic.client.get("/api/v1/policy", headers=clinic.as_(Role.NURSE)).json
    radius = next(t for t in listed if t["name"] == "evv_radius_m")
    assert (radius["value"], radius["default"], radius["practice"]) == ("250", "250", True)
    changed = clinic.client.put("/api/v1/policy/evv_radius_m", headers=clinic.as_(Role.ADMIN),
                                json={"value": "400"})
    assert changed.status_code == 200
    assert changed.json["value"] == "400"
    bad = clinic.client.put("/api/v1/policy/evv_radius_m", headers=clinic.as_(Role.ADMIN),
                            json={"value": "-3"})
    assert bad.status_code == 422
    assert clinic.client.put("/api/v1/policy/nope", headers=clinic.as_(Role.ADMIN),
                             json={"value": "1"}).status_code == 404
    restored = clinic.client.put("/api/v1/policy/evv_radius_m", headers=clinic.as_(Role.ADMIN),
                                 json={"value": None})
    assert restored.json["value"] == "250"
