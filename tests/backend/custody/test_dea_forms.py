"""DEA Forms 106 (theft or loss) and 41 (destruction): every field filled from a seeded session,
as JSON, as CSV that parses strictly and round-trips, and as printable console pages; completing
a loss's Form 106 details, its refusals and its audit rows."""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.custody.form_schemas import Form41Schema, Form106Schema
from backend.custody.models import LossReport
from backend.custody.reports import csv_text
from backend.products.models import DrugProduct
from tests.backend.conftest import START
from tests.backend.console.conftest import signed_in
from tests.factories import PASSWORD, Pharmacy, World

NAMES = {Role.ADMIN: "Ada Admin", Role.PHARMACIST: "Phil Pharmacist",
         Role.COMPLIANCE: "Cora Compliance", Role.NURSE: "Nell Nurse",
         Role.PRESCRIBER: "Pru Prescriber"}
REGISTRANT = {"registrant_name": "Test Pharmacy", "registrant_dea_registration": "FV0000000",
              "registrant_address": "1 Main St, Chicago, IL 60601",
              "registrant_phone": "312-555-0100"}
PRODUCT = {"substance": "ketamine", "ndc": "00409-4276-01", "dea_schedule": "III",
           "dosage_form": "vial", "strength": "50 mg/mL (50000 µg/mL)",
           "package": "10 mL multi-dose vial (10 mL per vial)", "container": "vial",
           "unit": "mL", "lot": "L1", "expiry": "2028-01-31"}
POLICE = {"police_agency": "Chicago Police Department", "police_report_number": "RD-26-1102",
          "police_reported_at": (START + timedelta(hours=3)).isoformat()}
ACME = "Acme Returns, 2 Kiln Rd, Joliet, IL 60436"
DAY = {"from": "2026-11-02T00:00:00+00:00", "to": "2026-11-03T00:00:00+00:00"}


def at(hours: float) -> str:
    """Return the time `hours` after the session's start, as the API writes it."""
    return (START + timedelta(hours=hours)).isoformat()


@dataclass
class Seeded:
    """A day of custody: a receipt, a kit, a loss from the bag and one from the vault, two
    destructions; the vault's loss completed with its police report and filed."""

    pharmacy: Pharmacy
    product: str
    losses: dict[str, str]
    entries: dict[str, dict]
    destructions: dict[str, dict]

    def user(self, role: Role):
        """Return the pharmacy's user of `role`."""
        return self.pharmacy.users[role]

    def get(self, path: str, role: Role = Role.PHARMACIST, **query):
        """GET an API path as `role`."""
        return self.pharmacy.client.get(f"/api/v1{path}", headers=self.pharmacy.as_(role),
                                        query_string=query)

    def patch(self, loss: str, body: dict, role: Role = Role.PHARMACIST):
        """PATCH a loss report's Form 106 details as `role`."""
        return self.pharmacy.client.patch(f"/api/v1/custody/losses/{self.losses[loss]}",
                                          headers=self.pharmacy.as_(role), json=body)


def _posted(response) -> dict:
    assert response.status_code == 201, response.json
    return response.json


def _witness(pharmacy: Pharmacy, role: Role) -> dict:
    return {"user_id": str(pharmacy.users[role].id), "password": PASSWORD}


def _nurse_loss(pharmacy: Pharmacy, **body):
    """Report a loss from the nurse's bag, from her phone (a loss needs no signature)."""
    return pharmacy.client.post("/api/v1/custody/entries", headers=pharmacy.as_(
        Role.NURSE, pharmacy.device_id), json={
        "id": str(uuid.uuid4()), "kind": "loss", "product_id": pharmacy.product_id, "lot": "L1",
        "expiry": "2028-01-31", **body})


def _registrant(world: World, pharmacy: Pharmacy) -> str:
    org = pharmacy.org
    org.address_line, org.city, org.state, org.postal_code = "1 Main St", "Chicago", "IL", "60601"
    org.phone = "312-555-0100"
    for role, name in NAMES.items():
        pharmacy.users[role].display_name = name
    product = world.session.get(DrugProduct, uuid.UUID(pharmacy.product_id))
    product.ndc, product.package_description = "00409427601", "10 mL multi-dose vial"
    world.commit()
    return product.name


@pytest.fixture
def seeded(world: World, clock) -> Seeded:
    pharmacy = Pharmacy(world)
    product = _registrant(world, pharmacy)
    _posted(pharmacy.receive(2_000_000))
    _posted(pharmacy.dispense(100_000))
    entries = {"nurse": _posted(_nurse_loss(
        pharmacy, quantity_ug=50_000, occurred_at=at(-0.5), details={
            "circumstances": "Kit taken from the nurse's car, Elm St.",
            "loss_type": "customer_theft"}))}
    clock.set(START + timedelta(hours=2))
    entries["pharmacist"] = _posted(pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "holder": "vault", "quantity_ug": 500_000, "occurred_at": at(1.5),
        "details": {"circumstances": "Vault forced overnight.", "loss_type": "night_break_in"}}))
    listed = pharmacy.client.get("/api/v1/custody/losses", headers=pharmacy.as_(Role.COMPLIANCE))
    losses = {"nurse" if loss["entry_id"] == entries["nurse"]["id"] else "pharmacist": loss["id"]
              for loss in listed.json}
    clock.set(START + timedelta(hours=4))
    completed = pharmacy.client.patch(f"/api/v1/custody/losses/{losses['pharmacist']}",
                                      headers=pharmacy.as_(Role.COMPLIANCE), json=POLICE)
    assert completed.status_code == 200, completed.json
    for filing, hours in (("dea_notice", 3.5), ("form_106", 4)):
        _posted(pharmacy.client.post(
            f"/api/v1/custody/losses/{losses['pharmacist']}/filings",
            headers=pharmacy.as_(Role.PHARMACIST), json={"filing": filing,
                                                         "filed_at": at(hours)}))
    clock.set(START + timedelta(hours=5))
    destructions = {
        "reverse distributor": _posted(pharmacy.post(Role.PHARMACIST, {
            "kind": "destroy", "quantity_ug": 500_000, "occurred_at": at(4),
            "details": {"method": "Incineration by a reverse distributor", "place": ACME},
            "witnesses": [_witness(pharmacy, Role.ADMIN),
                          _witness(pharmacy, Role.COMPLIANCE)]})),
        "on site": _posted(pharmacy.post(Role.PHARMACIST, {
            "kind": "destroy", "quantity_ug": 250_000, "occurred_at": at(4.5),
            "details": {"method": "Rendered non-retrievable (chemical digestion)"},
            "witnesses": [_witness(pharmacy, Role.COMPLIANCE),
                          _witness(pharmacy, Role.NURSE)]}))}
    clock.set(START + timedelta(hours=6))
    return Seeded(pharmacy, product, losses, entries, destructions)


# Every field, table-driven: what each record must say.


def expected_106(seeded: Seeded, which: str) -> dict:
    """Return the whole Form 106 record of the nurse's or the pharmacist's loss."""
    entry = seeded.entries[which]
    nurse, pharmacist = seeded.user(Role.NURSE), seeded.user(Role.PHARMACIST)
    common = {**REGISTRANT, **PRODUCT, "loss_id": seeded.losses[which], "product": seeded.product,
              "entry_id": entry["id"], "seq": entry["seq"], "occurred_at": entry["occurred_at"],
              "discovered_on": "2026-11-02", "occurred_on": "2026-11-02"}
    return {"nurse": {
        **common, "discovered_at": at(0), "loss_type": "customer_theft",
        "loss_type_label": "Customer or patient theft", "police_reported": False,
        "police_report": "not reported", "police_agency": None, "police_report_number": None,
        "police_reported_at": None, "losses_in_24_months": 0, "quantity_ug": 50_000,
        "quantity_mg": "50.000", "quantity_units": "1.000", "containers": None,
        "lost_from": f"bag:{nurse.id}", "lost_from_name": "Nell Nurse",
        "circumstances": "Kit taken from the nurse's car, Elm St.",
        "recorded_by_name": "Nell Nurse", "recorded_by_role": "nurse",
        "recorded_by_username": nurse.username,
        # Discovered on a Monday: the notice is due the next business day.
        "notice_due_at": at(24), "notice_filed_at": None,
        "form_106_due_at": at(45 * 24), "form_106_filed_at": None,
    }, "pharmacist": {
        **common, "discovered_at": at(2), "loss_type": "night_break_in",
        "loss_type_label": "Night break-in", "police_reported": True,
        "police_report": f"Chicago Police Department, report RD-26-1102, reported {at(3)}",
        **POLICE, "losses_in_24_months": 1, "quantity_ug": 500_000, "quantity_mg": "500.000",
        "quantity_units": "10.000", "containers": 1, "lost_from": "vault",
        "lost_from_name": "Vault", "circumstances": "Vault forced overnight.",
        "recorded_by_name": "Phil Pharmacist", "recorded_by_role": "pharmacist",
        "recorded_by_username": pharmacist.username,
        "notice_due_at": at(26), "notice_filed_at": at(3.5),
        "form_106_due_at": at(2 + 45 * 24), "form_106_filed_at": at(4),
    }}[which]


def expected_41(seeded: Seeded, which: str) -> dict:
    """Return the whole Form 41 record of one of the two destructions."""
    entry = seeded.destructions[which]
    users = seeded.pharmacy.users
    common = {**REGISTRANT, **PRODUCT, "product": seeded.product, "entry_id": entry["id"],
              "seq": entry["seq"], "destroyed_at": entry["occurred_at"],
              "destroyed_on": "2026-11-02", "recorded_by_name": "Phil Pharmacist",
              "recorded_by_role": "pharmacist",
              "recorded_by_username": users[Role.PHARMACIST].username,
              "recorded_by_factor": "totp"}
    return {"reverse distributor": {
        **common, "method": "Incineration by a reverse distributor", "place": ACME,
        "quantity_ug": 500_000, "quantity_mg": "500.000", "quantity_units": "10.000",
        "containers": 1, "witness_names": ["Ada Admin", "Cora Compliance"],
        "witness_roles": ["administrator", "compliance officer"],
        "witness_usernames": [users[Role.ADMIN].username, users[Role.COMPLIANCE].username],
    }, "on site": {
        # No place given: destroyed at the registrant's address.
        **common, "method": "Rendered non-retrievable (chemical digestion)",
        "place": REGISTRANT["registrant_address"], "quantity_ug": 250_000,
        "quantity_mg": "250.000", "quantity_units": "5.000", "containers": None,
        "witness_names": ["Cora Compliance", "Nell Nurse"],
        "witness_roles": ["compliance officer", "nurse"],
        "witness_usernames": [users[Role.COMPLIANCE].username, users[Role.NURSE].username],
    }}[which]


# What a record may leave blank: what has not happened, and whole containers of part of one.
UNFILLED_106 = {"nurse": {"police_agency", "police_report_number", "police_reported_at",
                          "notice_filed_at", "form_106_filed_at", "containers"},
                "pharmacist": set()}
UNFILLED_41 = {"reverse distributor": set(), "on site": {"containers"}}


@pytest.mark.parametrize("which", ["nurse", "pharmacist"])
def test_form_106_has_every_field_the_form_asks(seeded: Seeded, which: str):
    response = seeded.get(f"/dea/losses/{seeded.losses[which]}/form-106")
    assert response.status_code == 200, response.json
    assert response.json == expected_106(seeded, which)
    assert set(response.json) == set(Form106Schema().fields)
    blank = {name for name, value in response.json.items() if value in (None, "", [])}
    assert blank == UNFILLED_106[which]


@pytest.mark.parametrize("which", ["reverse distributor", "on site"])
def test_form_41_has_every_field_the_form_asks(seeded: Seeded, which: str):
    response = seeded.get(f"/dea/destructions/{seeded.destructions[which]['id']}/form-41")
    assert response.status_code == 200, response.json
    assert response.json == expected_41(seeded, which)
    assert set(response.json) == set(Form41Schema().fields)
    blank = {name for name, value in response.json.items() if value in (None, "", [])}
    assert blank == UNFILLED_41[which]


def test_a_period_lists_each_form_of_it_in_order(seeded: Seeded):
    losses = seeded.get("/dea/form-106", **DAY)
    assert losses.status_code == 200, losses.json
    assert (losses.json["from"], losses.json["to"]) == (DAY["from"], DAY["to"])
    assert losses.json["forms"] == [expected_106(seeded, "nurse"),
                                    expected_106(seeded, "pharmacist")]
    destroyed = seeded.get("/dea/form-41", **DAY)
    assert destroyed.json["forms"] == [expected_41(seeded, "reverse distributor"),
                                       expected_41(seeded, "on site")]
    # Losses by when they were discovered, destructions by when they were done.
    later = {"from": at(1), "to": at(4.25)}
    assert [form["loss_id"] for form in seeded.get("/dea/form-106", **later).json["forms"]] == [
        seeded.losses["pharmacist"]]
    assert [form["seq"] for form in seeded.get("/dea/form-41", **later).json["forms"]] == [
        seeded.destructions["reverse distributor"]["seq"]]


def test_a_loss_without_a_type_is_undetermined_and_an_unknown_type_is_refused(seeded: Seeded):
    pharmacy = seeded.pharmacy
    refused = _nurse_loss(pharmacy, quantity_ug=1_000, occurred_at=at(5.5),
                          details={"circumstances": "Dropped.", "loss_type": "mislaid"})
    assert refused.status_code == 422, refused.json
    assert list(refused.json["error"]["details"]["fields"]) == ["details.loss_type"]
    _posted(_nurse_loss(pharmacy, quantity_ug=1_000, occurred_at=at(5.5),
                        details={"circumstances": "Dropped."}))
    forms = seeded.get("/dea/form-106", **DAY).json["forms"]
    assert len(forms) == 3
    assert (forms[-1]["loss_type"], forms[-1]["loss_type_label"],
            forms[-1]["losses_in_24_months"]) == (
        "undetermined", "Undetermined (under investigation)", 2)


# CSV: strict RFC 4180, the JSON's fields, and a round trip.

CSV_CASES = {
    "one Form 106": (Form106Schema, lambda s: (
        f"/dea/losses/{s.losses['pharmacist']}/form-106", {})),
    "Form 106 of a day": (Form106Schema, lambda s: ("/dea/form-106", DAY)),
    "one Form 41": (Form41Schema, lambda s: (
        f"/dea/destructions/{s.destructions['on site']['id']}/form-41", {})),
    "Form 41 of a day": (Form41Schema, lambda s: ("/dea/form-41", DAY)),
}


def _cell(value) -> str:
    """Return a JSON value as the CSV writes it."""
    if value is None:
        return ""
    return "; ".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_the_csv_parses_strictly_and_round_trips(seeded: Seeded, case: str):
    schema, where = CSV_CASES[case]
    path, query = where(seeded)
    response = seeded.get(path, **query, format="csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8").removeprefix("\ufeff")
    rows = list(csv.reader(io.StringIO(text), strict=True))
    header, body = rows[0], rows[1:]
    assert header == list(schema().fields)
    assert text.endswith("\r\n") and text.count("\r\n") == len(rows)
    answer = seeded.get(path, **query).json
    records = answer.get("forms", [answer])
    assert body == [[_cell(record[name]) for name in header] for record in records]
    assert csv_text([dict(zip(header, row, strict=True)) for row in body], header) == \
        raw.decode("utf-8")


# Printable pages.

FORM_106_PAGE = ("Test Pharmacy", "FV0000000", "1 Main St, Chicago, IL 60601", "312-555-0100",
                 "2026-11-02", "Night break-in", "Vault", "Chicago Police Department",
                 "RD-26-1102", "2026-11-02 17:00 UTC", "00409-4276-01", "ketamine", "III",
                 "50 mg/mL (50000 µg/mL)", "10 mL multi-dose vial (10 mL per vial)",
                 "10.000 mL", "500.000 mg", "500000 µg", "1 vial", "L1 (2028-01-31)",
                 "Vault forced overnight.", "Phil Pharmacist", "pharmacist",
                 "2026-11-03 16:00 UTC", "2026-11-02 17:30 UTC", "2026-12-17 16:00 UTC",
                 "2026-11-02 18:00 UTC", "Thefts or losses in the 24 months before")
FORM_41_PAGE = ("Test Pharmacy", "FV0000000", "1 Main St, Chicago, IL 60601", "312-555-0100",
                "00409-4276-01", "ketamine", "III", "50 mg/mL (50000 µg/mL)",
                "10 mL multi-dose vial (10 mL per vial)", "5.000 mL", "250.000 mg",
                "250000 µg", "part of a vial", "L1 (2028-01-31)", "2026-11-02",
                "2026-11-02 18:30 UTC", "Rendered non-retrievable (chemical digestion)",
                "Cora Compliance", "compliance officer", "Nell Nurse", "nurse", "Phil Pharmacist",
                "totp")


def _page(response, printable: bool = True) -> str:
    """Return a console page's text, checked for what the CSP allows (and a print hint)."""
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    page = response.get_data(as_text=True)
    # The console's CSP allows no inline style or script: all of it is in console.css.
    assert "<style" not in page and " style=" not in page
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", page))
    assert "console.css" in page and ("Ctrl+P" in page or not printable)
    return html.unescape(page)


@pytest.mark.parametrize("role", [Role.PHARMACIST, Role.COMPLIANCE, Role.ADMIN])
def test_the_printable_form_106_shows_each_field(seeded: Seeded, role: Role):
    desk = signed_in(seeded.pharmacy.world, seeded.pharmacy.org, seeded.user(role))
    page = _page(desk.get(f"/console/records/losses/{seeded.losses['pharmacist']}/form-106"))
    missing = [value for value in (*FORM_106_PAGE, seeded.product, seeded.user(
        Role.PHARMACIST).username) if value not in page]
    assert not missing
    # Only those who file may complete it.
    assert ("Complete Form 106 details" in page) == (role != Role.ADMIN)
    nurse_page = _page(desk.get(f"/console/records/losses/{seeded.losses['nurse']}/form-106"))
    assert all(value in nurse_page for value in (
        "Nell Nurse", "Customer or patient theft", "No: not reported", "part of a vial",
        "Kit taken from the nurse's car, Elm St."))


def test_the_printable_form_41_shows_each_field(seeded: Seeded):
    desk = signed_in(seeded.pharmacy.world, seeded.pharmacy.org, seeded.user(Role.COMPLIANCE))
    entry = seeded.destructions["on site"]
    page = _page(desk.get(f"/console/records/destructions/{entry['id']}/form-41"))
    missing = [value for value in (*FORM_41_PAGE, seeded.product, str(entry["seq"]))
               if value not in page]
    assert not missing
    assert page.count('class="signature-line"') == 2
    day = {"since": "2026-11-02", "until": "2026-11-02"}
    listed = _page(desk.get("/console/records/destructions", query_string=day),
                   printable=False)
    for which, destroyed in seeded.destructions.items():
        assert f"/console/records/destructions/{destroyed['id']}/form-41" in listed, which
    download = desk.get(f"/console/records/destructions/{entry['id']}/form-41.csv")
    assert download.get_data(as_text=True) == seeded.get(
        f"/dea/destructions/{entry['id']}/form-41", format="csv").get_data(as_text=True)


def test_the_losses_page_links_each_loss_to_its_form_106(seeded: Seeded):
    desk = signed_in(seeded.pharmacy.world, seeded.pharmacy.org, seeded.user(Role.PHARMACIST))
    page = _page(desk.get("/console/losses"), printable=False)
    for loss in seeded.losses.values():
        assert f"/console/records/losses/{loss}/form-106" in page
    download = desk.get(f"/console/records/losses/{seeded.losses['nurse']}/form-106.csv")
    assert download.get_data(as_text=True) == seeded.get(
        f"/dea/losses/{seeded.losses['nurse']}/form-106", format="csv").get_data(as_text=True)


def test_the_console_completes_a_loss_as_the_api_does(seeded: Seeded):
    desk = signed_in(seeded.pharmacy.world, seeded.pharmacy.org, seeded.user(Role.PHARMACIST))
    path = f"/console/records/losses/{seeded.losses['nurse']}/form-106"
    desk.get(path)
    refused = desk.post(path, {"loss_type": "mislaid", "police_agency": "Evanston PD"})
    assert refused.status_code == 422
    assert 'id="loss_type-error"' in refused.get_data(as_text=True)
    assert seeded.get(f"/dea/losses/{seeded.losses['nurse']}/form-106").json[
        "police_agency"] is None
    sent = desk.post(path, {"loss_type": "other", "police_agency": "Evanston PD",
                            "police_report_number": "E-77", "police_reported_at":
                            "2026-11-02T19:00"})
    assert sent.status_code == 303, sent.get_data(as_text=True)
    form = seeded.get(f"/dea/losses/{seeded.losses['nurse']}/form-106").json
    assert (form["loss_type"], form["police_agency"], form["police_report_number"],
            form["police_reported_at"]) == ("other", "Evanston PD", "E-77", at(5))


@pytest.mark.parametrize(("role", "method", "status"), [
    (Role.PRESCRIBER, "get", 403), (Role.ADMIN, "post", 403)])
def test_the_console_refuses_whom_the_api_refuses(seeded: Seeded, role, method, status):
    desk = signed_in(seeded.pharmacy.world, seeded.pharmacy.org, seeded.user(role))
    path = f"/console/records/losses/{seeded.losses['nurse']}/form-106"
    desk.get("/console/")
    answer = desk.get(path) if method == "get" else desk.post(path, {"loss_type": "other"})
    assert answer.status_code == status
    assert seeded.get(f"/dea/losses/{seeded.losses['nurse']}/form-106").json[
        "loss_type"] == "customer_theft"


# Completing a loss: validations, refusals, audit.

BAD_DETAILS = [
    ({"loss_type": "mislaid"}, "loss_type"),
    ({"loss_type": None}, "loss_type"),
    ({"police_reported_at": at(6.1)}, "police_reported_at"),  # in the future
    ({"police_reported_at": at(1)}, "police_reported_at"),  # before the loss occurred
    ({"police_reported_at": "2026-11-02T17:00:00"}, "police_reported_at"),  # no offset
    ({"police_report_number": ""}, "police_report_number"),
    ({"police_agency": "x" * 201}, "police_agency"),
    ({"colour": "red"}, "colour"),
    ({}, "_schema"),
]


def _audits(seeded: Seeded, action: str) -> list[AuditEvent]:
    session = seeded.pharmacy.world.session
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(
        AuditEvent.organisation_id == seeded.pharmacy.org.id, AuditEvent.action == action)
        .order_by(AuditEvent.occurred_at)))


def _details(seeded: Seeded, loss: str) -> tuple:
    session = seeded.pharmacy.world.session
    session.expire_all()
    report = session.get(LossReport, uuid.UUID(seeded.losses[loss]))
    return (report.loss_type, report.police_agency, report.police_report_number,
            report.police_reported_at)


@pytest.mark.parametrize(("body", "field"), BAD_DETAILS)
def test_completing_a_loss_refuses_bad_details_and_changes_nothing(seeded: Seeded, body,
                                                                   field):
    before, audits = _details(seeded, "pharmacist"), len(_audits(seeded, "custody.loss_details"))
    response = seeded.patch("pharmacist", body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
    assert _details(seeded, "pharmacist") == before
    assert len(_audits(seeded, "custody.loss_details")) == audits


@pytest.mark.parametrize(("role", "status"), [
    (Role.NURSE, 403), (Role.ADMIN, 403), (Role.PRESCRIBER, 403)])
def test_completing_a_loss_is_for_pharmacists_and_compliance(seeded: Seeded, role, status):
    before = _details(seeded, "nurse")
    response = seeded.patch("nurse", {"loss_type": "other"}, role)
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == "forbidden"
    assert _details(seeded, "nurse") == before


def test_another_organisation_sees_no_loss_and_no_destruction(seeded: Seeded):
    other = Pharmacy(seeded.pharmacy.world)
    headers = other.as_(Role.PHARMACIST)
    client = other.client
    loss, destroyed = seeded.losses["nurse"], seeded.destructions["on site"]["id"]
    answers = [client.patch(f"/api/v1/custody/losses/{loss}", headers=headers,
                            json={"loss_type": "other"}),
               client.get(f"/api/v1/dea/losses/{loss}/form-106", headers=headers),
               client.get(f"/api/v1/dea/destructions/{destroyed}/form-41", headers=headers),
               client.patch(f"/api/v1/custody/losses/{uuid.uuid4()}", headers=headers,
                            json={"loss_type": "other"})]
    assert [answer.status_code for answer in answers] == [404] * 4
    assert _details(seeded, "nurse")[0] == "customer_theft"
    period = client.get("/api/v1/dea/form-106", headers=headers, query_string=DAY)
    assert period.json["forms"] == []
    desk = signed_in(other.world, other.org, other.users[Role.PHARMACIST])
    assert desk.get(f"/console/records/losses/{loss}/form-106").status_code == 404
    assert desk.get(f"/console/records/destructions/{destroyed}/form-41").status_code == 404


@pytest.mark.parametrize(("path", "query", "status"), [
    ("/dea/form-106", DAY, 403), ("/dea/form-41", DAY, 403),
    ("/dea/form-106", {"from": DAY["to"], "to": DAY["from"]}, 422),
    ("/dea/form-41", {"from": DAY["from"], "to": DAY["from"]}, 422),
    ("/dea/form-106", {"from": DAY["from"]}, 422),
    ("/dea/form-41", {**DAY, "format": "pdf"}, 422),
])
def test_the_form_reads_refuse_nurses_and_bad_periods(seeded: Seeded, path, query, status):
    role = Role.NURSE if status == 403 else Role.COMPLIANCE
    assert seeded.get(path, role, **query).status_code == status


def test_only_a_destruction_has_a_form_41(seeded: Seeded):
    for entry in (seeded.entries["nurse"]["id"], str(uuid.uuid4())):
        response = seeded.get(f"/dea/destructions/{entry}/form-41")
        assert response.status_code == 404, response.json


def test_completing_a_loss_is_audited_before_and_after(seeded: Seeded):
    response = seeded.patch("nurse", {"loss_type": "lost_in_transit",
                                      "police_agency": "Evanston PD",
                                      "police_reported_at": at(5)})
    assert response.status_code == 200, response.json
    assert response.json == {
        "id": seeded.losses["nurse"], "entry_id": seeded.entries["nurse"]["id"],
        "discovered_at": at(0), "loss_type": "lost_in_transit", "police_agency": "Evanston PD",
        "police_report_number": None, "police_reported_at": at(5)}
    cleared = seeded.patch("pharmacist", {"police_report_number": None}, Role.PHARMACIST)
    assert cleared.status_code == 200 and cleared.json["police_report_number"] is None
    rows = _audits(seeded, "custody.loss_details")
    # The seed's completion, by the compliance officer, then these two.
    assert [row.user_id for row in rows] == [seeded.user(Role.COMPLIANCE).id] + [
        seeded.user(Role.PHARMACIST).id] * 2
    assert {row.object_id: row.detail for row in rows[1:]} == {
        seeded.losses["nurse"]: {
            "loss_type": {"from": "customer_theft", "to": "lost_in_transit"},
            "police_agency": {"from": None, "to": "Evanston PD"},
            "police_reported_at": {"from": None, "to": at(5)}},
        seeded.losses["pharmacist"]: {
            "police_report_number": {"from": "RD-26-1102", "to": None}}}


def test_reading_a_form_is_audited(seeded: Seeded):
    loss, destroyed = seeded.losses["nurse"], seeded.destructions["on site"]
    seeded.get(f"/dea/losses/{loss}/form-106", Role.COMPLIANCE)
    seeded.get(f"/dea/destructions/{destroyed['id']}/form-41", Role.ADMIN)
    seeded.get("/dea/form-106", Role.PHARMACIST, **DAY)
    read_106 = _audits(seeded, "custody.form_106")
    assert {(row.object_type, row.object_id, row.user_id) for row in read_106} == {
        ("loss_report", loss, seeded.user(Role.COMPLIANCE).id),
        ("organisation", str(seeded.pharmacy.org.id), seeded.user(Role.PHARMACIST).id)}
    period = next(row for row in read_106 if row.object_type == "organisation")
    assert period.detail == {"from": DAY["from"], "to": DAY["to"],
                             "losses": [seeded.losses["nurse"], seeded.losses["pharmacist"]]}
    read_41 = _audits(seeded, "custody.form_41")
    assert [(row.object_type, row.object_id, row.user_id, row.detail) for row in read_41] == [
        ("custody_entry", destroyed["id"], seeded.user(Role.ADMIN).id,
         {"seq": destroyed["seq"]})]
