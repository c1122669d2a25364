"""DEA reports from the ledger: the dispensing log (1304.22(c)) and the inventory (1304.11)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from tests.backend.conftest import START
from tests.factories import PASSWORD, Pharmacy, World

# November 2026 in Chicago: from midnight CDT on the 1st to midnight CST on 1 December.
MONTH = {"from": "2026-11-01T05:00:00+00:00", "to": "2026-12-01T06:00:00+00:00"}
VISITS = ("2026-11-03T15:00:00+00:00", "2026-11-06T15:00:00+00:00",
          "2026-11-10T15:00:00+00:00", "2026-11-13T15:00:00+00:00")
ADDRESS = "12 Elm Street, Apt 3, Chicago, IL 60601"
# What 21 CFR 1304.22(c) asks of every event, and of each kind of event besides.
EVERY_EVENT = ("entry_id", "seq", "date", "occurred_at", "kind", "substance", "product",
               "dea_schedule", "dosage_form", "strength", "units_per_container", "quantity_ug",
               "quantity_mg", "lot", "expiry", "from_holder", "recipient", "by_username")
BY_KIND = {
    "received": ("supplier_name", "supplier_address", "supplier_dea"),
    "dispensed to nurse": ("recipient_name",),
    "administered": ("recipient_name", "recipient_address"),
    "wasted": ("manner", "witness_usernames"),
    "returned": ("recipient_name",),
    "lost": ("manner",),
    "destroyed": ("manner", "witness_usernames"),
}


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    changed = pharmacy.client.patch(f"/api/v1/patients/{pharmacy.patient_id}",
                                    headers=pharmacy.as_(Role.ADMIN), json={"address": ADDRESS})
    assert changed.status_code == 200, changed.json
    return pharmacy


def _posted(response) -> dict:
    assert response.status_code == 201, response.json
    return response.json


def _password(pharmacy: Pharmacy, role: Role) -> dict:
    return {"user_id": str(pharmacy.users[role].id), "password": PASSWORD}


def _seed_month(pharmacy: Pharmacy) -> int:
    """Post a month of custody: receipts, four home visits, a return, a loss, a destruction."""
    _posted(pharmacy.receive(1_000_000))
    _posted(pharmacy.receive(500_000, lot="L2"))
    for number, start in enumerate(VISITS, 1):
        visit = _posted(pharmacy.schedule(start))
        kit = 100_000 if number == len(VISITS) else 50_000
        _posted(pharmacy.dispense(kit, seal=f"S-{number}"))
        _posted(pharmacy.post(Role.NURSE, {
            "kind": "administer", "quantity_ug": 35_000, "patient_id": pharmacy.patient_id,
            "visit_id": visit["id"], "occurred_at": start}))
        _posted(pharmacy.post(Role.NURSE, {
            "kind": "waste", "quantity_ug": 15_000, "occurred_at": start,
            "witnesses": [_password(pharmacy, Role.PHARMACIST)]}))
    _posted(pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 50_000,
                                       "occurred_at": "2026-11-13T20:00:00+00:00",
                                       "details": {"seal_id": f"S-{len(VISITS)}"}}))
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "lot": "L2", "quantity_ug": 5_000, "holder": "vault",
        "occurred_at": "2026-11-20T15:00:00+00:00",
        "details": {"circumstances": "vial broken, contents not recoverable"}}))
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "destroy", "lot": "L2", "quantity_ug": 100_000,
        "occurred_at": "2026-11-27T15:00:00+00:00",
        "details": {"method": "reverse distributor, DEA Form 41"},
        "witnesses": [_password(pharmacy, Role.ADMIN), _password(pharmacy, Role.COMPLIANCE)]}))
    return 2 + 3 * len(VISITS) + 3


def _dispensing(pharmacy: Pharmacy, role: Role = Role.COMPLIANCE, **query):
    return pharmacy.client.get("/api/v1/custody/reports/dispensing",
                               headers=pharmacy.as_(role), query_string={**MONTH, **query})


def test_the_dispensing_log_csv_has_one_complete_row_per_event(pharmacy: Pharmacy):
    events = _seed_month(pharmacy)
    response = _dispensing(pharmacy, format="csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    text = response.get_data(as_text=True)
    # A byte-order mark, so spreadsheets read the UTF-8 (µg) as UTF-8.
    assert response.get_data().startswith(b"\xef\xbb\xbf")
    text = text.removeprefix("\ufeff")
    # RFC 4180: CRLF line ends, and a field holding a comma is quoted.
    assert text.count("\r\n") == events + 1
    assert '"1 Depot Rd, Elk Grove"' in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == events
    assert len({row["entry_id"] for row in rows}) == events
    assert {row["kind"] for row in rows} == set(BY_KIND)
    for row in rows:
        missing = [name for name in (*EVERY_EVENT, *BY_KIND[row["kind"]]) if not row[name]]
        assert not missing, (row["kind"], missing)


def test_the_dispensing_log_names_recipients_suppliers_and_witnesses(pharmacy: Pharmacy):
    _seed_month(pharmacy)
    response = _dispensing(pharmacy)
    assert response.status_code == 200, response.json
    log = response.json
    assert (log["registrant"]["name"], log["registrant"]["dea_registration"]) == (
        "Test Pharmacy", "FV0000000")
    by_kind: dict[str, list[dict]] = {}
    for event in log["events"]:
        by_kind.setdefault(event["kind"], []).append(event)
    given = by_kind["administered"][0]
    assert (given["recipient"], given["recipient_name"], given["recipient_address"]) == (
        f"patient:{pharmacy.patient_id}", "Pat Test", ADDRESS)
    assert (given["date"], given["quantity_ug"], given["quantity_mg"]) == ("2026-11-03",
                                                                          35_000, "35.000")
    assert (given["substance"], given["dosage_form"], given["strength"],
            given["units_per_container"]) == ("ketamine", "vial", "50 mg/mL (50000 µg/mL)",
                                              "10.000")
    assert (given["by_username"], given["by_name"]) == (pharmacy.nurse.username,
                                                        pharmacy.nurse.display_name)
    # The order the dose followed, and the prescriber's signature of it.
    assert (given["order_version"], given["order_signed_by"], given["order_factor"]) == (
        1, pharmacy.prescriber.display_name, "totp")
    assert given["order_signed_at"] is not None and given["order_version_id"]
    received = by_kind["received"][0]
    assert (received["supplier_name"], received["supplier_dea"]) == ("Example Wholesale Inc.",
                                                                    "RW0000000")
    dispensed = by_kind["dispensed to nurse"][0]
    assert (dispensed["recipient"], dispensed["by_username"]) == (
        f"bag:{pharmacy.nurse.id}", pharmacy.users[Role.PHARMACIST].username)
    destroyed = by_kind["destroyed"][0]
    assert destroyed["manner"] == "reverse distributor, DEA Form 41"
    assert sorted(destroyed["witness_usernames"]) == sorted(
        pharmacy.users[role].username for role in (Role.ADMIN, Role.COMPLIANCE))
    assert len(destroyed["witness_names"]) == 2 and destroyed["order_version_id"] is None
    # Recorded at the desk with a fresh second factor, which the record names.
    assert destroyed["by_factor"] == "totp"
    assert (given["by_factor"], dispensed["by_factor"]) == (None, None)
    assert by_kind["wasted"][0]["witness_usernames"] == [
        pharmacy.users[Role.PHARMACIST].username]
    # The ledger keeps only the surrogate id: the name came from the encrypted patient record.
    assert "Pat Test" not in str(pharmacy.client.get(
        "/api/v1/custody/entries", headers=pharmacy.as_(Role.COMPLIANCE)).json)


def test_the_dispensing_log_is_an_audited_phi_read(pharmacy: Pharmacy):
    _seed_month(pharmacy)
    compliance = pharmacy.users[Role.COMPLIANCE]
    assert _dispensing(pharmacy).status_code == 200
    actions = [(e.action, e.object_id) for e in pharmacy.world.session.scalars(
        select(AuditEvent).where(AuditEvent.user_id == compliance.id,
                                 AuditEvent.action.not_like("auth.%")))]
    assert sorted(actions) == [("custody.dispensing_log", str(pharmacy.org.id)),
                               ("patient.read", pharmacy.patient_id)]


def test_the_dispensing_log_covers_only_its_period(pharmacy: Pharmacy):
    _seed_month(pharmacy)
    week = _dispensing(pharmacy, **{"from": "2026-11-06T00:00:00+00:00",
                                    "to": "2026-11-10T00:00:00+00:00"}).json
    assert [event["kind"] for event in week["events"]] == ["administered", "wasted"]
    assert _dispensing(pharmacy, **{"from": MONTH["to"], "to": MONTH["from"]}).status_code == 422
    assert _dispensing(pharmacy, format="pdf").status_code == 422


def _inventory(pharmacy: Pharmacy, **query):
    return pharmacy.client.get("/api/v1/custody/reports/inventory",
                               headers=pharmacy.as_(Role.PHARMACIST), query_string=query)


def test_the_inventory_is_the_ledger_as_of_a_time(pharmacy: Pharmacy, clock):
    _posted(pharmacy.receive(1_000_000))
    clock.advance(hours=1)
    _posted(pharmacy.dispense(100_000))
    before = _inventory(pharmacy, as_of=(START + timedelta(minutes=30)).isoformat(), at="open")
    assert before.status_code == 200, before.json
    assert (before.json["date"], before.json["at"]) == ("2026-11-02", "open")
    assert [(line["holder"], line["quantity_ug"]) for line in before.json["lines"]] == [
        ("vault", 1_000_000)]
    now = _inventory(pharmacy).json
    assert (now["as_of"], now["at"]) == (clock.now().isoformat(), "close")
    lines = {line["holder"]: line for line in now["lines"]}
    vault = lines["vault"]
    assert (vault["quantity_ug"], vault["quantity_mg"], vault["quantity_units"], vault["unit"],
            vault["containers"], vault["expiry"]) == (900_000, "900.000", "18.000", "mL",
                                                      None, "2028-01-31")
    assert lines[f"bag:{pharmacy.nurse.id}"]["holder_name"] == pharmacy.nurse.display_name
    balances = pharmacy.client.get("/api/v1/custody/balances",
                                   headers=pharmacy.as_(Role.PHARMACIST)).json
    assert {(b["holder"], b["lot"], b["quantity_ug"]) for b in balances} == {
        (line["holder"], line["lot"], line["quantity_ug"]) for line in now["lines"]}


def test_the_inventory_csv_dates_each_row(pharmacy: Pharmacy):
    _posted(pharmacy.receive(1_000_000))
    _posted(pharmacy.dispense(100_000))
    response = _inventory(pharmacy, format="csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert [(row["date"], row["at"], row["holder"], row["quantity_ug"]) for row in rows] == [
        ("2026-11-02", "close", f"bag:{pharmacy.nurse.id}", "100000"),
        ("2026-11-02", "close", "vault", "900000")]


def test_an_inventory_of_the_future_is_refused(pharmacy: Pharmacy):
    future = datetime(2026, 11, 3, tzinfo=UTC).isoformat()
    assert _inventory(pharmacy, as_of=future).status_code == 422
    assert _inventory(pharmacy, at="noon").status_code == 422
