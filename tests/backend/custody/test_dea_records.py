"""The DEA records as they are filed (21 CFR 1304.22(c), 1304.11): the dispensing log, the live
inventory and the signed inventory, each complete from a seeded session, in JSON, CSV and print;
business-day deadlines across federal holidays."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import rfc8785
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import flag_modified

from backend.accounts.models import Organisation, Role
from backend.audit.models import AuditEvent
from backend.custody.deadlines import add_business_days
from backend.custody.models import InventoryRecord, LossReport
from backend.products.models import DrugProduct
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, World

CHICAGO = ZoneInfo("America/Chicago")
# November 2026 in Chicago: from midnight CDT on the 1st to midnight CST on 1 December.
MONTH = {"from": "2026-11-01T05:00:00+00:00", "to": "2026-12-01T06:00:00+00:00"}
VISIT = "2026-11-03T15:00:00+00:00"
PATIENT_ADDRESS = "12 Elm Street, Apt 3, Chicago, IL 60601"
NAMES = {Role.ADMIN: "Ada Admin", Role.PRESCRIBER: "Dr Paula Prescriber",
         Role.PHARMACIST: "Phil Pharmacist", Role.NURSE: "Nora Nurse",
         Role.COMPLIANCE: "Cora Compliance"}
REGISTRANT = {"name": "Test Pharmacy", "dea_registration": "FV0000000",
              "dea_expires_on": "2028-03-31", "address": "100 Main St, Suite 2, Chicago, IL 60601",
              "address_line": "100 Main St, Suite 2", "city": "Chicago", "state": "IL",
              "postal_code": "60601", "phone": "+1 312 555 0100"}
NDC = "12345-6789-01"
STRENGTH = "50 mg/mL (50000 µg/mL)"
PACKAGE = "10 mL multi-dose vial (10 mL per vial)"
REFUSED = "This needs your second factor, confirmed within the last 15 minutes."
STEP_UP_LINK = re.compile(r'<a href="([^"]+)">Confirm your second factor</a>')


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    """A registrant with its address, people with full names, a product with its NDC."""
    pharmacy = Pharmacy(world)
    organisation = world.session.get(Organisation, pharmacy.org.id)
    organisation.address_line, organisation.city = "100 Main St, Suite 2", "Chicago"
    organisation.state, organisation.postal_code = "IL", "60601"
    organisation.phone, organisation.dea_expires_on = "+1 312 555 0100", date(2028, 3, 31)
    for role, name in NAMES.items():
        pharmacy.users[role].display_name = name
    product = world.session.get(DrugProduct, uuid.UUID(pharmacy.product_id))
    product.ndc, product.package_description = "12345678901", "10 mL multi-dose vial"
    world.commit()
    changed = pharmacy.client.patch(f"/api/v1/patients/{pharmacy.patient_id}",
                                    headers=pharmacy.as_(Role.ADMIN),
                                    json={"address": PATIENT_ADDRESS})
    assert changed.status_code == 200, changed.json
    return pharmacy


def _posted(response) -> dict:
    assert response.status_code == 201, response.json
    return response.json


def _witness(pharmacy: Pharmacy, role: Role) -> dict:
    return {"user_id": str(pharmacy.users[role].id), "password": PASSWORD}


def _seed(pharmacy: Pharmacy) -> None:
    """Post one of each kind: receive, dispense, administer, waste, return, adjust, loss,
    destroy; then a whole vial to the nurse, so the inventory holds a bag and the vault."""
    pharmacy.plan()
    _posted(pharmacy.receive(1_500_000))
    visit = _posted(pharmacy.schedule(VISIT))
    _posted(pharmacy.dispense(100_000))
    _posted(pharmacy.post(Role.NURSE, {
        "kind": "administer", "quantity_ug": 35_000, "patient_id": pharmacy.patient_id,
        "visit_id": visit["id"], "occurred_at": VISIT}))
    _posted(pharmacy.post(Role.NURSE, {
        "kind": "waste", "quantity_ug": 15_000, "occurred_at": VISIT,
        "witnesses": [_witness(pharmacy, Role.PHARMACIST)]}))
    _posted(pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 50_000,
                                       "occurred_at": "2026-11-03T20:00:00+00:00",
                                       "details": {"seal_id": "S-1"}}))
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "adjust", "quantity_ug": 1_000, "holder": "vault",
        "details": {"reason": "vial overfill found at count", "direction": "up"}}))
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "quantity_ug": 5_000, "holder": "vault",
        "details": {"circumstances": "vial broken, contents not recoverable"}}))
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "destroy", "quantity_ug": 500_000,
        "details": {"method": "reverse distributor, DEA Form 41"},
        "witnesses": [_witness(pharmacy, Role.ADMIN), _witness(pharmacy, Role.COMPLIANCE)]}))
    _posted(pharmacy.dispense(500_000, seal="S-2"))


def _get(pharmacy: Pharmacy, path: str, role: Role = Role.COMPLIANCE, **query):
    return pharmacy.client.get(f"/api/v1/custody/{path}", headers=pharmacy.as_(role),
                               query_string=query)


def _ok(response) -> dict:
    assert response.status_code == 200, response.json
    return response.json


def _sign(pharmacy: Pharmacy, **body) -> dict:
    return _posted(pharmacy.client.post("/api/v1/custody/inventories",
                                        headers=pharmacy.as_(Role.PHARMACIST),
                                        json={"kind": "biennial", "at": "close", **body}))


def _blank(value: object) -> bool:
    return value is None or value == "" or value == []


# Dispensing log: every event names the registrant, the product, the quantity and the people.

EVERY_EVENT = ("entry_id", "seq", "date", "occurred_at", "kind", "substance", "product", "ndc",
               "dea_schedule", "dosage_form", "strength", "package", "units_per_container",
               "quantity_ug", "quantity_mg", "quantity_units", "unit", "lot", "expiry",
               "from_holder", "recipient", "by_name", "by_role", "by_username")
WITNESSED = ("manner", "witness_names", "witness_roles", "witness_usernames")


@dataclass(frozen=True)
class EventCase:
    """What one kind of event must carry beyond every event's fields, and who recorded it."""

    kind: str
    required: tuple[str, ...]
    by: Role
    quantity: tuple[int, str, str, int | None]  # µg, mg, mL, whole containers
    witnesses: tuple[Role, ...] = ()


EVENTS = [
    EventCase("received", ("supplier_name", "supplier_address", "supplier_dea"),
              Role.PHARMACIST, (1_500_000, "1500.000", "30.000", 3)),
    EventCase("dispensed to nurse", ("recipient_name",), Role.PHARMACIST,
              (100_000, "100.000", "2.000", None)),
    EventCase("administered", ("recipient_name", "recipient_address", "order_version_id",
                               "order_signed_by", "order_signed_by_role", "order_signed_at",
                               "order_factor"), Role.NURSE, (35_000, "35.000", "0.700", None)),
    EventCase("wasted", WITNESSED, Role.NURSE, (15_000, "15.000", "0.300", None),
              (Role.PHARMACIST,)),
    EventCase("returned", ("recipient_name",), Role.NURSE, (50_000, "50.000", "1.000", None)),
    EventCase("count adjustment", ("manner", "by_factor"), Role.PHARMACIST,
              (1_000, "1.000", "0.020", None)),
    EventCase("lost", ("manner", "by_factor"), Role.PHARMACIST, (5_000, "5.000", "0.100", None)),
    EventCase("destroyed", (*WITNESSED, "by_factor"), Role.PHARMACIST,
              (500_000, "500.000", "10.000", 1), (Role.ADMIN, Role.COMPLIANCE)),
]
ROLE_TITLES = {Role.ADMIN: "administrator", Role.PRESCRIBER: "prescriber",
               Role.PHARMACIST: "pharmacist", Role.NURSE: "nurse",
               Role.COMPLIANCE: "compliance officer"}


@pytest.mark.parametrize("case", EVENTS, ids=[case.kind for case in EVENTS])
def test_each_kind_of_event_in_the_dispensing_log_has_every_field_filled(
        pharmacy: Pharmacy, case: EventCase):
    _seed(pharmacy)
    log = _ok(_get(pharmacy, "reports/dispensing", **MONTH))
    assert log["registrant"] == REGISTRANT
    event = next(event for event in log["events"] if event["kind"] == case.kind)
    missing = [name for name in (*EVERY_EVENT, *case.required) if _blank(event[name])]
    assert not missing, missing
    assert (event["ndc"], event["strength"], event["package"], event["unit"]) == (
        NDC, STRENGTH, PACKAGE, "mL")
    assert (event["quantity_ug"], event["quantity_mg"], event["quantity_units"],
            event["containers"]) == case.quantity
    person = pharmacy.users[case.by]
    assert (event["by_name"], event["by_role"], event["by_username"]) == (
        NAMES[case.by], ROLE_TITLES[case.by], person.username)
    assert event["witness_names"] == [NAMES[role] for role in case.witnesses]
    assert event["witness_roles"] == [ROLE_TITLES[role] for role in case.witnesses]
    assert event["witness_usernames"] == [pharmacy.users[r].username for r in case.witnesses]


def test_the_dispensing_log_names_the_prescriber_and_the_patient(pharmacy: Pharmacy):
    _seed(pharmacy)
    log = _ok(_get(pharmacy, "reports/dispensing", **MONTH))
    given = next(event for event in log["events"] if event["kind"] == "administered")
    assert (given["recipient_name"], given["recipient_address"]) == ("Pat Test", PATIENT_ADDRESS)
    assert (given["order_signed_by"], given["order_signed_by_role"]) == (
        NAMES[Role.PRESCRIBER], "prescriber")
    received = next(event for event in log["events"] if event["kind"] == "received")
    assert received["order_signed_by_role"] is None


# CSV: UTF-8 with a byte-order mark, strict RFC 4180, each row the JSON's values, registrant first.


def _as_written(value: object) -> str:
    """Return a JSON value as the CSV writes it."""
    if value is None:
        return ""
    return "; ".join(value) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Record:
    """A DEA record in both formats: where to get it, its rows, and the fields each row repeats."""

    name: str
    path: Callable[[Pharmacy], tuple[str, dict]]
    rows: str
    heading: dict[str, str]


def _signed_path(pharmacy: Pharmacy) -> tuple[str, dict]:
    return f"inventories/{_sign(pharmacy)['id']}", {}


RECORDS = [
    Record("dispensing log", lambda pharmacy: ("reports/dispensing", MONTH), "events", {}),
    Record("inventory", lambda pharmacy: ("reports/inventory", {"at": "open"}), "lines",
           {name: name for name in ("date", "at", "as_of", "taken_by", "taken_by_role")}),
    Record("signed inventory", _signed_path, "lines",
           {"inventory_id": "id"} | {name: name for name in (
               "kind", "date", "at", "as_of", "taken_by", "taken_by_role", "signed_at",
               "signature_method", "content_hash")}),
]


@pytest.mark.parametrize("record", RECORDS, ids=[record.name for record in RECORDS])
def test_each_csv_parses_strictly_and_round_trips_to_its_json(pharmacy: Pharmacy,
                                                              record: Record):
    _seed(pharmacy)
    path, query = record.path(pharmacy)
    dumped = _ok(_get(pharmacy, path, **query))
    response = _get(pharmacy, path, **query, format="csv")
    assert (response.status_code, response.mimetype) == (200, "text/csv")
    raw = response.get_data()
    # A byte-order mark, so a spreadsheet reads the UTF-8 as UTF-8: µg, not Âµg.
    assert raw.startswith(b"\xef\xbb\xbf")
    assert "µg/mL".encode() in raw and "Âµg".encode() not in raw
    text = raw.decode("utf-8").removeprefix("\ufeff")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    header, *rows = list(csv.reader(io.StringIO(text), strict=True))
    assert header[:3] == ["registrant_name", "registrant_address", "registrant_dea"]
    assert len(rows) == len(dumped[record.rows]) > 0
    registrant = dumped["registrant"]
    for row, item in zip(rows, dumped[record.rows], strict=True):
        cells = dict(zip(header, row, strict=True))
        expected = {"registrant_name": registrant["name"],
                    "registrant_address": registrant["address"],
                    "registrant_dea": registrant["dea_registration"]} | {
            column: dumped[name] for column, name in record.heading.items()} | item
        assert cells == {name: _as_written(value) for name, value in expected.items()}
        assert cells["strength"] == STRENGTH and cells["unit"] == "mL"


# The live inventory (1304.11): registrant, date, open or close, who took it, each line complete.

EVERY_LINE = ("holder", "holder_name", "product_id", "substance", "product", "ndc",
              "dea_schedule", "dosage_form", "strength", "package", "units_per_container", "lot",
              "expiry", "quantity_ug", "quantity_mg", "quantity_units", "unit")
# The stock after the seed: the vault's opened vial and the nurse's whole one.
STOCK = {"vault": (446_000, "446.000", "8.920", None),
         "bag": (500_000, "500.000", "10.000", 1)}


def _lines_by_holder(lines: list[dict]) -> dict[str, tuple]:
    return {line["holder"].split(":")[0]: (line["quantity_ug"], line["quantity_mg"],
                                           line["quantity_units"], line["containers"])
            for line in lines}


def test_the_live_inventory_has_every_field_filled(pharmacy: Pharmacy):
    _seed(pharmacy)
    stock = _ok(_get(pharmacy, "reports/inventory", Role.PHARMACIST, at="open"))
    assert stock["registrant"] == REGISTRANT
    assert (stock["date"], stock["at"], stock["taken_by"], stock["taken_by_role"]) == (
        "2026-11-02", "open", NAMES[Role.PHARMACIST], "pharmacist")
    for line in stock["lines"]:
        missing = [name for name in EVERY_LINE if _blank(line[name])]
        assert not missing, (line["holder"], missing)
        assert (line["ndc"], line["strength"], line["package"]) == (NDC, STRENGTH, PACKAGE)
    assert _lines_by_holder(stock["lines"]) == STOCK
    bag = next(line for line in stock["lines"] if line["holder"].startswith("bag:"))
    assert bag["holder_name"] == NAMES[Role.NURSE]


# The signed inventory: stored as taken, signed with a fresh factor, checked against its hash.

SIGNED_FIELDS = ("id", "kind", "as_of", "date", "at", "taken_by_id", "taken_by",
                 "taken_by_role", "taken_by_username", "signed_at", "signature_method",
                 "signature_factor_id", "content_hash", "registrant", "lines")


def _hash_of(signed: dict, organisation_id: uuid.UUID) -> str:
    """Return the SHA-256 of the canonical JSON the signature is documented to cover."""
    return hashlib.sha256(rfc8785.dumps({
        "id": signed["id"], "organisation_id": str(organisation_id), "kind": signed["kind"],
        "as_of": signed["as_of"], "at": signed["at"], "taken_by_id": signed["taken_by_id"],
        "signed_at": signed["signed_at"],
        "factor": {"method": signed["signature_method"],
                   "factor_id": signed["signature_factor_id"]},
        "lines": signed["lines"]})).hexdigest()


def test_a_signed_inventory_keeps_every_field_as_taken(pharmacy: Pharmacy, clock):
    _seed(pharmacy)
    clock.advance(hours=2)
    signed = _sign(pharmacy, kind="initial", at="open")
    missing = [name for name in SIGNED_FIELDS if _blank(signed[name])]
    assert not missing, missing
    pharmacist = pharmacy.users[Role.PHARMACIST]
    assert (signed["kind"], signed["at"], signed["date"], signed["as_of"]) == (
        "initial", "open", "2026-11-02", clock.now().isoformat())
    assert (signed["taken_by_id"], signed["taken_by"], signed["taken_by_role"],
            signed["taken_by_username"]) == (str(pharmacist.id), NAMES[Role.PHARMACIST],
                                             "pharmacist", pharmacist.username)
    assert (signed["signed_at"], signed["signature_method"]) == (clock.now().isoformat(), "totp")
    assert signed["verified"] is True and signed["registrant"] == REGISTRANT
    assert signed["content_hash"] == _hash_of(signed, pharmacy.org.id)
    assert _lines_by_holder(signed["lines"]) == STOCK
    for line in signed["lines"]:
        assert not [name for name in EVERY_LINE if _blank(line[name])]
    # The record is what was signed, not what the ledger says later.
    _posted(pharmacy.dispense(100_000, seal="S-3"))
    again = _ok(_get(pharmacy, f"inventories/{signed['id']}"))
    assert again == signed
    assert _lines_by_holder(_ok(_get(pharmacy, "reports/inventory"))["lines"]) != STOCK
    [listed] = _ok(_get(pharmacy, "inventories", Role.ADMIN))
    assert listed == {name: value for name, value in signed.items()
                      if name not in ("registrant", "lines")}
    [audited] = pharmacy.world.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "custody.inventory_sign"))
    assert (audited.user_id, audited.object_id, audited.detail["lines"],
            audited.detail["content_hash"]) == (pharmacist.id, signed["id"], 2,
                                                signed["content_hash"])


def test_an_inventory_as_of_a_past_time_shows_the_ledger_then(pharmacy: Pharmacy, clock):
    _posted(pharmacy.receive(1_000_000))
    before = clock.now()
    clock.advance(hours=1)
    _posted(pharmacy.dispense(500_000))
    signed = _sign(pharmacy, as_of=before.isoformat(), at="close")
    assert [(line["holder"], line["quantity_ug"], line["containers"])
            for line in signed["lines"]] == [("vault", 1_000_000, 2)]


def test_a_tampered_line_no_longer_verifies(pharmacy: Pharmacy):
    _seed(pharmacy)
    signed = _sign(pharmacy)
    world = pharmacy.world
    record = world.session.get(InventoryRecord, uuid.UUID(signed["id"]))
    record.lines = [{**record.lines[0], "quantity_ug": record.lines[0]["quantity_ug"] + 1000},
                    *record.lines[1:]]
    flag_modified(record, "lines")
    world.commit()
    shown = _ok(_get(pharmacy, f"inventories/{signed['id']}"))
    assert shown["verified"] is False and shown["content_hash"] == signed["content_hash"]
    assert [listed["verified"] for listed in _ok(_get(pharmacy, "inventories"))] == [False]


def _stale_headers(pharmacy: Pharmacy, role: Role) -> dict:
    """Return a live session's headers whose second factor is older than the window."""
    world = pharmacy.world
    tokens = world.login(pharmacy.org, pharmacy.users[role])
    world.rt.clock.advance(minutes=16)
    refreshed = world.client.post("/api/v1/auth/refresh",
                                  json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json
    return {"Authorization": f"Bearer {refreshed.json['access_token']}"}


def _elsewhere(pharmacy: Pharmacy) -> dict:
    world = pharmacy.world
    other = world.org()
    return world.headers(other, world.user(other, Role.PHARMACIST))


@dataclass(frozen=True)
class Refusal:
    """A request about signed inventories that must be refused, and how."""

    name: str
    send: Callable[[Pharmacy, str], object]
    status: int
    code: str


def _post(headers: Callable[[Pharmacy], dict], **body) -> Callable[[Pharmacy, str], object]:
    return lambda pharmacy, _signed: pharmacy.client.post(
        "/api/v1/custody/inventories", headers=headers(pharmacy),
        json={"kind": "biennial", "at": "close", **body})


def _read_as(headers: Callable[[Pharmacy], dict]) -> Callable[[Pharmacy, str], object]:
    return lambda pharmacy, signed: pharmacy.client.get(
        f"/api/v1/custody/inventories/{signed}", headers=headers(pharmacy))


def _as(role: Role) -> Callable[[Pharmacy], dict]:
    return lambda pharmacy: pharmacy.as_(role)


REFUSALS = [
    Refusal("no fresh factor", _post(lambda p: _stale_headers(p, Role.PHARMACIST)), 403,
            "mfa_required"),
    Refusal("a nurse", _post(_as(Role.NURSE)), 403, "forbidden"),
    Refusal("a compliance officer signs", _post(_as(Role.COMPLIANCE)), 403, "forbidden"),
    Refusal("an admin signs", _post(_as(Role.ADMIN)), 403, "forbidden"),
    Refusal("as of the future", _post(_as(Role.PHARMACIST), as_of="2026-11-02T15:00:00+00:00"),
            422, "validation_error"),
    Refusal("an unknown kind", _post(_as(Role.PHARMACIST), kind="annual"), 422,
            "validation_error"),
    Refusal("another organisation's", _read_as(_elsewhere), 404, "not_found"),
    Refusal("a nurse reads", _read_as(_as(Role.NURSE)), 403, "forbidden"),
    Refusal("no such inventory", lambda pharmacy, _signed: pharmacy.client.get(
        f"/api/v1/custody/inventories/{uuid.uuid4()}", headers=pharmacy.as_(Role.ADMIN)), 404,
        "not_found"),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal.name for refusal in REFUSALS])
def test_a_refused_inventory_request_changes_nothing(pharmacy: Pharmacy, refusal: Refusal):
    _posted(pharmacy.receive(1_000_000))
    signed = _sign(pharmacy)["id"]
    count = select(func.count()).select_from(InventoryRecord)
    before = pharmacy.world.session.scalar(count)
    answer = refusal.send(pharmacy, signed)
    assert answer.status_code == refusal.status, answer.json
    assert answer.json["error"]["code"] == refusal.code
    if refusal.code == "mfa_required":
        assert answer.json["error"]["details"]["action"] == "custody.inventory_sign"
    if refusal.name == "as of the future":
        assert answer.json["error"]["details"]["fields"] == {
            "as_of": ["must not be in the future"]}
    assert pharmacy.world.session.scalar(count) == before


def test_another_organisation_lists_none_of_them(pharmacy: Pharmacy):
    _sign(pharmacy)
    elsewhere = pharmacy.client.get("/api/v1/custody/inventories", headers=_elsewhere(pharmacy))
    assert _ok(elsewhere) == []


# Printable pages: each record laid out with its fields, and a hint to print it.


def _desk(pharmacy: Pharmacy, role: Role = Role.COMPLIANCE) -> Desk:
    return signed_in(pharmacy.world, pharmacy.org, pharmacy.users[role])


def _page(desk: Desk, path: str, status: int = 200) -> str:
    answer = desk.get(path)
    assert answer.status_code == status, answer.get_data(as_text=True)
    return html.unescape(answer.get_data(as_text=True))


REGISTRANT_SHOWN = ("Test Pharmacy", REGISTRANT["address"], "FV0000000", "expires 2028-03-31")
PRODUCT_SHOWN = (NDC, STRENGTH, PACKAGE)


@dataclass(frozen=True)
class Printable:
    """A printable record: its page and what must show on it."""

    name: str
    path: Callable[[Pharmacy], str]
    shows: tuple[str, ...]


PRINTABLE = [
    Printable("dispensing log",
              lambda pharmacy: "/console/reports/dispensing?since=2026-11-01&until=2026-11-30",
              ("Dispensing log, 2026-11-01 to 2026-11-30", "Nora Nurse, nurse",
               "Phil Pharmacist, pharmacist", "Ada Admin, administrator",
               "Cora Compliance, compliance officer", "Dr Paula Prescriber, prescriber",
               "35.000 mg", "0.700 mL", "3 containers", "Pat Test", PATIENT_ADDRESS)),
    Printable("inventory", lambda pharmacy: "/console/reports/inventory?at=open",
              ("Inventory of controlled substances, 2026-11-02 at opening of business",
               "Cora Compliance, compliance officer", "8.920 mL", "10.000 mL")),
    Printable("signed inventory",
              lambda pharmacy: f"/console/reports/inventories/{_sign(pharmacy)['id']}",
              ("Biennial inventory of controlled substances, 2026-11-02 at close of business",
               "Phil Pharmacist, pharmacist", "8.920 mL", "10.000 mL", "Signed at",
               "2026-11-02 14:00 UTC", "totp", "SHA-256",
               "Yes: what is stored is what was signed.")),
]


@pytest.mark.parametrize("printable", PRINTABLE, ids=[printable.name for printable in PRINTABLE])
def test_each_printable_record_shows_its_fields(pharmacy: Pharmacy, printable: Printable):
    _seed(pharmacy)
    page = _page(_desk(pharmacy), printable.path(pharmacy))
    assert "Print this page from the browser" in page
    missing = [text for text in (*REGISTRANT_SHOWN, *PRODUCT_SHOWN, *printable.shows)
               if text not in page]
    assert not missing, missing


def test_the_signed_inventory_page_shows_its_hash_and_each_line(pharmacy: Pharmacy):
    _seed(pharmacy)
    signed = _sign(pharmacy)
    page = _page(_desk(pharmacy, Role.ADMIN), f"/console/reports/inventories/{signed['id']}")
    assert f"<code>{signed['content_hash']}</code>" in page
    assert signed["signature_factor_id"] in page
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr>") == len(signed["lines"]) == 2
    assert "Nora Nurse" in body and '<td class="num">1</td>' in body
    download = _desk(pharmacy).get(f"/console/reports/inventories/{signed['id']}.csv")
    api = _get(pharmacy, f"inventories/{signed['id']}", format="csv")
    assert download.get_data() == api.get_data()
    assert download.headers["Content-Disposition"] == (
        'attachment; filename="inventory-biennial-2026-11-02-close.csv"')


def test_a_tampered_inventory_page_says_so(pharmacy: Pharmacy):
    _posted(pharmacy.receive(1_000_000))
    signed = _sign(pharmacy)
    world = pharmacy.world
    record = world.session.get(InventoryRecord, uuid.UUID(signed["id"]))
    record.kind = "other"
    world.commit()
    desk = _desk(pharmacy)
    assert "changed after it was signed" in _page(
        desk, f"/console/reports/inventories/{signed['id']}")
    assert "changed since signing" in _page(desk, "/console/reports/inventories")


def test_the_take_form_signs_and_opens_the_printable_page(pharmacy: Pharmacy):
    _seed(pharmacy)
    desk = _desk(pharmacy, Role.PHARMACIST)
    listed = _page(desk, "/console/reports/inventories")
    assert "Take and sign inventory" in listed and "No inventory has been signed yet." in listed
    taken = desk.post("/console/reports/inventories",
                      {"kind": "other", "as_of": "2026-11-01", "at": "close"})
    assert taken.status_code == 303, taken.get_data(as_text=True)
    [record] = pharmacy.world.session.scalars(select(InventoryRecord))
    assert taken.headers["Location"] == f"/console/reports/inventories/{record.id}"
    # The close of 1 November in Chicago (midnight CST), before any of the seed's stock.
    assert (record.kind, record.at, record.as_of, record.lines) == (
        "other", "close", datetime(2026, 11, 2, 6, 0, tzinfo=UTC), [])
    page = _page(desk, taken.headers["Location"])
    assert "Signed the other inventory" in page and "Nothing was on hand." in page


def test_a_stale_factor_is_refused_at_the_take_form_with_a_step_up_link(pharmacy: Pharmacy):
    desk = _desk(pharmacy, Role.PHARMACIST)
    world = pharmacy.world
    world.rt.clock.advance(minutes=10)
    desk.get("/console/reports/inventories")
    world.rt.clock.advance(minutes=6)
    page = "/console/reports/inventories"
    refused = desk.post(page, {"kind": "biennial", "at": "close"},
                        headers={"Referer": f"http://localhost{page}"})
    assert refused.status_code == 403
    text = html.unescape(refused.get_data(as_text=True))
    assert REFUSED in text
    link = urlsplit(STEP_UP_LINK.search(text).group(1))
    assert (link.path, parse_qs(link.query)["next"]) == ("/console/step-up", [page])
    assert world.session.scalar(select(func.count()).select_from(InventoryRecord)) == 0


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"kind": "biennial", "as_of": "2026-11-02", "at": "close"}, "as_of",
     "must not be in the future"),
    ({"kind": "annual", "at": "close"}, "kind", "Must be one of: initial, biennial, other."),
    ({"kind": "biennial", "at": "noon"}, "at", "Must be one of: open, close."),
])
def test_a_refused_take_form_shows_beside_its_field(pharmacy: Pharmacy, values, field, message):
    desk = _desk(pharmacy, Role.PHARMACIST)
    desk.get("/console/reports/inventories")
    refused = desk.post("/console/reports/inventories", values)
    assert refused.status_code == 422
    found = re.search(rf'<span class="field-error" id="{field}-error">([^<]*)</span>',
                      refused.get_data(as_text=True))
    assert found and found.group(1) == message
    assert pharmacy.world.session.scalar(select(func.count()).select_from(InventoryRecord)) == 0


@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE, Role.PRESCRIBER])
def test_only_a_pharmacist_takes_an_inventory_at_the_console(pharmacy: Pharmacy, role: Role):
    desk = _desk(pharmacy, role)
    listed = desk.get("/console/reports/inventories")
    assert listed.status_code == (403 if role == Role.PRESCRIBER else 200)
    assert "Take and sign inventory" not in listed.get_data(as_text=True)
    assert desk.post("/console/reports/inventories",
                     {"kind": "biennial", "at": "close"}).status_code == 403
    assert pharmacy.world.session.scalar(select(func.count()).select_from(InventoryRecord)) == 0


def test_another_organisations_inventory_page_is_not_found(world: World, pharmacy: Pharmacy):
    other = Pharmacy(world)
    signed = _sign(other)
    desk = _desk(pharmacy)
    for path in (f"/console/reports/inventories/{signed['id']}",
                 f"/console/reports/inventories/{signed['id']}.csv",
                 "/console/reports/inventories/not-an-id"):
        assert desk.get(path).status_code == 404, path


# Deadlines: business days skip weekends and US federal holidays, in the organisation's days.


def _local(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=CHICAGO)


@pytest.mark.parametrize(("discovered", "days", "due"), [
    # The Friday before Memorial Day (Monday 25 May 2026): due the Tuesday after.
    (_local(2026, 5, 22, 16, 0), 1, _local(2026, 5, 26, 16, 0)),
    # A Saturday discovery of that weekend: the same Tuesday.
    (_local(2026, 5, 23, 10, 30), 1, _local(2026, 5, 26, 10, 30)),
    # New Year's Day 2028 is a Saturday, observed on Friday 31 December 2027.
    (_local(2027, 12, 30, 9, 0), 1, _local(2028, 1, 3, 9, 0)),
    # Thanksgiving (Thursday 26 November 2026).
    (_local(2026, 11, 25, 12, 0), 1, _local(2026, 11, 27, 12, 0)),
    # Independence Day 2027 is a Sunday, observed on Monday 5 July.
    (_local(2027, 7, 2, 8, 0), 1, _local(2027, 7, 6, 8, 0)),
    # Veterans Day (Wednesday 11 November 2026).
    (_local(2026, 11, 10, 9, 0), 1, _local(2026, 11, 12, 9, 0)),
    # No holiday: a Tuesday's next business day, and a Friday's.
    (_local(2026, 11, 17, 9, 0), 1, _local(2026, 11, 18, 9, 0)),
    (_local(2026, 11, 13, 9, 0), 1, _local(2026, 11, 16, 9, 0)),
    # Three business days over Christmas (Friday 25 December 2026) and a weekend.
    (_local(2026, 12, 23, 9, 0), 3, _local(2026, 12, 29, 9, 0)),
])
def test_business_days_skip_weekends_and_federal_holidays(discovered, days, due):
    assert add_business_days(discovered, days) == due


def test_a_loss_discovered_before_memorial_day_is_due_the_tuesday_after(world: World, clock):
    # Friday 22 May 2026, 16:00 in Chicago (CDT).
    clock.set(datetime(2026, 5, 22, 21, 0, tzinfo=UTC))
    pharmacy = Pharmacy(world)
    _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "receive", "quantity_ug": 1_000_000, "occurred_at": "2026-05-22T20:00:00+00:00",
        "details": SUPPLIER}))
    loss = _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "quantity_ug": 5_000, "holder": "vault",
        "occurred_at": "2026-05-22T20:30:00+00:00",
        "details": {"circumstances": "vial missing at the end of the day"}}))
    report = world.session.scalar(select(LossReport).where(
        LossReport.entry_id == uuid.UUID(loss["id"])))
    assert report.notice_due_at == _local(2026, 5, 26, 16, 0)
    # Form 106 is due in calendar days (45, 21 CFR 1301.76(b)), holidays or not.
    assert report.form_106_due_at == _local(2026, 5, 22, 16, 0) + timedelta(days=45)
