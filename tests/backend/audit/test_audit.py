"""The audit trail: written for writes and patient reads, filterable, append-only in the DB."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backend.accounts.models import Role
from tests.factories import World


def _events(world: World, org, reader, **query):
    response = world.client.get("/api/v1/audit-events", headers=world.headers(org, reader),
                                query_string=query)
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture
def clinic(world: World):
    org = world.org()
    admin, nurse = world.user(org, Role.ADMIN), world.user(org, Role.NURSE)
    compliance = world.user(org, Role.COMPLIANCE)
    response = world.client.post("/api/v1/patients", headers=world.headers(org, admin), json={
        "mrn": "AUD-1", "name": "Pat Audit", "date_of_birth": "1965-05-05",
        "nurse_ids": [str(nurse.id)]})
    return org, admin, nurse, compliance, response.json["id"]


def test_reading_a_patient_writes_an_audit_row(world: World, clinic):
    org, _, nurse, compliance, patient_id = clinic
    headers = world.headers(org, nurse, world.device(org, nurse)[0])
    world.client.get(f"/api/v1/patients/{patient_id}", headers=headers)
    world.client.get("/api/v1/patients", headers=headers)
    reads = _events(world, org, compliance, action="patient.read", object_id=patient_id)
    assert len(reads) == 2
    assert {e["user_id"] for e in reads} == {str(nurse.id)}
    assert all(e["device_id"] and e["address"] for e in reads)


def test_a_refused_read_writes_no_read_row(world: World, clinic):
    org, _, _, compliance, patient_id = clinic
    other_nurse = world.user(org, Role.NURSE)
    world.client.get(f"/api/v1/patients/{patient_id}", headers=world.headers(org, other_nurse))
    assert _events(world, org, compliance, action="patient.read", user_id=other_nurse.id) == []


def test_writes_are_audited(world: World, clinic):
    org, admin, nurse, compliance, _ = clinic
    world.client.patch(f"/api/v1/users/{nurse.id}", headers=world.headers(org, admin),
                       json={"display_name": "Renamed"})
    actions = {e["action"] for e in _events(world, org, compliance)}
    assert {"user.create", "patient.create", "user.update", "auth.login"} <= actions
    update = _events(world, org, compliance, action="user.update")[0]
    assert update["detail"]["display_name"]["to"] == "Renamed"
    assert update["object_id"] == str(nurse.id)


def test_filters_by_user_object_and_time(world: World, clinic, clock):
    org, admin, nurse, compliance, patient_id = clinic
    before = clock.now()
    clock.advance(minutes=5)
    world.client.get(f"/api/v1/patients/{patient_id}", headers=world.headers(org, admin))
    recent = _events(world, org, compliance, since=(before + timedelta(minutes=1)).isoformat(),
                     object_type="patient")
    assert [e["action"] for e in recent] == ["patient.read"]
    earlier = _events(world, org, compliance, until=before.isoformat(), object_type="patient")
    assert earlier == []
    assert _events(world, org, compliance, user_id=nurse.id, action="patient.read") == []


def test_failed_logins_are_audited_in_the_organisation(world: World, clinic):
    org, _, nurse, compliance, _ = clinic
    world.client.post("/api/v1/auth/login", json={"org": org.slug, "username": nurse.username,
                                                  "password": "wrong password!"})
    failed = _events(world, org, compliance, action="auth.login_failed")
    assert [e["object_id"] for e in failed] == [str(nurse.id)]


def test_audit_rows_of_another_organisation_are_invisible(world: World, clinic):
    other = world.org()
    outsider = world.user(other, Role.COMPLIANCE)
    assert all(e["action"] != "patient.create" for e in _events(world, other, outsider))


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET action = 'forged'",
    "DELETE FROM audit_event",
])
def test_the_database_refuses_to_change_audit_rows(world: World, clinic, statement):
    with pytest.raises(DBAPIError, match="append_only"), world.session.begin_nested():
        world.session.execute(text(statement))
