"""Custody workflows: counts reconciled, loss deadlines tracked, bags brought back to zero."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.flags.models import Flag
from backend.jobs import scheduler
from backend.jobs import service as jobs
from tests.backend.conftest import START
from tests.factories import PASSWORD, Pharmacy, World

HOME = {"latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 12}
VISIT_START = datetime(2026, 11, 2, 16, 0, tzinfo=UTC)  # 10:00 in Chicago
VISIT_END = datetime(2026, 11, 2, 19, 0, tzinfo=UTC)


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    return pharmacy


def _count(pharmacy: Pharmacy, holder: str, counts: dict[str, int], **body):
    lines = [{"product_id": pharmacy.product_id, "lot": lot, "quantity_ug": quantity}
             for lot, quantity in counts.items()]
    return pharmacy.client.post("/api/v1/custody/counts", headers=pharmacy.as_(Role.PHARMACIST),
                                json={"holder": holder, "counted_at": START.isoformat(),
                                      "counts": lines, **body})


def _flags(pharmacy: Pharmacy, rule_id: str) -> list[Flag]:
    session = pharmacy.world.session
    session.expire_all()
    return list(session.scalars(select(Flag).where(Flag.organisation_id == pharmacy.org.id,
                                                   Flag.rule_id == rule_id)))


def _balances(pharmacy: Pharmacy) -> dict[str, int]:
    rows = pharmacy.client.get("/api/v1/custody/balances",
                               headers=pharmacy.as_(Role.PHARMACIST)).json
    return {f"{row['holder'].split(':')[0]}/{row['lot']}": row["quantity_ug"] for row in rows}


def _entries(pharmacy: Pharmacy, kind: str) -> list[dict]:
    return pharmacy.client.get("/api/v1/custody/entries", headers=pharmacy.as_(Role.COMPLIANCE),
                               query_string={"kind": kind}).json


def _run(world: World, body) -> dict:
    outcome = body(world.session, world.rt)
    world.commit()
    return outcome


def _bag(pharmacy: Pharmacy) -> str:
    return f"bag:{pharmacy.nurse.id}"


def test_a_count_that_matches_the_ledger_is_audited_and_raises_nothing(pharmacy: Pharmacy):
    pharmacy.receive(1_000_000)
    response = _count(pharmacy, "vault", {"L1": 1_000_000})
    assert response.status_code == 201, response.json
    assert response.json["discrepancies"] == 0
    assert response.json["lots"] == [{
        "product_id": pharmacy.product_id, "lot": "L1", "ledger_ug": 1_000_000,
        "counted_ug": 1_000_000, "difference_ug": 0, "reason": None, "adjustment_id": None,
        "flag_id": None}]
    assert _flags(pharmacy, "custody.count_discrepancy") == []
    [event] = pharmacy.world.session.scalars(select(AuditEvent).where(
        AuditEvent.organisation_id == pharmacy.org.id, AuditEvent.action == "custody.count"))
    assert event.object_id == response.json["id"]
    assert event.detail["lots"][0]["counted_ug"] == 1_000_000


def test_a_discrepancy_without_a_reason_is_flagged_and_leaves_the_ledger(pharmacy: Pharmacy):
    pharmacy.receive(1_000_000)
    pharmacy.receive(500_000, lot="L2")
    response = _count(pharmacy, "vault", {"L1": 990_000})
    assert response.status_code == 201, response.json
    lots = {line["lot"]: line for line in response.json["lots"]}
    assert (lots["L1"]["ledger_ug"], lots["L1"]["counted_ug"],
            lots["L1"]["difference_ug"]) == (1_000_000, 990_000, -10_000)
    # A lot the ledger holds but the count left out was counted as nothing.
    assert (lots["L2"]["counted_ug"], lots["L2"]["difference_ug"]) == (0, -500_000)
    assert {line["adjustment_id"] for line in lots.values()} == {None}
    assert _balances(pharmacy) == {"vault/L1": 1_000_000, "vault/L2": 500_000}
    assert _entries(pharmacy, "adjust") == []
    flags = {flag.subject_id: flag for flag in _flags(pharmacy, "custody.count_discrepancy")}
    assert set(flags) == {"L1", "L2"}
    flag = flags["L1"]
    assert (flag.severity, flag.subject_kind, str(flag.id)) == ("high", "lot",
                                                                lots["L1"]["flag_id"])
    assert flag.evidence == {
        "holder": "vault", "product_id": pharmacy.product_id, "lot": "L1",
        "ledger_ug": 1_000_000, "counted_ug": 990_000, "difference_ug": -10_000,
        "count_id": response.json["id"], "counted_at": START.isoformat(),
        "counted_by_id": str(pharmacy.users[Role.PHARMACIST].id)}


def test_a_discrepancy_with_a_reason_is_adjusted_once(pharmacy: Pharmacy):
    pharmacy.receive(1_000_000)
    pharmacy.dispense(100_000)
    body = {"id": str(uuid.uuid4()), "reasons": {"L1": "vial cracked in transit, incident 12"}}
    response = _count(pharmacy, _bag(pharmacy), {"L1": 90_000}, **body)
    assert response.status_code == 201, response.json
    [line] = response.json["lots"]
    assert (line["difference_ug"], line["reason"]) == (-10_000, "vial cracked in transit, "
                                                                 "incident 12")
    [adjust] = _entries(pharmacy, "adjust")
    assert adjust["id"] == line["adjustment_id"]
    assert (adjust["from_holder"], adjust["to_holder"], adjust["quantity_ug"]) == (
        _bag(pharmacy), "count", 10_000)
    assert adjust["details"]["direction"] == "down"
    assert _balances(pharmacy) == {"vault/L1": 900_000, "bag/L1": 90_000}
    [flag] = _flags(pharmacy, "custody.count_discrepancy")
    assert flag.evidence["adjustment_id"] == adjust["id"]
    retried = _count(pharmacy, _bag(pharmacy), {"L1": 90_000}, **body)
    assert retried.status_code == 201, retried.json
    assert len(_entries(pharmacy, "adjust")) == 1
    assert _balances(pharmacy)["bag/L1"] == 90_000
    recount = _count(pharmacy, _bag(pharmacy), {"L1": 90_000})
    assert recount.json["discrepancies"] == 0


def test_a_surplus_with_a_reason_is_adjusted_up(pharmacy: Pharmacy):
    pharmacy.receive(1_000_000)
    response = _count(pharmacy, "vault", {"L1": 1_050_000},
                      reasons={"L1": "receipt under-recorded, invoice INV-1 says 21 vials"})
    assert response.status_code == 201, response.json
    [adjust] = _entries(pharmacy, "adjust")
    assert (adjust["from_holder"], adjust["to_holder"], adjust["details"]["direction"]) == (
        "count", "vault", "up")
    assert _balances(pharmacy) == {"vault/L1": 1_050_000}


def test_a_lot_new_to_the_ledger_is_adjusted_in_with_its_expiry(pharmacy: Pharmacy):
    found = {"product_id": pharmacy.product_id, "lot": "L9", "quantity_ug": 50_000}
    body = {"holder": "vault", "counted_at": START.isoformat(),
            "reasons": {"L9": "unrecorded delivery found on the shelf"}}
    headers = pharmacy.as_(Role.PHARMACIST)
    refused = pharmacy.client.post("/api/v1/custody/counts", headers=headers,
                                   json={**body, "counts": [found]})
    assert refused.status_code == 422
    assert "expiry" in refused.json["error"]["details"]["fields"]["counts"][0]
    adjusted = pharmacy.client.post("/api/v1/custody/counts", headers=headers, json={
        **body, "counts": [{**found, "expiry": "2027-06-30"}]})
    assert adjusted.status_code == 201, adjusted.json
    assert _balances(pharmacy) == {"vault/L9": 50_000}
    [adjust] = _entries(pharmacy, "adjust")
    assert (adjust["expiry"], adjust["details"]["direction"]) == ("2027-06-30", "up")


def test_a_count_is_reconciled_with_the_ledger_as_of_its_time(pharmacy: Pharmacy, clock):
    pharmacy.receive(1_000_000)
    clock.advance(hours=1)
    pharmacy.dispense(100_000)
    # Counted before the dispense was recorded: the vault still held the whole receipt.
    response = _count(pharmacy, "vault", {"L1": 1_000_000})
    assert response.json["discrepancies"] == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"counted_at": "2026-11-02T15:00:00+00:00"}, "counted_at"),
    ({"holder": "bag:not-a-uuid"}, "holder"),
    ({"holder": f"bag:{uuid.uuid4()}"}, "holder"),
    ({"holder": "patient"}, "holder"),
    ({"reasons": {"L9": "no such lot"}}, "reasons"),
])
def test_a_count_is_refused_when(pharmacy: Pharmacy, change, field):
    pharmacy.receive(1_000_000)
    body = {"holder": "vault", "counted_at": START.isoformat(),
            "counts": [{"product_id": pharmacy.product_id, "lot": "L1", "quantity_ug": 1}]}
    response = pharmacy.client.post("/api/v1/custody/counts",
                                    headers=pharmacy.as_(Role.PHARMACIST), json={**body, **change})
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert _flags(pharmacy, "custody.count_discrepancy") == []


def test_a_lot_counted_twice_is_refused(pharmacy: Pharmacy):
    line = {"product_id": pharmacy.product_id, "lot": "L1", "quantity_ug": 1}
    response = pharmacy.client.post("/api/v1/custody/counts",
                                    headers=pharmacy.as_(Role.PHARMACIST),
                                    json={"holder": "vault", "counted_at": START.isoformat(),
                                          "counts": [line, line]})
    assert response.status_code == 422
    assert "counts.1" in response.json["error"]["details"]["fields"]


def _lose(pharmacy: Pharmacy, quantity_ug: int = 5_000):
    response = pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "quantity_ug": quantity_ug, "holder": "vault",
        "details": {"circumstances": "vial missing from the vault at the morning count"}})
    assert response.status_code == 201, response.json
    return response.json


def _losses(pharmacy: Pharmacy, role: Role = Role.COMPLIANCE) -> list[dict]:
    response = pharmacy.client.get("/api/v1/custody/losses", headers=pharmacy.as_(role))
    assert response.status_code == 200, response.json
    return response.json


def _file(pharmacy: Pharmacy, loss_id: str, filing: str, filed_at: datetime,
          role: Role = Role.COMPLIANCE):
    return pharmacy.client.post(f"/api/v1/custody/losses/{loss_id}/filings",
                                headers=pharmacy.as_(role),
                                json={"filing": filing, "filed_at": filed_at.isoformat()})


def test_losses_are_listed_with_their_deadlines_and_what_is_overdue(pharmacy: Pharmacy, clock):
    pharmacy.receive(1_000_000)
    entry = _lose(pharmacy)
    [loss] = _losses(pharmacy)
    assert (loss["entry_id"], loss["holder"], loss["lot"], loss["quantity_ug"]) == (
        entry["id"], "vault", "L1", 5_000)
    # Discovered Monday 08:00 in Chicago: notice by Tuesday 08:00, Form 106 in 45 days.
    assert loss["notice_due_at"] == "2026-11-03T14:00:00+00:00"
    assert loss["form_106_due_at"] == "2026-12-17T14:00:00+00:00"
    assert (loss["notice_overdue"], loss["form_106_overdue"]) == (False, False)
    clock.advance(hours=24, seconds=1)
    [loss] = _losses(pharmacy, Role.PHARMACIST)
    assert (loss["notice_overdue"], loss["form_106_overdue"]) == (True, False)
    assert loss["notice_filed_at"] is None


def test_a_filing_is_recorded_once_and_audited(pharmacy: Pharmacy, clock):
    pharmacy.receive(1_000_000)
    _lose(pharmacy)
    [loss] = _losses(pharmacy)
    clock.advance(hours=25)
    filed = _file(pharmacy, loss["id"], "dea_notice", START + timedelta(hours=25))
    assert filed.status_code == 201, filed.json
    assert filed.json["notice_filed_at"] == "2026-11-03T15:00:00+00:00"
    assert filed.json["notice_overdue"] is False
    again = _file(pharmacy, loss["id"], "dea_notice", START + timedelta(hours=25),
                  Role.PHARMACIST)
    assert again.status_code == 409
    [event] = pharmacy.world.session.scalars(select(AuditEvent).where(
        AuditEvent.organisation_id == pharmacy.org.id,
        AuditEvent.action == "custody.loss_filing"))
    assert (event.object_id, event.detail["filing"], event.detail["late"]) == (
        loss["id"], "dea_notice", True)


@pytest.mark.parametrize(("filing", "filed_at", "status"), [
    ("form_106", START + timedelta(minutes=1), 422),  # after the clock's now
    ("form_106", START - timedelta(minutes=1), 422),  # before the loss was discovered
    ("form_41", START, 422),
])
def test_a_filing_is_refused_when(pharmacy: Pharmacy, filing, filed_at, status):
    pharmacy.receive(1_000_000)
    _lose(pharmacy)
    [loss] = _losses(pharmacy)
    assert _file(pharmacy, loss["id"], filing, filed_at).status_code == status


def test_a_filing_for_an_unknown_loss_is_not_found(pharmacy: Pharmacy):
    assert _file(pharmacy, str(uuid.uuid4()), "dea_notice", START).status_code == 404


def test_each_missed_loss_deadline_is_flagged_once(world: World, pharmacy: Pharmacy, clock):
    pharmacy.receive(1_000_000)
    _lose(pharmacy)
    [loss] = _losses(pharmacy)
    assert _run(world, jobs.track_loss_deadlines) == {"flagged": 0}
    clock.advance(hours=24, minutes=1)
    assert _run(world, jobs.track_loss_deadlines) == {"flagged": 1}
    assert _run(world, jobs.track_loss_deadlines) == {"flagged": 0}
    [flag] = _flags(pharmacy, "custody.loss_deadline_missed")
    assert (flag.severity, flag.subject_kind, flag.subject_id, flag.occurrences) == (
        "critical", "lot", "L1", 1)
    assert (flag.evidence["loss_report_id"], flag.evidence["filing"]) == (loss["id"],
                                                                          "dea_notice")
    assert _file(pharmacy, loss["id"], "dea_notice", clock.now()).status_code == 201
    clock.advance(days=45)
    assert _run(world, jobs.track_loss_deadlines) == {"flagged": 1}
    assert {f.evidence["filing"] for f in _flags(pharmacy, "custody.loss_deadline_missed")} == {
        "dea_notice", "form_106"}


def _shift(pharmacy: Pharmacy, clock, *, administered: int = 35_000, wasted: int = 15_000):
    """Dispense a kit, give one visit's dose and waste the rest of the vial, and check out."""
    pharmacy.receive(1_000_000)
    pharmacy.dispense(100_000)
    visit = pharmacy.schedule(VISIT_START.isoformat())
    assert visit.status_code == 201, visit.json
    clock.set(VISIT_START)
    phone = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    path = f"/api/v1/visits/{visit.json['id']}"
    assert pharmacy.client.post(f"{path}/check-in", headers=phone, json={
        **HOME, "occurred_at": VISIT_START.isoformat()}).status_code == 200
    assert pharmacy.post(Role.NURSE, {
        "kind": "administer", "quantity_ug": administered, "patient_id": pharmacy.patient_id,
        "visit_id": visit.json["id"]}).status_code == 201
    witness = pharmacy.users[Role.PHARMACIST]
    assert pharmacy.post(Role.NURSE, {
        "kind": "waste", "quantity_ug": wasted,
        "witnesses": [{"user_id": str(witness.id), "password": PASSWORD}]}).status_code == 201
    clock.set(VISIT_END)
    phone = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    assert pharmacy.client.post(f"{path}/check-out", headers=phone, json={
        **HOME, "occurred_at": VISIT_END.isoformat()}).status_code == 200


def _statement(pharmacy: Pharmacy, role: Role = Role.PHARMACIST, nurse_id=None, **query):
    return pharmacy.client.get(
        f"/api/v1/custody/bags/{nurse_id or pharmacy.nurse.id}/statement",
        headers=pharmacy.as_(role), query_string=query)


def test_a_bag_statement_shows_each_lots_figures(pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock)
    response = _statement(pharmacy)
    assert response.status_code == 200, response.json
    assert response.json["from"] == "2026-11-02T06:00:00+00:00"  # midnight in Chicago
    assert response.json["to"] == VISIT_END.isoformat()
    [line] = response.json["lines"]
    assert line == {
        "product_id": pharmacy.product_id, "lot": "L1", "opening_ug": 0,
        "dispensed_ug": 100_000, "transferred_in_ug": 0, "adjusted_up_ug": 0,
        "administered_ug": 35_000, "wasted_ug": 15_000, "returned_ug": 0,
        "transferred_out_ug": 0, "lost_ug": 0, "adjusted_down_ug": 0, "remaining_ug": 50_000}
    later = _statement(pharmacy, **{"from": "2026-11-02T15:00:00+00:00"})
    [line] = later.json["lines"]
    assert (line["opening_ug"], line["dispensed_ug"], line["remaining_ug"]) == (100_000, 0,
                                                                                50_000)


def test_a_nurse_sees_only_her_own_bag_statement(world: World, pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock)
    assert _statement(pharmacy, Role.NURSE).status_code == 200
    other = world.user(pharmacy.org, Role.NURSE)
    assert _statement(pharmacy, Role.NURSE, nurse_id=other.id).status_code == 404
    assert _statement(pharmacy, Role.COMPLIANCE, nurse_id=uuid.uuid4()).status_code == 404
    assert _statement(pharmacy, **{"from": VISIT_END.isoformat(),
                                   "to": VISIT_START.isoformat()}).status_code == 422


def test_a_bag_not_back_to_zero_by_the_deadline_is_flagged_once(world: World,
                                                                pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock)
    clock.set(VISIT_END + timedelta(hours=2, seconds=-1))
    assert _run(world, jobs.reconcile_bags) == {"flagged": 0}
    clock.set(VISIT_END + timedelta(hours=2))
    assert _run(world, jobs.reconcile_bags) == {"flagged": 1}
    assert _run(world, jobs.reconcile_bags) == {"flagged": 0}
    [flag] = _flags(pharmacy, "custody.bag_unbalanced")
    assert (flag.severity, flag.subject_kind, flag.subject_id, flag.occurrences) == (
        "high", "nurse", str(pharmacy.nurse.id), 1)
    assert {name: value for name, value in flag.evidence.items()
            if name.startswith("L1.")} == {
        "L1.product_id": pharmacy.product_id, "L1.opening_ug": 0, "L1.dispensed_ug": 100_000,
        "L1.transferred_in_ug": 0, "L1.adjusted_up_ug": 0, "L1.administered_ug": 35_000,
        "L1.wasted_ug": 15_000, "L1.returned_ug": 0, "L1.transferred_out_ug": 0,
        "L1.lost_ug": 0, "L1.adjusted_down_ug": 0, "L1.remaining_ug": 50_000}
    assert (flag.evidence["day"], flag.evidence["remaining_ug"]) == ("2026-11-02", 50_000)
    # The statement for the same period shows exactly the flag's figures.
    statement = _statement(pharmacy, **{"from": "2026-11-02T06:00:00+00:00",
                                        "to": flag.evidence["deadline_at"]}).json
    assert {f"L1.{name}": value for name, value in statement["lines"][0].items()
            if name != "lot"} == {name: value for name, value in flag.evidence.items()
                                  if name.startswith("L1.")}


def test_a_bag_returned_in_time_is_not_flagged_nor_is_the_next_days_kit(
        world: World, pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock)
    clock.advance(minutes=40)
    returned = pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 50_000,
                                          "details": {"seal_id": "S-1"}})
    assert returned.status_code == 201, returned.json
    clock.set(datetime(2026, 11, 3, 13, 0, tzinfo=UTC))  # 07:00 next morning in Chicago
    assert pharmacy.dispense(100_000, seal="S-2").status_code == 201
    assert _run(world, jobs.reconcile_bags) == {"flagged": 0}
    assert _flags(pharmacy, "custody.bag_unbalanced") == []


def test_the_bag_deadline_is_the_organisations_policy(world: World, pharmacy: Pharmacy,
                                                      clock):
    _shift(pharmacy, clock)
    changed = pharmacy.client.put("/api/v1/policy/bag_return_deadline_hours",
                                  headers=pharmacy.as_(Role.ADMIN), json={"value": "4"})
    assert changed.status_code == 200, changed.json
    clock.set(VISIT_END + timedelta(hours=3))
    assert _run(world, jobs.reconcile_bags) == {"flagged": 0}
    clock.set(VISIT_END + timedelta(hours=4))
    assert _run(world, jobs.reconcile_bags) == {"flagged": 1}


def test_a_day_with_a_visit_still_to_come_is_not_over(world: World, pharmacy: Pharmacy,
                                                      clock):
    second = pharmacy.patient([pharmacy.nurse])
    pharmacy.plan(patient_id=second)
    evening = pharmacy.client.post("/api/v1/visits", headers=pharmacy.as_(Role.ADMIN), json={
        "patient_id": second, "nurse_id": str(pharmacy.nurse.id),
        "scheduled_start": "2026-11-03T00:00:00+00:00"})  # 18:00 the same day in Chicago
    assert evening.status_code == 201, evening.json
    _shift(pharmacy, clock)
    clock.set(VISIT_END + timedelta(hours=2))
    assert _run(world, jobs.reconcile_bags) == {"flagged": 0}


def test_the_custody_jobs_are_on_the_schedule():
    specs = {spec.name: (spec.seconds, spec.body) for spec in scheduler.SCHEDULE}
    assert specs["bag_reconciliation"] == (900, jobs.reconcile_bags)
    assert specs["loss_deadlines"] == (3600, jobs.track_loss_deadlines)
