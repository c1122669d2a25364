"""A retry finds the record stored under its id; a different record under the id is refused.

Over HTTP, at every create endpoint that takes a client-made id, the refusal is 409, whoever
holds the id: a record of the caller's organisation or of another (issue 13: it was a 500).
"""

from __future__ import annotations

import uuid

import pytest

from backend.client_ids import stored_twin
from backend.errors import Conflict
from tests.backend.scene import (
    ADMIN,
    DAY1,
    DISCHARGE,
    NURSE,
    PHARMACIST,
    PHONE,
    PLAN,
    PRE_DOSE,
    PRESCRIBER,
    Scene,
    changed,
    row_counts,
)
from tests.factories import PASSWORD, Phone, World, signed_payload

STORED = {"id": "a", "systolic": 120}


@pytest.mark.parametrize(("stored", "incoming", "expected"), [
    (None, STORED, None),
    (STORED, dict(STORED), STORED),
])
def test_a_new_id_or_an_identical_retry_passes(stored, incoming, expected):
    assert stored_twin(stored, incoming, content=dict, conflict=Conflict("taken")) is expected


def test_a_different_record_under_a_stored_id_is_the_conflict():
    conflict = Conflict("A different record already has this id.")
    with pytest.raises(Conflict) as raised:
        stored_twin(STORED, {**STORED, "systolic": 121}, content=dict, conflict=conflict)
    assert raised.value is conflict


# --- Over HTTP: every create endpoint that takes a client-made id -----------------------------

DOSE = {"lot": "L1", "expiry": "2028-01-31", "quantity_ug": 35_000, "route": "IV",
        "infusion_started_at": "2026-11-03T15:10Z", "infusion_ended_at": "2026-11-03T15:50Z"}
OUTCOME = {"instrument": "phq9", "items": {str(item): 1 for item in range(1, 10)}}
COUNTED_AT = "2026-11-02T13:00:00Z"


def _recorded(scene, part: str, body: dict) -> str:
    response = scene.send("POST", f"/api/v1/visits/{{visit}}/{part}", PHONE, scene.signed(body))
    assert response.status_code == 201, response.json
    return response.json["id"]


def _stored_ids(scene) -> dict[str, str]:
    """Return the id of one stored record of each kind in the scene's organisation."""
    dose = {**DOSE, "product_id": scene.ids["product"]}
    entries = scene.send("GET", "/api/v1/custody/entries", PHARMACIST).json
    return {**scene.ids, "entry": entries[0]["id"],
            "pre-dose": _recorded(scene, "pre-dose", PRE_DOSE),
            "dose": _recorded(scene, "dose", dose),
            "observations": _recorded(scene, "observations", {"systolic": 120, "diastolic": 80}),
            "discharge": _recorded(scene, "discharge", DISCHARGE),
            "outcomes": _recorded(scene, "outcomes", OUTCOME)}


def _waste(scene, taken: str) -> dict:
    """Return a witnessed waste of the visit under `taken`, signed as the phone signs it."""
    body = {"id": taken, "kind": "waste", "product_id": scene.ids["product"], "lot": "L1",
            "expiry": "2028-01-31", "quantity_ug": 5, "occurred_at": DAY1,
            "visit_id": scene.ids["visit"]}
    signature = scene.pharmacy.phone.sign(signed_payload(scene.pharmacy, body))
    return {**{k: v for k, v in body.items() if k not in ("kind", "visit_id")},
            "signature": signature, "witnesses": [
                {"user_id": str(scene.pharmacy.users[PHARMACIST].id), "password": PASSWORD}]}


def _part(part: str, body: dict):
    return (PHONE, f"/api/v1/visits/{{visit}}/{part}",
            lambda s, taken: s.signed({**body(s), "id": taken}), part)


# kind, role, path, a different record under `taken`, which stored id it takes
CREATES = [
    ("device", NURSE, "/api/v1/devices", lambda s, taken: {
        "id": taken, "public_key": Phone.new().public_key_b64(), "label": "spare"}, "device"),
    ("patient", ADMIN, "/api/v1/patients", lambda s, taken: {
        "id": taken, "mrn": f"MRN-{uuid.uuid4()}", "name": "N", "date_of_birth": "1970-01-01"},
     "patient"),
    ("product", PHARMACIST, "/api/v1/products", lambda s, taken: {
        "id": taken, "name": f"Ketamine {uuid.uuid4()}", "active_ingredient": "ketamine",
        "dea_schedule": "III", "form": "vial", "ug_per_unit": 10_000,
        "units_per_container": "5", "allowed_routes": ["IV"],
        "home_administration_allowed": True}, "product"),
    ("plan", PRESCRIBER, "/api/v1/patients/{unplanned}/plans", lambda s, taken: {
        **PLAN, "id": taken, "product_id": s.ids["product"]}, "plan"),
    ("visit", ADMIN, "/api/v1/visits", lambda s, taken: {
        "id": taken, "patient_id": s.ids["patient"], "nurse_id": s.ids["nurse"],
        "scheduled_start": "2026-11-20T15:00:00Z"}, "visit"),
    ("custody entry", PHARMACIST, "/api/v1/custody/entries",
     lambda s, taken: s.entry(id=taken, quantity_ug=7), "entry"),
    ("waste", PHONE, "/api/v1/visits/{visit}/waste", lambda s, taken: _waste(s, taken),
     "entry"),
    ("pre-dose", *_part("pre-dose", lambda s: {**PRE_DOSE, "systolic": 131})),
    ("dose", *_part("dose", lambda s: {**DOSE, "product_id": s.ids["product"],
                                       "quantity_ug": 30_000})),
    ("observation", *_part("observations", lambda s: {"systolic": 140, "diastolic": 85})),
    ("discharge", *_part("discharge", lambda s: {**DISCHARGE, "moaas": 4})),
    ("outcome", *_part("outcomes", lambda s: {**OUTCOME, "items": {"1": 3, **{
        str(item): 0 for item in range(2, 10)}}})),
]


@pytest.fixture
def scenes(world: World):
    ours, theirs = Scene(world), Scene(world)
    return ours, {"ours": _stored_ids(ours), "theirs": _stored_ids(theirs)}


@pytest.mark.parametrize("owner", ["ours", "theirs"])
@pytest.mark.parametrize(("role", "path", "body", "kind"), [case[1:] for case in CREATES],
                         ids=[case[0] for case in CREATES])
def test_a_different_record_under_a_taken_id_is_409_even_another_organisations(
        scenes, connection, owner, role, path, body, kind):
    scene, stored = scenes
    unplanned = scene.pharmacy.patient([scene.pharmacy.nurse])
    sent = body(scene, stored[owner][kind])
    before = row_counts(connection)
    response = scene.send("POST", path.replace("{unplanned}", unplanned), role, sent)
    assert response.status_code == 409, response.json
    assert response.json["error"]["code"] in {"conflict", "append_only"}
    # What a refusal keeps: its audit row, and a phone's record its quarantine and flag.
    kept = changed(before, row_counts(connection))
    assert {table for table, rows in kept.items() if rows < 0} == set()
    assert set(kept) <= {"audit_event", "quarantined_event", "flag", "flag_event",
                         "flag_occurrence", "sync_row", "sync_counter"}, kept
