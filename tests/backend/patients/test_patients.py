"""Patient PHI is stored only as ciphertext bound to its row, found by MRN through a blind index."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.patients import service
from backend.patients.models import PATIENT_PHI, Patient, PatientNurse
from backend.phi.cipher import PhiCipher, PhiIntegrityError, Place
from tests.factories import World

DETAILS = {"address": "12 Quayside Lane, Apt 4", "phone": "+1 312 555 0147",
           "emergency_contact": "Morwenna Tidewell (sister) +1 312 555 0199",
           "notes": "Prefers visits after lunch; dog in the yard.", "sex": "female",
           "home_latitude": "41.878100", "home_longitude": "-87.629800"}


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


class Ward:
    """An organisation with an admin, a compliance officer, an assigned nurse and one patient."""

    def __init__(self, world: World) -> None:
        self.world, self.client = world, world.client
        self.org = world.org()
        self.admin, self.nurse = world.user(self.org, Role.ADMIN), world.user(self.org, Role.NURSE)
        self.admin_headers = world.headers(self.org, self.admin)
        response = self.client.post("/api/v1/patients", headers=self.admin_headers, json={
            "mrn": "W-1", "name": "Pat Ward", "date_of_birth": "1970-03-04",
            "nurse_ids": [str(self.nurse.id)], **DETAILS})
        assert response.status_code == 201, response.json
        self.patient_id = response.json["id"]
        self.url = f"/api/v1/patients/{self.patient_id}"

    def stored(self) -> dict[str, str | None]:
        """Return the patient's ciphertext columns as the database holds them."""
        table = Patient.__table__
        row = self.world.session.execute(
            select(*(table.c[PATIENT_PHI.attribute(name)] for name in PATIENT_PHI.names))
            .where(table.c.id == uuid.UUID(self.patient_id))).one()
        return dict(zip(PATIENT_PHI.names, row, strict=True))

    def audited(self, action: str) -> list[AuditEvent]:
        """Return the audit rows of `action` about the patient, oldest first."""
        return list(self.world.session.scalars(select(AuditEvent).where(
            AuditEvent.action == action, AuditEvent.object_id == self.patient_id)
            .order_by(AuditEvent.occurred_at)))

    def weigh(self, weight_kg, measured_at: str = "2026-11-02T13:00:00+00:00",
              headers: dict | None = None):
        """Post a weighing of the patient."""
        return self.client.post(f"{self.url}/weights", headers=headers or self.admin_headers,
                                json={"weight_kg": weight_kg, "measured_at": measured_at})


@pytest.fixture
def ward(world: World) -> Ward:
    return Ward(world)


def test_phi_is_not_stored_in_clear(world: World, registered):
    rows = world.session.execute(text(
        "SELECT mrn_index, mrn_enc, name_enc, date_of_birth_enc FROM patient")).all()
    stored = " ".join(" ".join(row) for row in rows)
    for clear in ("Ada", "Lovelace", "Grace", "MRN-001", "1950-12-09"):
        assert clear not in stored


def test_every_phi_field_is_ciphertext_under_the_active_key(ward: Ward):
    stored = ward.stored()
    assert set(stored) == {"mrn", "name", "date_of_birth", "address", "phone",
                           "emergency_contact", "notes", "sex"}
    everything = " ".join(stored.values())
    for clear in ("W-1", "Pat Ward", "1970-03-04", "Quayside", "555 0147", "Morwenna", "lunch",
                  "female"):
        assert clear not in everything
    active = ward.world.rt.keys.phi_active
    assert all(value.startswith(f"v1.{active}.") for value in stored.values())


def test_registration_returns_every_detail(ward: Ward):
    patient = ward.client.get(ward.url, headers=ward.admin_headers).json
    assert {name: patient[name] for name in DETAILS} == DETAILS
    assert patient["latest_weight"] is None
    assert patient["nurse_ids"] == [str(ward.nurse.id)]


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
    with pytest.raises(PhiIntegrityError):
        box.decrypt(first.name_enc, Place(second.organisation_id, "patient", "name", second.id))


def test_values_carry_their_key_id_and_old_keys_still_decrypt():
    place = Place(uuid.uuid4(), "patient", "name", uuid.uuid4())
    old = PhiCipher({"k1": b"\x01" * 32}, "k1")
    stored = old.encrypt("Ada", place)
    assert stored.split(".")[1] == "k1"
    rotated = PhiCipher({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")
    assert rotated.decrypt(stored, place) == "Ada"
    assert rotated.encrypt("Ada", place).split(".")[1] == "k2"


@pytest.mark.parametrize("stored", ["", "v1", "v1.k1", "v1.k1.!!!", "v1.k1.AAAA", "v2.k1.AAAA"])
def test_malformed_values_fail_the_integrity_check(stored):
    box = PhiCipher({"k1": b"\x01" * 32}, "k1")
    with pytest.raises(PhiIntegrityError):
        box.decrypt(stored, Place(uuid.uuid4(), "patient", "name", uuid.uuid4()))


def _move(world: World, source: str, source_column: str, target: str, column: str) -> None:
    """Overwrite a stored value with another one, as an attacker with database access might."""
    table = Patient.__table__
    stolen = world.session.scalar(select(table.c[source_column]).where(
        table.c.id == uuid.UUID(source)))
    world.session.execute(update(table).where(table.c.id == uuid.UUID(target))
                          .values({column: stolen}))
    world.commit()


def test_another_patients_ciphertext_answers_phi_integrity_and_is_logged(
        world: World, registered, caplog):
    _, headers, (ada, grace) = registered
    _move(world, ada, "name_enc", grace, "name_enc")
    with caplog.at_level(logging.ERROR, logger="backend.phi.cipher"):
        response = world.client.get(f"/api/v1/patients/{grace}", headers=headers)
    assert response.status_code == 500
    assert response.json["error"]["code"] == "phi_integrity"
    assert response.json["error"]["details"]["column"] == "name"
    assert "Ada" not in response.get_data(as_text=True)
    assert f"patient.name row {grace}" in caplog.text
    listed = world.client.get("/api/v1/patients", headers=headers)
    assert listed.status_code == 500
    assert "Ada" not in listed.get_data(as_text=True)


def test_ciphertext_moved_to_another_column_fails(ward: Ward):
    _move(ward.world, ward.patient_id, "address_enc", ward.patient_id, "phone_enc")
    response = ward.client.get(ward.url, headers=ward.admin_headers)
    assert response.json["error"]["code"] == "phi_integrity"
    assert response.json["error"]["details"]["column"] == "phone"


def test_patch_reencrypts_only_the_changed_fields_and_audits_their_names(ward: Ward):
    before = ward.stored()
    response = ward.client.patch(ward.url, headers=ward.admin_headers, json={
        "address": "9 Harbour Road", "notes": "Moved house.", "name": "Pat Ward",
        "home_latitude": "41.878100", "home_longitude": "-87.600000"})
    assert response.status_code == 200, response.json
    assert response.json["address"] == "9 Harbour Road"
    assert response.json["home_longitude"] == "-87.600000"
    after = ward.stored()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"address", "notes"}
    (update,) = ward.audited("patient.update")
    assert update.detail == {"fields": ["address", "home_longitude", "notes"]}
    assert update.user_id == ward.admin.id


def test_patch_with_the_same_values_changes_nothing(ward: Ward):
    before = ward.stored()
    response = ward.client.patch(ward.url, headers=ward.admin_headers,
                                 json={"phone": DETAILS["phone"], "date_of_birth": "1970-03-04"})
    assert response.status_code == 200, response.json
    assert ward.stored() == before
    assert ward.audited("patient.update")[0].detail == {"fields": []}


def test_patch_clears_optional_fields_with_null(ward: Ward):
    response = ward.client.patch(ward.url, headers=ward.admin_headers, json={
        "notes": None, "emergency_contact": None, "home_latitude": None, "home_longitude": None})
    assert response.status_code == 200, response.json
    assert [response.json[name] for name in ("notes", "emergency_contact", "home_latitude",
                                             "home_longitude")] == [None, None, None, None]
    assert ward.stored()["notes"] is None
    assert ward.client.get(ward.url, headers=ward.admin_headers).json["notes"] is None


def test_patch_changes_name_and_date_of_birth(ward: Ward):
    response = ward.client.patch(ward.url, headers=ward.admin_headers,
                                 json={"name": "Pat Ward-Smith", "date_of_birth": "1970-04-03"})
    assert (response.json["name"], response.json["date_of_birth"]) == (
        "Pat Ward-Smith", "1970-04-03")
    assert ward.audited("patient.update")[0].detail == {"fields": ["date_of_birth", "name"]}


def test_patch_changes_and_clears_sex_and_audits_its_name(ward: Ward):
    changed = ward.client.patch(ward.url, headers=ward.admin_headers, json={"sex": "unknown"})
    assert (changed.status_code, changed.json["sex"]) == (200, "unknown")
    cleared = ward.client.patch(ward.url, headers=ward.admin_headers, json={"sex": None})
    assert cleared.json["sex"] is None and ward.stored()["sex"] is None
    assert [row.detail for row in ward.audited("patient.update")] == [{"fields": ["sex"]}] * 2


@pytest.mark.parametrize(("body", "field"), [
    ({"name": None}, "name"),
    ({"name": ""}, "name"),
    ({"date_of_birth": "1970-02-30"}, "date_of_birth"),
    ({"home_latitude": "90.5", "home_longitude": "0"}, "home_latitude"),
    ({"home_latitude": "0", "home_longitude": "-180.1"}, "home_longitude"),
    ({"home_latitude": "45"}, "home_longitude"),
    ({"home_latitude": None, "home_longitude": "10"}, "home_latitude"),
    ({"mrn": "W-2"}, "mrn"),
    ({"sex": "F"}, "sex"),
    ({"sex": "Female"}, "sex"),
])
def test_invalid_patch_is_422_naming_the_field_and_changes_nothing(ward: Ward, body, field):
    before = ward.stored()
    response = ward.client.patch(ward.url, headers=ward.admin_headers, json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert ward.stored() == before


def test_home_location_alone_is_refused_at_registration(ward: Ward):
    response = ward.client.post("/api/v1/patients", headers=ward.admin_headers, json={
        "mrn": "W-2", "name": "P", "date_of_birth": "1970-01-01", "home_latitude": "41"})
    assert response.status_code == 422
    assert "home_longitude" in response.json["error"]["details"]["fields"]


def test_weight_is_stored_in_grams_and_shown_with_the_patient(ward: Ward):
    response = ward.weigh("72.5")
    assert response.status_code == 201, response.json
    assert response.json["weight_kg"] == "72.500"
    assert response.json["recorded_by_id"] == str(ward.admin.id)
    assert service.latest_weight(ward.world.session, uuid.UUID(ward.patient_id)).weight_g == 72_500
    patient = ward.client.get(ward.url, headers=ward.admin_headers).json
    assert patient["latest_weight"] == {"weight_kg": "72.500",
                                        "measured_at": "2026-11-02T13:00:00+00:00"}
    assert len(ward.audited("patient.weight_record")) == 1


def test_latest_weight_is_the_last_measured_not_the_last_entered(ward: Ward):
    assert ward.weigh("70", "2026-10-01T09:00:00+00:00").status_code == 201
    assert ward.weigh("71.25", "2026-10-20T09:00:00+00:00").status_code == 201
    assert ward.weigh("69.9", "2026-09-01T09:00:00+00:00").status_code == 201
    patient = ward.client.get(ward.url, headers=ward.admin_headers).json
    assert patient["latest_weight"]["weight_kg"] == "71.250"
    history = ward.client.get(f"{ward.url}/weights", headers=ward.admin_headers)
    assert [w["weight_kg"] for w in history.json] == ["71.250", "70.000", "69.900"]
    assert len(ward.audited("patient.weights_read")) == 1


@pytest.mark.parametrize("weight_kg", ["20", "400", "400.000", "20.001"])
def test_weights_at_the_plausible_limits_are_accepted(ward: Ward, weight_kg):
    assert ward.weigh(weight_kg).status_code == 201


@pytest.mark.parametrize(("weight_kg", "measured_at", "field"), [
    ("19.999", "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("400.001", "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("72.1234", "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("72.5000", "2026-11-02T13:00:00+00:00", "weight_kg"),
    (72.5, "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("-72", "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("7e1", "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("NaN", "2026-11-02T13:00:00+00:00", "weight_kg"),
    ("72", "2026-11-02T14:00:01+00:00", "measured_at"),
    ("72", "2026-11-02T13:00:00", "measured_at"),
])
def test_implausible_weights_and_times_are_422(ward: Ward, weight_kg, measured_at, field):
    response = ward.weigh(weight_kg, measured_at)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert service.latest_weight(ward.world.session, uuid.UUID(ward.patient_id)) is None


def test_weighing_now_by_the_app_clock_is_accepted(ward: Ward, clock):
    assert ward.weigh("72", clock.now().isoformat()).status_code == 201
    clock.advance(seconds=-1)
    assert ward.weigh("72", (clock.now() + timedelta(seconds=1)).isoformat()).status_code == 422


def test_only_an_assigned_nurse_records_a_weight(world: World, ward: Ward):
    assert ward.weigh("80", headers=world.headers(ward.org, ward.nurse)).status_code == 201
    stranger = world.user(ward.org, Role.NURSE)
    response = ward.weigh("80", headers=world.headers(ward.org, stranger))
    assert response.status_code == 404
    other_org = world.org()
    outsider = world.user(other_org, Role.ADMIN)
    assert ward.weigh("80", headers=world.headers(other_org, outsider)).status_code == 404


def _assign(ward: Ward, nurse_id: uuid.UUID):
    return ward.client.post(f"{ward.url}/nurses", headers=ward.admin_headers,
                            json={"nurse_id": str(nurse_id)})


def test_assigning_a_nurse_is_idempotent_and_lets_her_see_the_patient(world: World, ward: Ward):
    bea = world.user(ward.org, Role.NURSE)
    bea_headers = world.headers(ward.org, bea)
    assert ward.client.get(ward.url, headers=bea_headers).status_code == 404
    first = _assign(ward, bea.id)
    assert first.status_code == 201, first.json
    again = _assign(ward, bea.id)
    assert again.status_code == 201
    assert again.json == first.json
    assert ward.client.get(ward.url, headers=bea_headers).status_code == 200
    nurse_ids = ward.client.get(ward.url, headers=ward.admin_headers).json["nurse_ids"]
    assert sorted(nurse_ids) == sorted([str(ward.nurse.id), str(bea.id)])
    assert len(ward.audited("patient.nurse_assign")) == 1


def test_ending_an_assignment_keeps_its_history(world: World, ward: Ward):
    nurse_headers = world.headers(ward.org, ward.nurse)
    path = f"{ward.url}/nurses/{ward.nurse.id}"
    assert ward.client.delete(path, headers=ward.admin_headers).status_code == 204
    assert ward.client.get(ward.url, headers=nurse_headers).status_code == 404
    assert ward.client.get(ward.url, headers=ward.admin_headers).json["nurse_ids"] == []
    again = ward.client.delete(path, headers=ward.admin_headers)
    assert again.status_code == 404
    assert _assign(ward, ward.nurse.id).status_code == 201
    history = world.session.scalars(select(PatientNurse).where(
        PatientNurse.patient_id == uuid.UUID(ward.patient_id))
        .order_by(PatientNurse.assigned_at, PatientNurse.ended_at)).all()
    assert len(history) == 2
    assert sum(assignment.ended_at is None for assignment in history) == 1
    assert ward.audited("patient.nurse_unassign")[0].detail == {"nurse_id": str(ward.nurse.id)}


def test_only_active_nurses_of_the_organisation_can_be_assigned(world: World, ward: Ward):
    pharmacist = world.user(ward.org, Role.PHARMACIST)
    leaver = world.user(ward.org, Role.NURSE)
    deactivated = world.client.patch(f"/api/v1/users/{leaver.id}", headers=ward.admin_headers,
                                     json={"active": False})
    assert deactivated.status_code == 200, deactivated.json
    outsider = world.user(world.org(), Role.NURSE)
    for user_id in (pharmacist.id, leaver.id, outsider.id, uuid.uuid4()):
        response = _assign(ward, user_id)
        assert response.status_code == 422, user_id
        assert "nurse_id" in response.json["error"]["details"]["fields"]
