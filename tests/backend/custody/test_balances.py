"""Balances cannot overflow: 64-bit columns, at most 1 kg an entry, at most 2^53 − 1 µg a lot.

A third receipt of 1,000,000,000 µg into one lot overflowed the 32-bit balance column and
answered 500 (issue 13). It is now stored; a movement that would take a balance past what a
phone counts exactly is 409 `balance_limit`, and a correction larger than one entry may move
is 409, each leaving every table as it was but for the refusal's audit row.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from backend.custody.ledger import MAX_BALANCE_UG, MAX_MOVEMENT_UG
from backend.custody.models import CustodyBalance
from tests.backend.scene import (
    NURSE,
    PHARMACIST,
    Scene,
    changed,
    refusal_records,
    row_counts,
)
from tests.factories import World

GRAM_UG = 1_000_000


@pytest.fixture
def scene(world: World) -> Scene:
    return Scene(world)


def _vault(scene: Scene, lot: str) -> int:
    balances = scene.send("GET", "/api/v1/custody/balances", PHARMACIST,
                          query={"holder": "vault"}).json
    return next(b["quantity_ug"] for b in balances if b["lot"] == lot)


def _fill(world: World, scene: Scene, lot: str, quantity_ug: int) -> None:
    """Set the vault's balance of `lot` directly: no test can post 9 million receipts."""
    world.session.execute(update(CustodyBalance).where(
        CustodyBalance.organisation_id == scene.pharmacy.org.id, CustodyBalance.holder == "vault",
        CustodyBalance.lot == lot).values(quantity_ug=quantity_ug))
    world.commit()


def test_three_kilograms_into_one_lot_are_held(scene):
    for _ in range(3):
        received = scene.send("POST", "/api/v1/custody/entries", PHARMACIST,
                              scene.entry(lot="BULK", quantity_ug=MAX_MOVEMENT_UG))
        assert received.status_code == 201, received.json
    assert _vault(scene, "BULK") == 3 * MAX_MOVEMENT_UG


@pytest.mark.parametrize(("held", "status"), [
    (MAX_BALANCE_UG - GRAM_UG, 201),
    (MAX_BALANCE_UG - GRAM_UG + 1, 409),
    (MAX_BALANCE_UG, 409),
])
def test_a_deposit_past_the_largest_balance_is_refused(scene, world, connection, held, status):
    assert scene.send("POST", "/api/v1/custody/entries", PHARMACIST,
                      scene.entry(lot="BULK", quantity_ug=1)).status_code == 201
    _fill(world, scene, "BULK", held)
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/custody/entries", PHARMACIST,
                          scene.entry(lot="BULK", quantity_ug=GRAM_UG))
    assert response.status_code == status, response.json
    if status == 409:
        assert response.json["error"]["code"] == "balance_limit"
        assert response.json["error"]["details"]["limit_ug"] == MAX_BALANCE_UG
        assert changed(before, row_counts(connection)) == refusal_records(PHARMACIST, "POST")
        assert _vault(scene, "BULK") == held
    else:
        assert _vault(scene, "BULK") == MAX_BALANCE_UG


def test_a_dispense_into_a_full_bag_is_refused_and_the_vault_keeps_its_stock(scene, world,
                                                                           connection):
    world.session.execute(update(CustodyBalance).where(
        CustodyBalance.holder == f"bag:{scene.ids['nurse']}").values(
            quantity_ug=MAX_BALANCE_UG))
    world.commit()
    vault = _vault(scene, "L1")
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/custody/entries", PHARMACIST, scene.entry(
        kind="dispense", quantity_ug=1, nurse_id=scene.ids["nurse"],
        details={"seal_id": "S-2"}))
    assert response.status_code == 409, response.json
    assert response.json["error"]["code"] == "balance_limit"
    assert changed(before, row_counts(connection)) == refusal_records(PHARMACIST, "POST")
    assert _vault(scene, "L1") == vault


@pytest.mark.parametrize("quantity_ug", [MAX_MOVEMENT_UG + 1, 2**31, 2**40])
def test_an_entry_moves_at_most_a_kilogram(scene, connection, quantity_ug):
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/custody/entries", PHARMACIST,
                          scene.entry(quantity_ug=quantity_ug))
    assert response.status_code == 422, response.json
    assert "quantity_ug" in response.json["error"]["details"]["fields"]
    assert changed(before, row_counts(connection)) == refusal_records(PHARMACIST, "POST")


def test_a_count_whose_correction_would_move_more_than_an_entry_may_is_refused(scene, world,
                                                                             connection):
    for _ in range(3):
        assert scene.send("POST", "/api/v1/custody/entries", PHARMACIST, scene.entry(
            lot="BULK", quantity_ug=MAX_MOVEMENT_UG)).status_code == 201
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/custody/counts", PHARMACIST, {
        "holder": "vault", "counted_at": "2026-11-02T14:00:00Z",
        "counts": [{"product_id": scene.ids["product"], "lot": "BULK", "quantity_ug": 0},
                   {"product_id": scene.ids["product"], "lot": "L1", "quantity_ug": 500_000}],
        "reasons": {"BULK": "pallet found empty"}})
    assert response.status_code == 409, response.json
    assert response.json["error"]["details"] == {"rule": "quantity"}
    assert changed(before, row_counts(connection)) == refusal_records(PHARMACIST, "POST")
    assert _vault(scene, "BULK") == 3 * MAX_MOVEMENT_UG


def test_the_nurse_reads_her_bag_as_before(scene):
    balances = scene.send("GET", "/api/v1/custody/balances", NURSE).json
    assert [(b["holder"], b["quantity_ug"]) for b in balances] == [
        (f"bag:{scene.ids['nurse']}", 500_000)]
