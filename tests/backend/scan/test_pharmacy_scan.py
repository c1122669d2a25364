"""The pharmacy side driven through the API: a pharmacist who receives, counts short and adjusts
down is flagged at the write and by the scan; an honest pharmacist raises nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from backend.accounts.models import Role, User
from backend.flags.models import Flag
from backend.scan import service as scan
from tests.backend.conftest import START
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, World

LOT, OTHER_LOT = "V1", "V2"
DELIVERY = 10_000_000


def _posted(response) -> dict:
    assert response.status_code == 201, response.json
    return response.json


def _receive(pharmacy: Pharmacy, lot: str, quantity_ug: int, **stated):
    """Receive a delivery into the vault, stating what was ordered and invoiced."""
    return pharmacy.post(Role.PHARMACIST, {"kind": "receive", "lot": lot,
                                           "quantity_ug": quantity_ug, "details": SUPPLIER,
                                           **stated})


def _count(pharmacy: Pharmacy, found: dict[str, int], reasons: dict[str, str] | None = None):
    lines = [{"product_id": pharmacy.product_id, "lot": lot, "quantity_ug": quantity}
             for lot, quantity in found.items()]
    return pharmacy.client.post("/api/v1/custody/counts", headers=pharmacy.as_(Role.PHARMACIST),
                                json={"holder": "vault", "counted_at": START.isoformat(),
                                      "counts": lines, "reasons": reasons or {}})


def _pharmacy_flags(world: World, pharmacy: Pharmacy) -> dict[str, Flag]:
    world.session.expire_all()
    flags = world.session.scalars(select(Flag).where(Flag.organisation_id == pharmacy.org.id,
                                                     Flag.rule_id.like("pharmacy.%")))
    return {flag.rule_id: flag for flag in flags}


def _scan(world: World, pharmacy: Pharmacy) -> dict[str, Flag]:
    # Past the days a shortfall has to be reported as a loss.
    world.rt.clock.set(START + timedelta(days=5))
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id,
                           since=world.rt.clock.now() - timedelta(days=30))
    return _pharmacy_flags(world, pharmacy)


def test_a_pharmacist_who_receives_counts_short_and_adjusts_down_is_flagged(world: World):
    pharmacy = Pharmacy(world)
    pharmacist = str(pharmacy.users[Role.PHARMACIST].id)
    _posted(_receive(pharmacy, LOT, DELIVERY, ordered_ug=DELIVERY, invoiced_ug=DELIVERY))
    booked = _posted(_receive(pharmacy, OTHER_LOT, DELIVERY - 500_000, invoiced_ug=DELIVERY))
    assert booked["details"]["invoiced_ug"] == DELIVERY
    # Judged at the write: the receipt booked for less than the invoice.
    mismatch = _pharmacy_flags(world, pharmacy)["pharmacy.receipt_mismatch"]
    assert (mismatch.subject_kind, mismatch.subject_id) == ("nurse", pharmacist)
    assert (mismatch.evidence["lot"], mismatch.evidence["difference_ug"]) == (OTHER_LOT, -500_000)

    counted = _count(pharmacy, {LOT: DELIVERY - 300_000, OTHER_LOT: DELIVERY - 500_000},
                     {LOT: "vials broken in storage"})
    assert counted.status_code == 201, counted.json
    duties = _pharmacy_flags(world, pharmacy)["pharmacy.separation_of_duties"]
    assert (duties.subject_id, duties.severity) == (pharmacist, "high")
    assert duties.evidence["duties"] == "received, counted_short, adjusted_down"

    flags = _scan(world, pharmacy)
    shortfall = flags["pharmacy.adjustment_after_shortfall"]
    assert (shortfall.subject_id, shortfall.severity) == (pharmacist, "high")
    assert shortfall.evidence["unreported_ug"] == 300_000
    assert "vials broken in storage" in shortfall.summary
    total = flags["pharmacy.adjustment_total"]
    assert total.subject_id == pharmacist
    assert total.evidence["net_written_off_ug"] == 300_000
    assert total.evidence["received_ug"] == 2 * DELIVERY - 500_000
    assert all("Check" in flag.summary for flag in flags.values())


def test_a_shortfall_reported_as_a_loss_is_not_written_off(world: World):
    pharmacy = Pharmacy(world)
    _posted(_receive(pharmacy, LOT, DELIVERY))
    # Counted short with no adjustment; the shortfall is then reported as a loss of the vault.
    assert _count(pharmacy, {LOT: DELIVERY - 50_000}).status_code == 201
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "lot": LOT, "quantity_ug": 50_000, "holder": "vault",
        "details": {"circumstances": "shortfall at the count; police informed"}}))
    flags = _scan(world, pharmacy)
    assert "pharmacy.adjustment_after_shortfall" not in flags
    assert "pharmacy.adjustment_total" not in flags


def _destroy(pharmacy: Pharmacy, headers: dict, quantity_ug: int) -> None:
    witnesses = [{"user_id": str(pharmacy.users[role].id), "password": PASSWORD}
                 for role in (Role.ADMIN, Role.COMPLIANCE)]
    _posted(pharmacy.client.post("/api/v1/custody/entries", headers=headers, json={
        "id": str(uuid.uuid4()), "kind": "destroy", "product_id": pharmacy.product_id,
        "lot": LOT, "expiry": "2028-01-31", "quantity_ug": quantity_ug,
        "occurred_at": START.isoformat(), "witnesses": witnesses,
        "details": {"method": "reverse distributor, DEA Form 41"}}))


def _dispense(pharmacy: Pharmacy, headers: dict, quantity_ug: int, seal: str) -> None:
    _posted(pharmacy.client.post("/api/v1/custody/entries", headers=headers, json={
        "id": str(uuid.uuid4()), "kind": "dispense", "product_id": pharmacy.product_id,
        "lot": LOT, "expiry": "2028-01-31", "quantity_ug": quantity_ug,
        "occurred_at": START.isoformat(), "nurse_id": str(pharmacy.nurse.id),
        "details": {"seal_id": seal}}))


def test_a_pharmacist_who_destroys_far_more_than_her_peer_is_flagged(world: World):
    pharmacy = Pharmacy(world)
    peer: User = world.user(pharmacy.org, Role.PHARMACIST)
    mine, theirs = pharmacy.as_(Role.PHARMACIST), world.headers(pharmacy.org, peer)
    _posted(pharmacy.client.post("/api/v1/custody/entries", headers=theirs, json={
        "id": str(uuid.uuid4()), "kind": "receive", "product_id": pharmacy.product_id,
        "lot": LOT, "expiry": "2028-01-31", "quantity_ug": DELIVERY,
        "occurred_at": START.isoformat(), "details": SUPPLIER}))
    _dispense(pharmacy, theirs, 500_000, "S-1")
    _dispense(pharmacy, mine, 900_000, "S-2")
    for _ in range(3):
        _destroy(pharmacy, mine, 100_000)
    outlier = _scan(world, pharmacy)["pharmacy.disposal_outlier"]
    pharmacist = str(pharmacy.users[Role.PHARMACIST].id)
    # Three destructions on the one day she worked, against her peer's none.
    assert (outlier.subject_id, outlier.evidence["destructions"]) == (pharmacist, 3)
    assert (outlier.evidence["per_day"], outlier.evidence["peers"]) == ("3.0000", 1)


def test_an_honest_pharmacist_raises_nothing(world: World):
    pharmacy = Pharmacy(world)
    _posted(_receive(pharmacy, LOT, DELIVERY, ordered_ug=DELIVERY, invoiced_ug=DELIVERY))
    _posted(pharmacy.dispense(500_000, lot=LOT))
    assert _count(pharmacy, {LOT: DELIVERY - 500_000}).status_code == 201
    assert _scan(world, pharmacy) == {}


def test_only_a_receipt_states_an_ordered_or_invoiced_quantity(world: World):
    pharmacy = Pharmacy(world)
    _posted(_receive(pharmacy, LOT, DELIVERY))
    refused = pharmacy.post(Role.PHARMACIST, {"kind": "dispense", "lot": LOT,
                                              "quantity_ug": 50_000, "invoiced_ug": 50_000,
                                              "nurse_id": str(pharmacy.nurse.id),
                                              "details": {"seal_id": "S-1"}})
    assert refused.status_code == 422, refused.json
