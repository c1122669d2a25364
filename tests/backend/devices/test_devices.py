"""Device registration, revocation that ends sessions at once, and signature verification."""

from __future__ import annotations

import base64
import uuid

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.accounts.models import Role
from backend.devices.signatures import canonical_bytes, verify_device_signature
from backend.errors import SignatureInvalid
from tests.factories import Phone, World


@pytest.mark.parametrize(("public_key", "problem"), [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"\x01" * 31).decode(), "32-byte"),
    (base64.b64encode(b"\x01" * 33).decode(), "32-byte"),
])
def test_malformed_public_keys_are_refused(world: World, public_key, problem):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    response = world.client.post("/api/v1/devices", headers=world.headers(org, nurse),
                                 json={"public_key": public_key, "label": "phone"})
    assert response.status_code == 422
    assert problem in response.json["error"]["details"]["fields"]["public_key"][0]


def test_a_key_registers_once(world: World):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    body = {"public_key": Phone.new().public_key_b64(), "label": "phone"}
    headers = world.headers(org, nurse)
    assert world.client.post("/api/v1/devices", headers=headers, json=body).status_code == 201
    assert world.client.post("/api/v1/devices", headers=headers, json=body).status_code == 409


def test_session_bound_to_a_device_ends_when_it_is_revoked(world: World):
    org = world.org()
    admin, nurse = world.user(org, Role.ADMIN), world.user(org, Role.NURSE)
    device_id, _ = world.device(org, nurse)
    pair = world.login(org, nurse, device_id)
    phone_headers = {"Authorization": f"Bearer {pair['access_token']}"}
    me = world.client.get("/api/v1/me", headers=phone_headers)
    assert me.json["device_id"] == str(device_id)
    assert world.client.delete(f"/api/v1/devices/{device_id}",
                               headers=world.headers(org, admin)).status_code == 204
    assert world.client.get("/api/v1/me", headers=phone_headers).status_code == 401
    refreshed = world.client.post("/api/v1/auth/refresh",
                                  json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401
    relogin = world.client.post("/api/v1/auth/login", json={
        "org": org.slug, "username": nurse.username, "password": "correct horse battery staple",
        "device_id": str(device_id)})
    assert relogin.status_code == 422
    assert "device_id" in relogin.json["error"]["details"]["fields"]


def test_cannot_log_in_on_another_nurses_device(world: World):
    org = world.org()
    alice, bea = world.user(org, Role.NURSE), world.user(org, Role.NURSE)
    device_id, _ = world.device(org, alice)
    response = world.client.post("/api/v1/auth/login", json={
        "org": org.slug, "username": bea.username, "password": "correct horse battery staple",
        "device_id": str(device_id)})
    assert response.status_code == 422


def test_nurse_revokes_her_own_device(world: World):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    device_id, _ = world.device(org, nurse)
    headers = world.headers(org, nurse)
    assert world.client.delete(f"/api/v1/devices/{device_id}", headers=headers).status_code == 204
    listed = world.client.get("/api/v1/devices", headers=headers).json
    assert listed[0]["revoked_at"] is not None


PAYLOAD = {"kind": "administer", "quantity_ug": 35000, "lot": "L1", "at": "2026-11-02T14:00:00Z",
           "lat": 41.8781, "note": "é"}


def _verify(world: World, org, nurse, device_id, payload, signature):
    return verify_device_signature(world.session, organisation_id=org.id, user_id=nurse.id,
                                   device_id=device_id, payload=payload, signature_b64=signature)


def test_a_devices_signature_verifies(world: World):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    device_id, phone = world.device(org, nurse)
    assert _verify(world, org, nurse, device_id, PAYLOAD, phone.sign(PAYLOAD)).id == device_id


@pytest.mark.parametrize(("case", "reason"), [
    ("changed_payload", "bad_signature"),
    ("other_key", "bad_signature"),
    ("garbage", "malformed_signature"),
    ("unknown_device", "unknown_device"),
    ("other_users_device", "unknown_device"),
    ("revoked", "revoked_device"),
])
def test_signatures_that_must_fail(world: World, case, reason):
    org = world.org()
    nurse, other = world.user(org, Role.NURSE), world.user(org, Role.NURSE)
    device_id, phone = world.device(org, nurse)
    payload, signature, signer = PAYLOAD, phone.sign(PAYLOAD), nurse
    if case == "changed_payload":
        payload = {**PAYLOAD, "quantity_ug": 35001}
    elif case == "other_key":
        signature = Phone.new().sign(PAYLOAD)
    elif case == "garbage":
        signature = "%%%"
    elif case == "unknown_device":
        device_id = uuid.uuid4()
    elif case == "other_users_device":
        signer = other
    elif case == "revoked":
        world.client.delete(f"/api/v1/devices/{device_id}", headers=world.headers(org, nurse))
        world.session.expire_all()
    with pytest.raises(SignatureInvalid) as caught:
        _verify(world, org, signer, device_id, payload, signature)
    assert caught.value.details["reason"] == reason


@pytest.mark.parametrize(("payload", "expected"), [
    ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
    ({"x": 1.0}, b'{"x":1}'),
    ({"x": [True, None, "\u00e9"]}, '{"x":[true,null,"\u00e9"]}'.encode()),
    ({"n": {"z": 0.5, "y": -3}}, b'{"n":{"y":-3,"z":0.5}}'),
])
def test_canonical_bytes_follow_rfc8785(payload, expected):
    assert canonical_bytes(payload) == expected


def test_key_order_does_not_change_the_signature_check(world: World):
    org = world.org()
    nurse = world.user(org, Role.NURSE)
    device_id, phone = world.device(org, nurse)
    reordered = dict(reversed(list(PAYLOAD.items())))
    _verify(world, org, nurse, device_id, reordered, phone.sign(PAYLOAD))


JSON_WITHOUT_FRACTIONS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=500)
@given(payload=JSON_WITHOUT_FRACTIONS)
def test_the_fast_canonical_form_is_rfc8785(payload):
    try:
        expected = rfc8785.dumps(payload)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        with pytest.raises(SignatureInvalid):
            canonical_bytes(payload)
        return
    assert canonical_bytes(payload) == expected
