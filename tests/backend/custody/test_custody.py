"""The custody ledger: movements by kind, balances, refusals, and verification."""

from __future__ import annotations

import pytest

from backend.accounts.models import Role
from backend.custody.verify import verify
from tests.factories import Pharmacy, World

DAY1 = "2026-11-03T15:00:00+00:00"


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    return pharmacy


def _balances(pharmacy: Pharmacy, holder: str | None = None) -> dict[str, int]:
    rows = pharmacy.client.get("/api/v1/custody/balances", headers=pharmacy.as_(Role.PHARMACIST),
                               query_string={"holder": holder} if holder else {}).json
    return {f"{row['holder'].split(':')[0]}/{row['lot']}": row["quantity_ug"] for row in rows}


def _verify(pharmacy: Pharmacy, app):
    rt = pharmacy.world.rt
    return verify(pharmacy.world.session, pharmacy.org.id, rt.keys.verifying_keys(),
                  app.config["CHECKPOINT_DIR"])


def test_a_home_session_moves_stock_and_the_chain_verifies(pharmacy: Pharmacy, app):
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(500_000).status_code == 201
    visit = pharmacy.schedule(DAY1).json
    administered = pharmacy.post(Role.NURSE, {
        "kind": "administer", "quantity_ug": 35_000, "patient_id": pharmacy.patient_id,
        "visit_id": visit["id"]})
    assert administered.status_code == 201, administered.json
    witness = pharmacy.users[Role.PHARMACIST]
    wasted = pharmacy.post(Role.NURSE, {
        "kind": "waste", "quantity_ug": 15_000,
        "witnesses": [{"user_id": str(witness.id), "password": "correct horse battery staple"}]})
    assert wasted.status_code == 201, wasted.json
    returned = pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 450_000,
                                          "details": {"seal_id": "S-1"}})
    assert returned.status_code == 201, returned.json
    assert _balances(pharmacy) == {"vault/L1": 950_000}
    assert [e["seq"] for e in pharmacy.client.get(
        "/api/v1/custody/entries", headers=pharmacy.as_(Role.COMPLIANCE)).json] == [1, 2, 3, 4, 5]
    report = _verify(pharmacy, app)
    assert report.ok, report.problem
    assert report.entries == 5


def test_withdrawing_more_than_held_is_refused(pharmacy: Pharmacy):
    pharmacy.receive(100_000)
    refused = pharmacy.dispense(100_001)
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "insufficient_stock"
    assert refused.json["error"]["details"]["held_ug"] == 100_000
    assert _balances(pharmacy) == {"vault/L1": 100_000}


def test_a_nurse_cannot_receive(pharmacy: Pharmacy):
    response = pharmacy.post(Role.NURSE, {"kind": "receive", "quantity_ug": 1,
                                          "details": {}, "signature": "x"})
    assert response.status_code == 403


def test_a_pharmacist_cannot_administer_for_a_nurse(pharmacy: Pharmacy):
    response = pharmacy.post(Role.PHARMACIST, {"kind": "administer", "quantity_ug": 1})
    assert response.status_code == 403


def test_the_checkpoint_job_signs_moved_heads_once(pharmacy: Pharmacy, app):
    from backend.custody.verify import exported_checkpoints
    from backend.jobs.service import sign_checkpoints

    pharmacy.receive(1_000)
    session, rt = pharmacy.world.session, pharmacy.world.rt
    assert sign_checkpoints(session, rt)["signed"] >= 1
    assert sign_checkpoints(session, rt) == {"signed": 0}
    [line] = exported_checkpoints(rt.checkpoint_dir, pharmacy.org.id)
    assert (line["seq"], len(line["head_hash"])) == (1, 64)
    listed = pharmacy.client.get("/api/v1/custody/checkpoints",
                                 headers=pharmacy.as_(Role.COMPLIANCE)).json
    assert [c["seq"] for c in listed] == [1]
    assert _verify(pharmacy, app).checkpoints == 1
