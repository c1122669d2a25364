"""Another organisation's objects answer 404; a nurse sees only hers and her patients' objects."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from backend.accounts.models import Role, User
from backend.flags.service import raise_flag
from safeguards.findings import Subject, SubjectKind
from safeguards.rules.monitoring import INFUSION_SHORT
from tests.factories import SUPPLIER, Pharmacy, World


def _patient(world: World, org, admin, nurses, mrn="MRN-1") -> str:
    response = world.client.post("/api/v1/patients", headers=world.headers(org, admin), json={
        "mrn": mrn, "name": "Pat Test", "date_of_birth": "1970-01-01",
        "nurse_ids": [str(n.id) for n in nurses]})
    assert response.status_code == 201, response.json
    return response.json["id"]


@pytest.fixture
def two_orgs(world: World):
    mine, theirs = world.org(), world.org()
    admin, their_admin = world.user(mine, Role.ADMIN), world.user(theirs, Role.ADMIN)
    their_nurse = world.user(theirs, Role.NURSE)
    their_device, _ = world.device(theirs, their_nurse)
    their_patient = _patient(world, theirs, their_admin, [their_nurse])
    return mine, admin, {"user": their_nurse.id, "device": their_device,
                         "patient": their_patient}


SOON = "2026-11-03T15:00:00+00:00"
PA, PR, PH, C, N = Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST, Role.COMPLIANCE, Role.NURSE


def _created(response) -> dict:
    assert response.status_code == 201, response.json
    return response.json


def _estate(world: World, pharmacy: Pharmacy, nurse: User, patient_id: str) -> dict[str, str]:
    """Give `nurse` a plan, a visit, a phone, a kit, a flag; add a loss; return ids by kind."""
    plan = pharmacy.plan(patient_id)
    visit = _created(world.client.post("/api/v1/visits", headers=pharmacy.as_(PA), json={
        "patient_id": patient_id, "nurse_id": str(nurse.id), "scheduled_start": SOON}))
    device, _ = world.device(pharmacy.org, nurse)
    _created(pharmacy.receive(1_000_000))
    kit = _created(pharmacy.post(PH, {"kind": "dispense", "quantity_ug": 50_000,
                                      "nurse_id": str(nurse.id), "details": {"seal_id": "S-9"}}))
    _created(pharmacy.post(PH, {"kind": "loss", "quantity_ug": 5_000, "holder": "vault",
                                "details": {"circumstances": "a vial missing at the count"}}))
    [loss] = world.client.get("/api/v1/custody/losses", headers=pharmacy.as_(C)).json
    finding = INFUSION_SHORT.finding(Subject(SubjectKind.VISIT, visit["id"]), "Short.",
                                     {"visit_id": visit["id"]}, key=(visit["id"],))
    flag = raise_flag(world.session, world.rt.clock.now(), pharmacy.org.id, finding)
    world.commit()
    return {"visit": visit["id"], "patient": patient_id, "plan": plan["id"],
            "product": pharmacy.product_id, "device": str(device), "entry": kit["id"],
            "loss": loss["id"], "flag": str(flag.id), "user": str(nurse.id)}


def _filled(value: Any, ids: dict[str, str]) -> Any:
    """Return `value` with each {kind} in its strings replaced by that object's id."""
    if isinstance(value, dict):
        return {key: _filled(item, ids) for key, item in value.items()}
    return value.format(**ids) if isinstance(value, str) else value


def _refused(world: World, headers: dict, ids: dict[str, str], method: str, template: str,
             body: dict | None, what: str) -> None:
    response = world.client.open(_filled(template, ids), method=method,
                                 json=_filled(body, ids), headers=headers)
    assert response.status_code == 404, response.json
    assert response.json["error"] == {"code": "not_found", "message": f"No such {what}.",
                                      "details": {}}


def _entry(**body: str) -> dict:
    return {"id": "{new_id}", "occurred_at": SOON, "product_id": "{my_product}", "lot": "L1",
            "expiry": "2028-01-31", "quantity_ug": 1_000, "corrects_id": "{entry}", **body}


PLAN = {"product_id": "{product}", "route": "IV", "dose_ug_per_kg": 500, "max_dose_ug": 70_000,
        "infusion_minutes": 40, "starts_on": "2026-11-02"}
FILING = {"filing": "dea_notice", "filed_at": "2026-11-02T14:00:00+00:00"}


@pytest.mark.parametrize(("what", "role", "method", "template", "body"), [
    ("visit", PA, "GET", "/api/v1/visits/{visit}", None),
    ("visit", PR, "POST", "/api/v1/visits/{visit}/cancel", {"reason": "the patient is unwell"}),
    ("patient", PA, "GET", "/api/v1/patients/{patient}", None),
    ("patient", PR, "POST", "/api/v1/patients/{patient}/nurses", {"nurse_id": "{my_nurse}"}),
    ("plan", PR, "GET", "/api/v1/plans/{plan}", None),
    ("product", PR, "POST", "/api/v1/patients/{my_patient}/plans", PLAN),
    ("device", PA, "DELETE", "/api/v1/devices/{device}", None),
    ("custody entry", PH, "POST", "/api/v1/custody/entries",
     _entry(kind="receive", details=SUPPLIER)),
    ("loss report", C, "POST", "/api/v1/custody/losses/{loss}/filings", FILING),
    ("flag", C, "GET", "/api/v1/flags/{flag}", None),
    ("flag", PA, "POST", "/api/v1/flags/{flag}/notes", {"note": "looked into it"}),
    ("user", PA, "PATCH", "/api/v1/users/{user}", {"active": False}),
    ("nurse", PH, "GET", "/api/v1/custody/bags/{user}/statement", None),
])
def test_another_organisations_object_answers_404(world: World, what, role, method, template,
                                                  body):
    theirs = Pharmacy(world)
    ids = _estate(world, theirs, theirs.nurse, theirs.patient_id)
    mine = Pharmacy(world)
    ids.update(my_patient=mine.patient_id, my_product=mine.product_id,
               my_nurse=str(mine.nurse.id), new_id=str(uuid.uuid4()))
    _refused(world, mine.as_(role), ids, method, template, body, what)


@pytest.mark.parametrize(("what", "method", "template", "body"), [
    ("visit", "GET", "/api/v1/visits/{visit}", None),
    ("visit", "GET", "/api/v1/visits/{visit}/session", None),
    ("visit", "POST", "/api/v1/visits/{visit}/cancel", {"reason": "the patient is unwell"}),
    ("visit", "POST", "/api/v1/visits/{visit}/check-in", {
        "latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 5,
        "occurred_at": SOON}),
    ("patient", "GET", "/api/v1/patients/{patient}", None),
    ("patient", "GET", "/api/v1/patients/{patient}/weights", None),
    ("patient", "POST", "/api/v1/patients/{patient}/weights",
     {"weight_kg": "70.0", "measured_at": "2026-11-02T13:00:00+00:00"}),
    ("plan", "GET", "/api/v1/plans/{plan}", None),
    ("device", "DELETE", "/api/v1/devices/{device}", None),
    ("custody entry", "POST", "/api/v1/custody/entries",
     _entry(kind="loss", details={"circumstances": "dropped"})),
    ("nurse", "GET", "/api/v1/custody/bags/{user}/statement", None),
])
def test_a_nurse_sees_only_her_own_visits_and_her_assigned_patients(world: World, what, method,
                                                                   template, body):
    clinic = Pharmacy(world)
    bea = world.user(clinic.org, N)
    ids = _estate(world, clinic, bea, clinic.patient([bea]))
    ids.update(my_product=clinic.product_id, new_id=str(uuid.uuid4()))
    _refused(world, clinic.as_(N, clinic.device_id), ids, method, template, body, what)


def test_lists_hold_only_the_callers_organisation(world: World, two_orgs):
    mine, admin, theirs = two_orgs
    headers = world.headers(mine, admin)
    assert str(theirs["user"]) not in {u["id"] for u in world.client.get(
        "/api/v1/users", headers=headers).json}
    assert world.client.get("/api/v1/devices", headers=headers).json == []
    assert world.client.get("/api/v1/patients", headers=headers).json == []


def test_cannot_assign_another_organisations_nurse(world: World, two_orgs):
    mine, admin, theirs = two_orgs
    response = world.client.post("/api/v1/patients", headers=world.headers(mine, admin), json={
        "mrn": "X-1", "name": "P", "date_of_birth": "1970-01-01",
        "nurse_ids": [str(theirs["user"])]})
    assert response.status_code == 422
    assert "nurse_ids" in response.json["error"]["details"]["fields"]


def test_nurse_sees_only_her_patients(world: World):
    org = world.org()
    admin = world.user(org, Role.ADMIN)
    alice, bea = world.user(org, Role.NURSE), world.user(org, Role.NURSE)
    hers = _patient(world, org, admin, [alice], mrn="A-1")
    other = _patient(world, org, admin, [bea], mrn="B-1")
    headers = world.headers(org, alice)
    assert [p["id"] for p in world.client.get("/api/v1/patients", headers=headers).json] == [hers]
    assert world.client.get(f"/api/v1/patients/{hers}", headers=headers).status_code == 200
    assert world.client.get(f"/api/v1/patients/{other}", headers=headers).status_code == 404


def test_nurse_sees_and_revokes_only_her_devices(world: World):
    org = world.org()
    alice, bea = world.user(org, Role.NURSE), world.user(org, Role.NURSE)
    alice_device, _ = world.device(org, alice)
    bea_device, _ = world.device(org, bea)
    headers = world.headers(org, alice)
    listed = world.client.get("/api/v1/devices", headers=headers).json
    assert [d["id"] for d in listed] == [str(alice_device)]
    assert world.client.delete(f"/api/v1/devices/{bea_device}",
                               headers=headers).status_code == 404
