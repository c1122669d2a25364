"""Patient PHI is stored only as ciphertext bound to its row, found by MRN through a blind index."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from backend.accounts.models import Role
from backend.patients.models import Patient
from backend.phi.cipher import PhiCipher, PhiDecryptionError, Place
from tests.factories import World


@pytest.fixture
def registered(world: World):
    org = world.org()
    admin = world.user(org, Role.PRESCRIBER)
    headers = world.headers(org, admin)
    ids = []
    for mrn, name in (("MRN-001", "Ada Lovelace-Test"), ("MRN-002", "Grace Hopper-Test")):
        response = world.client.post("/api/v1/patients", headers=headers, json={
            "mrn": mrn, "name": name, "date_of_birth": "1950-12-09"})
        assert response.status_code == 201, response.json
        ids.append(response.json["id"])
    return org, headers, ids


def test_phi_is_not_stored_in_clear(world: World, registered):
    rows = world.session.execute(text(
        "SELECT mrn_index, mrn_enc, name_enc, date_of_birth_enc FROM patient")).all()
    stored = " ".join(" ".join(row) for row in rows)
    for clear in ("Ada", "Lovelace", "Grace", "MRN-001", "1950-12-09"):
        assert clear not in stored


def test_mrn_lookup_uses_the_blind_index(world: World, registered):
    _, headers, ids = registered
    found = world.client.get("/api/v1/patients", headers=headers, query_string={"mrn": " mrn-002 "})
    assert [p["id"] for p in found.json] == [ids[1]]
    assert found.json[0]["name"] == "Grace Hopper-Test"


def test_duplicate_mrn_is_refused(world: World, registered):
    _, headers, _ = registered
    response = world.client.post("/api/v1/patients", headers=headers, json={
        "mrn": "MRN-001", "name": "Someone", "date_of_birth": "1960-01-01"})
    assert response.status_code == 409


def test_ciphertext_moved_to_another_row_does_not_decrypt(world: World, registered):
    _, _, ids = registered
    first, second = (world.session.get(Patient, uuid.UUID(i)) for i in ids)
    box = PhiCipher(world.rt.keys.phi_keys, world.rt.keys.phi_active)
    with pytest.raises(PhiDecryptionError):
        box.decrypt(first.name_enc, Place(second.organisation_id, "patient", "name", second.id))


def test_values_carry_their_key_id_and_old_keys_still_decrypt():
    place = Place(uuid.uuid4(), "patient", "name", uuid.uuid4())
    old = PhiCipher({"k1": b"\x01" * 32}, "k1")
    stored = old.encrypt("Ada", place)
    assert stored.split(".")[1] == "k1"
    rotated = PhiCipher({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")
    assert rotated.decrypt(stored, place) == "Ada"
    assert rotated.encrypt("Ada", place).split(".")[1] == "k2"
