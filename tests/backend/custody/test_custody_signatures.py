"""Device signatures, witnesses and seals: an entry that fails one is refused and not recorded."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.auth.caller import Caller
from backend.custody import service
from backend.custody.models import CustodyEntry, Kind
from backend.errors import SignatureInvalid
from tests.factories import PASSWORD, Pharmacy, Phone, World, signed_payload

DAY1 = "2026-11-03T15:00:00+00:00"
# When a witness's phone confirmed a waste of 16:00, as sent and as its signature covers it.
ATTESTED, ATTESTED_SIGNED = "2026-11-03T17:02:00+01:00", "2026-11-03T16:02:00.000000+00:00"


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    """Return a pharmacy whose nurse carries a 500 mg kit sealed S-1."""
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(500_000).status_code == 201
    return pharmacy


@pytest.fixture
def visit_id(pharmacy: Pharmacy) -> str:
    """Return the id of the nurse's visit to the pharmacy's patient."""
    response = pharmacy.schedule(DAY1)
    assert response.status_code == 201, response.json
    return response.json["id"]


@pytest.fixture
def colleague(pharmacy: Pharmacy) -> tuple[uuid.UUID, uuid.UUID, Phone]:
    """Return a second nurse of the pharmacy with her own phone: user id, device id, phone."""
    nurse = pharmacy.world.user(pharmacy.org, Role.NURSE)
    device_id, phone = pharmacy.world.device(pharmacy.org, nurse)
    return nurse.id, device_id, phone


def _ledger(pharmacy: Pharmacy) -> tuple[list[str], list[dict]]:
    """Return the entry ids in chain order and every balance, as compliance sees them."""
    headers = pharmacy.as_(Role.COMPLIANCE)
    entries = pharmacy.client.get("/api/v1/custody/entries", headers=headers).json
    balances = pharmacy.client.get("/api/v1/custody/balances", headers=headers).json
    return [entry["id"] for entry in entries], balances


def _code(response) -> str:
    return response.json["error"]["code"]


def _administer(pharmacy: Pharmacy, visit_id: str, **extra) -> dict:
    """Return a complete administer body, before any signature."""
    return {"id": str(uuid.uuid4()), "kind": "administer", "quantity_ug": 35_000,
            "patient_id": pharmacy.patient_id, "visit_id": visit_id,
            "occurred_at": "2026-11-03T15:30:00+00:00", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", **extra}


def _waste(pharmacy: Pharmacy, **extra) -> dict:
    """Return a complete waste body, before any witness or signature."""
    return {"id": str(uuid.uuid4()), "kind": "waste", "quantity_ug": 15_000,
            "occurred_at": "2026-11-03T16:00:00+00:00", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", **extra}


def _request(body: dict) -> service.EntryRequest:
    """Return the service request the API would build from `body`."""
    return service.EntryRequest(
        kind=Kind(body["kind"]), product_id=uuid.UUID(body["product_id"]), lot=body["lot"],
        expiry=date.fromisoformat(body["expiry"]), quantity_ug=body["quantity_ug"],
        occurred_at=datetime.fromisoformat(body["occurred_at"]), id=uuid.UUID(body["id"]),
        patient_id=uuid.UUID(body["patient_id"]), visit_id=uuid.UUID(body["visit_id"]),
        signature=body["signature"])


def _refused_by_service(pharmacy: Pharmacy, device_id: uuid.UUID, body: dict) -> SignatureInvalid:
    """Record `body` as the nurse calling from `device_id`; return the refusal, nothing stored."""
    session = pharmacy.world.session
    caller = Caller(pharmacy.nurse.id, pharmacy.org.id, Role.NURSE, None, device_id, None)
    before = session.scalar(select(func.count()).select_from(CustodyEntry))
    with pytest.raises(SignatureInvalid) as refused:
        service.record(session, pharmacy.world.rt, caller, _request(body))
    # Nothing reached the database before the refusal, so the boundary's rollback loses nothing.
    assert session.scalar(select(func.count()).select_from(CustodyEntry)) == before
    session.rollback()
    assert (refused.value.status, refused.value.code) == (422, "signature_invalid")
    return refused.value


def test_a_correctly_signed_entry_is_recorded_with_its_device(pharmacy: Pharmacy, visit_id):
    response = pharmacy.post(Role.NURSE, _administer(pharmacy, visit_id))
    assert response.status_code == 201, response.json
    assert response.json["device_id"] == str(pharmacy.device_id)


@pytest.mark.parametrize(("case", "signature"), [
    ("a different key", lambda pharmacy, body: Phone.new().sign(signed_payload(pharmacy, body))),
    ("another entry's bytes", lambda pharmacy, body: pharmacy.phone.sign(
        signed_payload(pharmacy, {**body, "quantity_ug": body["quantity_ug"] + 1}))),
    ("no signature", lambda _pharmacy, _body: None),
    ("not base64", lambda _pharmacy, _body: "not a signature!"),
])
def test_an_entry_not_signed_by_the_nurses_phone_is_refused(pharmacy: Pharmacy, visit_id, case,
                                                           signature):
    before = _ledger(pharmacy)
    body = _administer(pharmacy, visit_id)
    response = pharmacy.post(Role.NURSE, {**body, "signature": signature(pharmacy, body)})
    assert response.status_code == 422, (case, response.json)
    assert _code(response) == "signature_invalid"
    assert _ledger(pharmacy) == before


def test_a_nurse_logged_in_without_her_phone_cannot_post_a_signed_kind(pharmacy: Pharmacy,
                                                                      visit_id):
    before = _ledger(pharmacy)
    body = _administer(pharmacy, visit_id)
    body["signature"] = pharmacy.phone.sign(signed_payload(pharmacy, body))
    response = pharmacy.client.post("/api/v1/custody/entries", json=body,
                                    headers=pharmacy.world.headers(pharmacy.org, pharmacy.nurse))
    assert response.status_code == 422
    assert _code(response) == "signature_invalid"
    assert response.json["error"]["details"]["reason"] == "unsigned"
    assert _ledger(pharmacy) == before


def test_a_revoked_phone_signs_nothing(pharmacy: Pharmacy, visit_id):
    before = _ledger(pharmacy)
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    revoked = pharmacy.client.delete(f"/api/v1/devices/{pharmacy.device_id}",
                                     headers=pharmacy.as_(Role.ADMIN))
    assert revoked.status_code == 204
    body = _administer(pharmacy, visit_id)
    body["signature"] = pharmacy.phone.sign(signed_payload(pharmacy, body))
    # Over HTTP the revocation ends the phone's session before the entry is even read ...
    response = pharmacy.client.post("/api/v1/custody/entries", json=body, headers=headers)
    assert response.status_code == 401
    # ... and a request authenticated just before it is refused by the service itself.
    refused = _refused_by_service(pharmacy, pharmacy.device_id, body)
    assert refused.details["reason"] == "revoked_device"
    assert _ledger(pharmacy) == before


def test_another_nurses_phone_cannot_sign_for_her(pharmacy: Pharmacy, visit_id, colleague):
    before = _ledger(pharmacy)
    _, device_id, phone = colleague
    login = pharmacy.client.post("/api/v1/auth/login", json={
        "org": pharmacy.org.slug, "username": pharmacy.nurse.username, "password": PASSWORD,
        "device_id": str(device_id)})
    assert login.status_code == 422
    body = _administer(pharmacy, visit_id)
    body["signature"] = phone.sign(signed_payload(pharmacy, body))
    refused = _refused_by_service(pharmacy, device_id, body)
    assert refused.details["reason"] == "unknown_device"
    assert _ledger(pharmacy) == before


def _other_org_pharmacist(pharmacy: Pharmacy) -> uuid.UUID:
    world = pharmacy.world
    return world.user(world.org(), Role.PHARMACIST).id


WITNESSES = {
    "no witness": lambda p, colleague, body: [],
    "the nurse herself": lambda p, colleague, body: [
        {"user_id": str(p.nurse.id), "password": PASSWORD}],
    "an unknown user": lambda p, colleague, body: [
        {"user_id": str(uuid.uuid4()), "password": PASSWORD}],
    "a user of another organisation": lambda p, colleague, body: [
        {"user_id": str(_other_org_pharmacist(p)), "password": PASSWORD}],
    "a wrong password": lambda p, colleague, body: [
        {"user_id": str(p.users[Role.PHARMACIST].id), "password": "not the password"}],
    "neither password nor signature": lambda p, colleague, body: [
        {"user_id": str(p.users[Role.PHARMACIST].id)}],
    "a signature by another key": lambda p, colleague, body: [
        {"user_id": str(colleague[0]), "device_id": str(colleague[1]),
         "signature": Phone.new().sign(signed_payload(p, body))}],
    "a signature over another entry": lambda p, colleague, body: [
        {"user_id": str(colleague[0]), "device_id": str(colleague[1]),
         "signature": colleague[2].sign(signed_payload(p, {**body, "quantity_ug": 1}))}],
    "a signature from the nurse's own phone": lambda p, colleague, body: [
        {"user_id": str(colleague[0]), "device_id": str(p.device_id),
         "signature": p.phone.sign(signed_payload(p, body))}],
    "a time its signature does not cover": lambda p, colleague, body: [
        {"user_id": str(colleague[0]), "device_id": str(colleague[1]),
         "attested_at": ATTESTED, "signature": colleague[2].sign(signed_payload(p, body))}],
    "a signature over another time": lambda p, colleague, body: [
        {"user_id": str(colleague[0]), "device_id": str(colleague[1]),
         "attested_at": "2026-11-03T16:01:00+00:00", "signature": colleague[2].sign(
             {**signed_payload(p, body), "attested_at": ATTESTED_SIGNED})}],
}


@pytest.mark.parametrize("case", list(WITNESSES))
def test_a_waste_without_a_true_witness_is_refused(pharmacy: Pharmacy, colleague, case):
    before = _ledger(pharmacy)
    body = _waste(pharmacy)
    response = pharmacy.post(Role.NURSE, {**body,
                                          "witnesses": WITNESSES[case](pharmacy, colleague, body)})
    assert response.status_code == 422, (case, response.json)
    assert _code(response) == "witness_required"
    assert _ledger(pharmacy) == before


def test_a_waste_is_witnessed_by_password_or_by_the_witness_phone(pharmacy: Pharmacy,
                                                                  colleague):
    by_password = pharmacy.post(Role.NURSE, {**_waste(pharmacy), "witnesses": [
        {"user_id": str(pharmacy.users[Role.PHARMACIST].id), "password": PASSWORD}]})
    assert by_password.status_code == 201, by_password.json
    body = _waste(pharmacy)
    by_phone = pharmacy.post(Role.NURSE, {**body, "witnesses": [
        {"user_id": str(colleague[0]), "device_id": str(colleague[1]),
         "signature": colleague[2].sign(signed_payload(pharmacy, body))}]})
    assert by_phone.status_code == 201, by_phone.json
    assert [r.json["witnesses"][0]["method"] for r in (by_password, by_phone)] == [
        "password", "device_signature"]


def test_a_witness_phone_may_time_its_confirmation_under_its_signature(pharmacy: Pharmacy,
                                                                       colleague):
    body = _waste(pharmacy)
    timed = pharmacy.post(Role.NURSE, {**body, "witnesses": [
        {"user_id": str(colleague[0]), "device_id": str(colleague[1]), "attested_at": ATTESTED,
         "signature": colleague[2].sign({**signed_payload(pharmacy, body),
                                         "attested_at": ATTESTED_SIGNED})}]})
    assert timed.status_code == 201, timed.json
    assert timed.json["witnesses"] == [{"user_id": str(colleague[0]),
                                        "method": "device_signature",
                                        "attested_at": ATTESTED_SIGNED}]
    listed = pharmacy.client.get("/api/v1/custody/entries", headers=pharmacy.as_(
        Role.COMPLIANCE)).json
    [stored] = next(entry for entry in listed if entry["id"] == body["id"])["witnesses"]
    assert stored["attested_at"] == ATTESTED_SIGNED


def test_a_witness_time_beside_a_password_is_refused_by_its_field(pharmacy: Pharmacy):
    before = _ledger(pharmacy)
    response = pharmacy.post(Role.NURSE, {**_waste(pharmacy), "witnesses": [
        {"user_id": str(pharmacy.users[Role.PHARMACIST].id), "password": PASSWORD,
         "attested_at": ATTESTED}]})
    assert response.status_code == 422, response.json
    assert _code(response) == "validation_error"
    assert "attested_at" in response.json["error"]["details"]["fields"]["witnesses"]["0"]
    assert _ledger(pharmacy) == before


@pytest.mark.parametrize(("roles", "status"), [
    ((Role.ADMIN,), 422), ((Role.ADMIN, Role.ADMIN), 422), ((Role.ADMIN, Role.COMPLIANCE), 201)])
def test_a_destruction_needs_two_distinct_witnesses(pharmacy: Pharmacy, roles, status):
    response = pharmacy.post(Role.PHARMACIST, {
        "kind": "destroy", "quantity_ug": 10_000, "details": {"method": "reverse distributor"},
        "witnesses": [{"user_id": str(pharmacy.users[role].id), "password": PASSWORD}
                      for role in roles]})
    assert response.status_code == status, response.json
    if status == 422:
        assert _code(response) == "witness_required"


@pytest.mark.parametrize(("lot", "seal"), [("L1", "S-2"), ("L1", None), ("L2", "S-1")])
def test_a_return_under_another_seal_is_refused(pharmacy: Pharmacy, lot, seal):
    # L2 was never dispensed to the nurse, so no seal can match it.
    assert pharmacy.receive(100_000, lot="L2").status_code == 201
    before = _ledger(pharmacy)
    response = pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 1_000, "lot": lot,
                                          "details": {"seal_id": seal} if seal else {}})
    assert response.status_code == 409, response.json
    assert _code(response) == "seal_mismatch"
    assert response.json["error"]["details"]["presented"] == seal
    assert _ledger(pharmacy) == before


def test_a_pharmacist_taking_a_return_checks_the_seal_too(pharmacy: Pharmacy):
    body = {"kind": "return", "quantity_ug": 1_000, "nurse_id": str(pharmacy.nurse.id)}
    wrong = pharmacy.post(Role.PHARMACIST, {**body, "details": {"seal_id": "S-9"}})
    assert wrong.status_code == 409
    assert _code(wrong) == "seal_mismatch"
    right = pharmacy.post(Role.PHARMACIST, {**body, "details": {"seal_id": "S-1"}})
    assert right.status_code == 201, right.json


def test_wrong_witness_passwords_lock_the_witness_out_as_documented(pharmacy: Pharmacy, app):
    witness = pharmacy.users[Role.PHARMACIST]
    wrong = [{"user_id": str(witness.id), "password": "not the password"}]
    for _ in range(app.config["LOGIN_MAX_PER_ACCOUNT"]):
        response = pharmacy.post(Role.NURSE, {**_waste(pharmacy), "witnesses": wrong})
        assert response.status_code == 422, response.json
    before = _ledger(pharmacy)
    locked = pharmacy.post(Role.NURSE, {**_waste(pharmacy), "witnesses": [
        {"user_id": str(witness.id), "password": PASSWORD}]})
    assert locked.status_code == 429, locked.json
    assert _code(locked) == "locked_out" and "Retry-After" in locked.headers
    assert _ledger(pharmacy) == before
    documented = app.test_client().get("/api/v1/openapi.json").json
    assert "429" in documented["paths"]["/api/v1/custody/entries"]["post"]["responses"]
