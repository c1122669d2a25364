"""Another organisation's objects answer 404, and a nurse sees only her own patients and devices."""

from __future__ import annotations

import pytest

from backend.accounts.models import Role
from tests.factories import World


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


@pytest.mark.parametrize(("method", "template", "body"), [
    ("PATCH", "/api/v1/users/{user}", {"active": False}),
    ("DELETE", "/api/v1/devices/{device}", None),
    ("GET", "/api/v1/patients/{patient}", None),
])
def test_other_organisations_objects_answer_404(world: World, two_orgs, method, template, body):
    mine, admin, theirs = two_orgs
    response = world.client.open(template.format(**theirs), method=method, json=body,
                                 headers=world.headers(mine, admin))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


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
