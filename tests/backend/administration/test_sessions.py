"""Recording a home session: signed records, custody in the same transaction, quarantine."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.flags.models import Flag
from tests.factories import Pharmacy, World

DAY1 = "2026-11-03T15:00:00+00:00"


class Session:
    """A visit ready for its session: stock in the nurse's bag, a weight, a check-in."""

    def __init__(self, world: World, stock_ug: int = 500_000) -> None:
        self.pharmacy = pharmacy = Pharmacy(world)
        pharmacy.plan()
        if stock_ug:
            pharmacy.receive(1_000_000)
            pharmacy.dispense(stock_ug)
        self.visit = pharmacy.schedule(DAY1).json
        pharmacy.client.post(f"/api/v1/patients/{pharmacy.patient_id}/weights",
                             headers=pharmacy.as_(Role.NURSE),
                             json={"weight_kg": "70", "measured_at": "2026-11-01T10:00:00Z"})
        self.phone_headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)

    def signed(self, body: dict, phone=None) -> dict:
        """Return `body` with an id, a time and the nurse's phone's signature."""
        body = {"id": str(uuid.uuid4()), "occurred_at": DAY1, **body}
        return {**body, "signature": (phone or self.pharmacy.phone).sign(body)}

    def post(self, part: str, body: dict):
        """Post one signed record."""
        return self.pharmacy.client.post(f"/api/v1/visits/{self.visit['id']}/{part}",
                                         headers=self.phone_headers, json=body)


PRE = {"systolic": 122, "diastolic": 78, "heart_rate": 70, "spo2": 98, "respiratory_rate": 14,
       "moaas": 5, "decision": "go"}


def dose(product_id: str, quantity_ug: int = 35_000) -> dict:
    return {"product_id": product_id, "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": quantity_ug, "route": "IV",
            "infusion_started_at": "2026-11-03T15:10:00+00:00",
            "infusion_ended_at": "2026-11-03T15:50:00+00:00"}


@pytest.fixture
def visit(world: World) -> Session:
    return Session(world)


def _flags(world: World, rule_id: str) -> list[Flag]:
    return list(world.session.scalars(select(Flag).where(Flag.rule_id == rule_id)))


def test_a_session_records_and_moves_custody(visit: Session):
    assert visit.post("pre-dose", visit.signed(PRE)).status_code == 201
    given = visit.post("dose", visit.signed(dose(visit.pharmacy.product_id)))
    assert given.status_code == 201, given.json
    assert given.json["ug_per_kg"] == "500.000"
    assert given.json["custody_entry_id"] is not None
    observed = visit.post("observations", visit.signed({
        "systolic": 150, "diastolic": 92, "moaas": 4,
        "cadss_items": {"1": 2, "2": 1, "6": 0, "7": 3, "15": 1, "22": 0}, "cadss_total": 99,
        "bprs_items": {"1": 1, "2": 2, "3": 1, "4": 1}}))
    assert observed.status_code == 201, observed.json
    assert observed.json["cadss_total"] == 7
    assert observed.json["bprs_total"] == 5
    assert observed.json["client_totals"] == {"cadss_total": 99}
    discharged = visit.post("discharge", visit.signed({
        "systolic": 124, "diastolic": 80, "moaas": 5, "state": "baseline",
        "adverse_event_category": "nausea_vomiting", "adverse_events": "mild nausea at 30 min"}))
    assert discharged.status_code == 201, discharged.json
    record = visit.pharmacy.client.get(f"/api/v1/visits/{visit.visit['id']}/session",
                                       headers=visit.pharmacy.as_(Role.COMPLIANCE)).json
    assert record["dose"]["weight_g"] == 70_000
    assert len(record["observations"]) == 1
    balances = visit.pharmacy.client.get("/api/v1/custody/balances",
                                         headers=visit.pharmacy.as_(Role.PHARMACIST)).json
    bag = next(b for b in balances if b["holder"].startswith("bag:"))
    assert bag["quantity_ug"] == 465_000


def test_a_dose_from_a_bag_without_the_lot_is_kept_and_flagged(world: World):
    visit = Session(world, stock_ug=0)
    given = visit.post("dose", visit.signed(dose(visit.pharmacy.product_id)))
    assert given.status_code == 201, given.json
    assert given.json["custody_entry_id"] is None
    [flag] = _flags(world, "custody.administer_discrepancy")
    assert (flag.evidence["quantity_ug"], flag.evidence["lot"]) == (35_000, "L1")


def test_a_dose_of_a_product_not_in_the_catalogue_is_404_and_stores_nothing(visit: Session):
    given = visit.post("dose", visit.signed(dose(str(uuid.uuid4()))))
    assert given.status_code == 404, given.json
    record = visit.pharmacy.client.get(f"/api/v1/visits/{visit.visit['id']}/session",
                                       headers=visit.pharmacy.as_(Role.COMPLIANCE)).json
    assert record["dose"] is None


def test_a_bad_signature_is_quarantined_and_flagged(visit: Session):
    from tests.factories import Phone

    forged = visit.signed(PRE, phone=Phone.new())
    refused = visit.post("pre-dose", forged)
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "signature_invalid"
    record = visit.pharmacy.client.get(f"/api/v1/visits/{visit.visit['id']}/session",
                                       headers=visit.pharmacy.as_(Role.COMPLIANCE)).json
    assert record["pre_dose"] is None
    assert [q["record_type"] for q in record["quarantined"]] == ["pre_dose"]
    assert len(_flags(visit.pharmacy.world, "sync.quarantined_event")) == 1


def test_an_identical_retry_is_a_no_op_and_a_different_body_is_quarantined(visit: Session):
    body = visit.signed(PRE)
    first = visit.post("pre-dose", body)
    again = visit.post("pre-dose", body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json == again.json
    changed = visit.signed({**PRE, "id": body["id"], "systolic": 180})
    assert visit.post("pre-dose", changed).json["error"]["code"] == "append_only"


@pytest.mark.parametrize(("part", "body", "field"), [
    ("pre-dose", {**PRE, "systolic": 400}, "systolic"),
    ("pre-dose", {**PRE, "spo2": 120}, "spo2"),
    ("pre-dose", {**PRE, "diastolic": 130}, "diastolic"),
    ("pre-dose", {**PRE, "decision": "no_go"}, "decision_reason"),
    ("observations", {"cadss_items": {"1": 5, "2": 0, "6": 0, "7": 0, "15": 0, "22": 0}},
     "cadss_items.1"),
    ("observations", {"cadss_items": {"1": 1}}, "cadss_items"),
    ("observations", {"bprs_items": {"1": 0, "2": 1, "3": 1, "4": 1}}, "bprs_items.1"),
])
def test_impossible_values_are_refused_naming_the_field(visit: Session, part, body, field):
    response = visit.post(part, visit.signed(body))
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]


def test_an_infusion_that_ends_before_it_starts_is_refused(visit: Session):
    body = {**dose(visit.pharmacy.product_id), "infusion_ended_at": "2026-11-03T15:00:00Z"}
    response = visit.post("dose", visit.signed(body))
    assert "infusion_ended_at" in response.json["error"]["details"]["fields"]


def test_another_nurse_cannot_record_and_compliance_cannot_write(visit: Session, world: World):
    other = world.user(visit.pharmacy.org, Role.NURSE)
    device_id, phone = world.device(visit.pharmacy.org, other)
    response = visit.pharmacy.client.post(
        f"/api/v1/visits/{visit.visit['id']}/pre-dose",
        headers=world.headers(visit.pharmacy.org, other, device_id),
        json=visit.signed(PRE, phone=phone))
    assert response.status_code == 404
    compliance = visit.pharmacy.client.post(
        f"/api/v1/visits/{visit.visit['id']}/pre-dose",
        headers=visit.pharmacy.as_(Role.COMPLIANCE), json=visit.signed(PRE))
    assert compliance.status_code == 403


def test_a_whole_session_at_once_quarantines_only_the_bad_part(visit: Session):
    from tests.factories import Phone

    body = {"pre_dose": visit.signed(PRE),
            "dose": visit.signed(dose(visit.pharmacy.product_id)),
            "observations": [visit.signed({"moaas": 4}),
                             visit.signed({"moaas": 5}, phone=Phone.new())],
            "discharge": visit.signed({"moaas": 5, "state": "baseline",
                                       "adverse_event_category": "none"})}
    response = visit.post("session", body)
    assert response.status_code == 201, response.json
    assert response.json["dose"]["custody_entry_id"] is not None
    assert len(response.json["observations"]) == 1
    assert [q["record_type"] for q in response.json["quarantined"]] == [
        "monitoring_observation"]


def test_a_session_refused_by_a_later_part_still_keeps_its_quarantined_part(visit: Session):
    from tests.factories import Phone

    assert visit.post("dose", visit.signed(dose(visit.pharmacy.product_id))).status_code == 201
    forged = visit.signed(PRE, phone=Phone.new())
    response = visit.post("session", {"pre_dose": forged,
                                      "dose": visit.signed(dose(visit.pharmacy.product_id))})
    # The second dose refuses the whole session; the forged pre-dose was recorded on the
    # phone all the same, so it stays in quarantine with its flag.
    assert response.status_code == 409, response.json
    record = visit.pharmacy.client.get(f"/api/v1/visits/{visit.visit['id']}/session",
                                       headers=visit.pharmacy.as_(Role.COMPLIANCE)).json
    assert record["pre_dose"] is None
    assert [(q["record_type"], q["reason"].split(":")[0]) for q in record["quarantined"]] == [
        ("pre_dose", "signature_invalid")]
    assert len(_flags(visit.pharmacy.world, "sync.quarantined_event")) == 1


def test_the_remainder_is_wasted_before_a_witness(visit: Session):
    from tests.factories import signed_payload

    pharmacy = visit.pharmacy
    body = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 15_000, "occurred_at": DAY1,
            "visit_id": visit.visit["id"]}
    witness = {"user_id": str(pharmacy.users[Role.PHARMACIST].id),
               "password": "correct horse battery staple"}
    signature = pharmacy.phone.sign(signed_payload(pharmacy, body))
    payload = {k: v for k, v in body.items() if k not in ("kind", "visit_id")}
    unwitnessed = visit.post("waste", {**payload, "signature": signature, "witnesses": []})
    assert unwitnessed.status_code == 422
    wasted = visit.post("waste", {**payload, "signature": signature, "witnesses": [witness]})
    assert wasted.status_code == 201, wasted.json
    assert (wasted.json["to_holder"], wasted.json["visit_id"]) == ("waste", visit.visit["id"])


def test_a_whole_session_keeps_a_refused_waste_in_quarantine(visit: Session):
    from tests.factories import signed_payload

    pharmacy = visit.pharmacy
    waste = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": pharmacy.product_id,
             "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 15_000, "occurred_at": DAY1,
             "visit_id": visit.visit["id"]}
    signature = pharmacy.phone.sign(signed_payload(pharmacy, waste))
    unwitnessed = {**{k: v for k, v in waste.items() if k not in ("kind", "visit_id")},
                   "signature": signature, "witnesses": [
                       {"user_id": str(pharmacy.nurse.id), "password": "x"}]}
    response = visit.post("session", {"pre_dose": visit.signed(PRE), "waste": unwitnessed})
    assert response.status_code == 201, response.json
    [held] = response.json["quarantined"]
    assert held["record_type"] == "custody_waste"
    assert held["reason"].startswith("witness_required")
    assert response.json["pre_dose"] is not None
