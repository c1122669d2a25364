"""Seals per kit: a return must bring back the seal of a kit of its lot still out in the bag.

A kit is what went out to a bag under one seal; it holds what was dispensed under its seal less
what came back under it. Two kits of one lot in one bag are told apart by their seals: kit A's
vial comes back under A's seal whenever kit B went out, and B's seal covers at most what B holds.
"""

from __future__ import annotations

import json
import uuid

import pytest

from backend.accounts.models import Role
from backend.custody.models import CustodyEntry
from tests.backend.sync.test_sync import Handset, custody_row
from tests.factories import Pharmacy, World

# Movements before the return under test, in order: (kind, lot, seal, µg); each is recorded.
A300 = ("dispense", "L1", "A", 300_000)
B200 = ("dispense", "L1", "B", 200_000)
C200_L2 = ("dispense", "L2", "C", 200_000)


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    """Return a pharmacy whose vault holds 1 g of each of lots L1 and L2."""
    pharmacy = Pharmacy(world)
    for lot in ("L1", "L2"):
        assert pharmacy.receive(1_000_000, lot=lot).status_code == 201
    return pharmacy


@pytest.fixture
def colleague(pharmacy: Pharmacy) -> str:
    """Return the id of a second nurse, who can be handed stock."""
    return str(pharmacy.world.user(pharmacy.org, Role.NURSE).id)


def _move(pharmacy: Pharmacy, colleague: str, kind: str, lot: str, seal: str | None,
          quantity_ug: int):
    body = {"kind": kind, "lot": lot, "quantity_ug": quantity_ug}
    if kind == "dispense":
        return pharmacy.dispense(quantity_ug, lot=lot, seal=seal)
    if kind == "transfer":
        return pharmacy.post(Role.NURSE, {**body, "nurse_id": colleague})
    return pharmacy.post(Role.NURSE, {**body, "details": {"seal_id": seal} if seal else {}})


def _ledger(pharmacy: Pharmacy) -> tuple[list[str], list[dict]]:
    """Return the entry ids in chain order and every balance, as compliance sees them."""
    headers = pharmacy.as_(Role.COMPLIANCE)
    entries = pharmacy.client.get("/api/v1/custody/entries", headers=headers).json
    balances = pharmacy.client.get("/api/v1/custody/balances", headers=headers).json
    return [entry["id"] for entry in entries], balances


CASES = {
    # One kit.
    "one kit, all of it under its seal": ([A300], ("L1", "A", 300_000), 201, None),
    "one kit, part of it under its seal": ([A300], ("L1", "A", 100_000), 201, None),
    "one kit, more than it holds": ([A300], ("L1", "A", 300_001), 409, ["A"]),
    "one kit, another seal": ([A300], ("L1", "B", 1_000), 409, ["A"]),
    "one kit, no seal": ([A300], ("L1", None, 1_000), 409, ["A"]),
    # Two kits of one lot in one bag: A went out first, then B.
    "two kits, A's vial under A's seal": ([A300, B200], ("L1", "A", 300_000), 201, None),
    "two kits, under B's seal for B's quantity": ([A300, B200], ("L1", "B", 200_000), 201,
                                                  None),
    "two kits, under B's seal for more than B holds": ([A300, B200], ("L1", "B", 200_001), 409,
                                                       ["A", "B"]),
    "two kits, a seal never dispensed": ([A300, B200], ("L1", "Z", 1_000), 409, ["A", "B"]),
    "two kits, A fully returned, A's seal again": (
        [A300, B200, ("return", "L1", "A", 300_000)], ("L1", "A", 1_000), 409, ["B"]),
    "two kits, A partly returned, the rest of A": (
        [A300, B200, ("return", "L1", "A", 100_000)], ("L1", "A", 200_000), 201, None),
    "two kits, A partly returned, more than A has left": (
        [A300, B200, ("return", "L1", "A", 100_000)], ("L1", "A", 200_001), 409, ["A", "B"]),
    "two kits, B returned, then A's seal": (
        [A300, B200, ("return", "L1", "B", 200_000)], ("L1", "A", 300_000), 201, None),
    # Different lots: a seal belongs to its own lot's kit.
    "two lots, L1 under L2's seal": ([A300, C200_L2], ("L1", "C", 1_000), 409, ["A"]),
    "two lots, L2 under L1's seal": ([A300, C200_L2], ("L2", "A", 1_000), 409, ["C"]),
    "two lots, L2 under its own seal": ([A300, C200_L2], ("L2", "C", 200_000), 201, None),
    "a lot never dispensed to the bag": ([A300], ("L2", "A", 1_000), 409, []),
}


@pytest.mark.parametrize(("before", "attempt", "status", "expected"), CASES.values(),
                         ids=CASES.keys())
def test_a_return_matches_the_seal_of_a_kit_still_out(pharmacy, colleague, before, attempt,
                                                      status, expected):
    for movement in before:
        assert _move(pharmacy, colleague, *movement).status_code == 201
    ledger = _ledger(pharmacy)
    lot, seal, quantity_ug = attempt
    response = _move(pharmacy, colleague, "return", lot, seal, quantity_ug)
    assert response.status_code == status, response.json
    if status == 201:
        assert (response.json["kind"], response.json["details"]) == ("return", {"seal_id": seal})
        assert _ledger(pharmacy)[0] == [*ledger[0], response.json["id"]]
        return
    assert response.json["error"]["code"] == "seal_mismatch"
    assert response.json["error"]["details"]["expected"] == expected
    assert response.json["error"]["details"]["presented"] == seal
    assert _ledger(pharmacy) == ledger


@pytest.mark.parametrize(("returned_ug", "status", "code"), [
    (100_000, 201, None), (100_001, 409, "insufficient_stock")])
def test_stock_handed_on_cannot_come_back_under_the_kits_seal(pharmacy, colleague, returned_ug,
                                                              status, code):
    # Kit A's seal still covers 300 mg, but 200 mg of it went to a colleague: the bag caps it.
    for movement in (A300, ("transfer", "L1", None, 200_000)):
        assert _move(pharmacy, colleague, *movement).status_code == 201
    ledger = _ledger(pharmacy)
    response = _move(pharmacy, colleague, "return", "L1", "A", returned_ug)
    assert response.status_code == status, response.json
    if code:
        assert response.json["error"]["code"] == code
        assert _ledger(pharmacy) == ledger


def test_a_retried_return_that_closed_its_kit_is_recognised(pharmacy, colleague):
    assert _move(pharmacy, colleague, *A300).status_code == 201
    body = {"id": str(uuid.uuid4()), "kind": "return", "quantity_ug": 300_000,
            "details": {"seal_id": "A"}}
    first = pharmacy.post(Role.NURSE, body)
    assert first.status_code == 201, first.json
    ledger = _ledger(pharmacy)
    again = pharmacy.post(Role.NURSE, body)
    assert again.status_code == 201, again.json
    assert again.json["id"] == first.json["id"]
    assert _ledger(pharmacy) == ledger


@pytest.mark.parametrize(("seal", "quantity_ug", "status"), [
    ("A", 300_000, 201), ("B", 200_000, 201), ("B", 300_000, 409), ("Z", 1_000, 409)])
def test_a_pharmacist_at_the_counter_is_held_to_the_same_kits(pharmacy, colleague, seal,
                                                              quantity_ug, status):
    for movement in (A300, B200):
        assert _move(pharmacy, colleague, *movement).status_code == 201
    response = pharmacy.post(Role.PHARMACIST, {
        "kind": "return", "quantity_ug": quantity_ug, "nurse_id": str(pharmacy.nurse.id),
        "details": {"seal_id": seal}})
    assert response.status_code == status, response.json


def test_a_return_pushed_from_the_phone_is_matched_per_kit(pharmacy, colleague, world):
    for movement in (A300, B200):
        assert _move(pharmacy, colleague, *movement).status_code == 201
    handset = Handset(pharmacy)
    handset.sync_pull()
    own, over = (custody_row(pharmacy, handset, {"kind": "return", "quantity_ug": quantity_ug,
                                                 "details": {"seal_id": seal}})
                 for seal, quantity_ug in (("A", 300_000), ("B", 250_000)))
    response = handset.push({"custody_entries": {"created": [own, over], "updated": [],
                                                 "deleted": []}})
    assert response.status_code == 200, response.json
    assert response.json["applied"] == {"custody_entries": 1}
    assert [(q["record_id"], q["reason"].split(":")[0])
            for q in response.json["quarantined"]] == [(over["id"], "seal_mismatch")]
    entry = world.session.get(CustodyEntry, uuid.UUID(own["id"]))
    assert (entry.kind, entry.quantity_ug, entry.details) == ("return", 300_000,
                                                              json.loads(own["details"]))
