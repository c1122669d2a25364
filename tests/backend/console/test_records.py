"""The pharmacist's records in the console: bag reconciliation, losses, DEA reports."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from tests.backend.conftest import START
from tests.backend.console.conftest import signed_in
from tests.factories import PASSWORD, Pharmacy, World

HOME = {"latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 12}
VISIT_START = datetime(2026, 11, 2, 16, 0, tzinfo=UTC)  # 10:00 in Chicago
VISIT_END = datetime(2026, 11, 2, 19, 0, tzinfo=UTC)
DEADLINE = VISIT_END + timedelta(hours=2)  # the policy's default return deadline
MIDNIGHT = "2026-11-02T06:00:00+00:00"  # 2 November in Chicago
DAY = "2026-11-02"
DESK = (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE)


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    return pharmacy


def _desk(pharmacy: Pharmacy, role: Role = Role.PHARMACIST):
    return signed_in(pharmacy.world, pharmacy.org, pharmacy.users[role])


def _api(pharmacy: Pharmacy, path: str, role: Role = Role.PHARMACIST, **query):
    return pharmacy.client.get(f"/api/v1/custody/{path}", headers=pharmacy.as_(role),
                               query_string=query)


def _text(response) -> str:
    return response.get_data(as_text=True)


def _field_error(page: str, field_id: str) -> str:
    found = re.search(rf'<span class="field-error" id="{field_id}-error">([^<]*)</span>', page)
    return found.group(1) if found else ""


def _audits(pharmacy: Pharmacy, action: str) -> list[AuditEvent]:
    return list(pharmacy.world.session.scalars(select(AuditEvent).where(
        AuditEvent.organisation_id == pharmacy.org.id, AuditEvent.action == action)))


# Bag reconciliation


def _shift(pharmacy: Pharmacy, clock, *, administered: int, wasted: int, returned: int):
    """Dispense a kit, give one visit's dose, waste, check out, and return what is left."""
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000).status_code == 201
    visit = pharmacy.schedule(VISIT_START.isoformat())
    assert visit.status_code == 201, visit.json
    clock.set(VISIT_START)
    path = f"/api/v1/visits/{visit.json['id']}"
    assert pharmacy.client.post(f"{path}/check-in", headers=pharmacy.as_(
        Role.NURSE, pharmacy.device_id), json={**HOME, "occurred_at": VISIT_START.isoformat()}
    ).status_code == 200
    assert pharmacy.post(Role.NURSE, {
        "kind": "administer", "quantity_ug": administered, "patient_id": pharmacy.patient_id,
        "visit_id": visit.json["id"]}).status_code == 201
    witness = pharmacy.users[Role.PHARMACIST]
    assert pharmacy.post(Role.NURSE, {
        "kind": "waste", "quantity_ug": wasted,
        "witnesses": [{"user_id": str(witness.id), "password": PASSWORD}]}).status_code == 201
    clock.set(VISIT_END)
    assert pharmacy.client.post(f"{path}/check-out", headers=pharmacy.as_(
        Role.NURSE, pharmacy.device_id), json={**HOME, "occurred_at": VISIT_END.isoformat()}
    ).status_code == 200
    clock.advance(minutes=30)
    assert pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": returned,
                                      "details": {"seal_id": "S-1"}}).status_code == 201


def _bag_seqs(pharmacy: Pharmacy) -> list[int]:
    entries = _api(pharmacy, "entries", holder=f"bag:{pharmacy.nurse.id}").json
    return [entry["seq"] for entry in entries]


def test_a_shift_whose_bag_balances_shows_no_difference(pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock, administered=35_000, wasted=15_000, returned=50_000)
    clock.set(DEADLINE)
    page = _desk(pharmacy).get(f"/console/bags?day={DAY}")
    assert page.status_code == 200
    html = _text(page)
    assert "Bag reconciliation" in html and "balanced" in html
    assert 'class="differs"' not in html and "differs by" not in html
    for figure in ("100.000", "35.000", "15.000", "50.000"):
        assert f'<td class="num">{figure}</td>' in html
    for seq in _bag_seqs(pharmacy):
        assert f'#entry-{seq}"' in html


def test_a_shift_whose_bag_does_not_balance_shows_the_difference_and_its_entries(
        pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock, administered=35_000, wasted=15_000, returned=40_000)
    clock.set(DEADLINE)
    desk = _desk(pharmacy, Role.COMPLIANCE)
    html = _text(desk.get(f"/console/bags?day={DAY}"))
    row = re.search(r'<tr class="differs">(.*?)</tr>', html, re.S)
    assert row, html
    assert "differs by 10.000 mg" in row.group(1)
    seqs = _bag_seqs(pharmacy)
    assert len(seqs) == 4  # dispensed, administered, wasted, returned
    nurse_page = f"/console/bags/{pharmacy.nurse.id}?day={DAY}"
    for seq in seqs:
        assert f'href="{nurse_page}#entry-{seq}"' in row.group(1)
    # The nurse's page lists each entry behind the difference, and shows the same figures the
    # API's statement gives for the period the reconciliation job judges.
    detail = desk.get(nurse_page)
    assert detail.status_code == 200
    detail_html = _text(detail)
    assert "differs by 10.000 mg" in detail_html
    for seq in seqs:
        assert f'<tr id="entry-{seq}">' in detail_html
    statement = _api(pharmacy, f"bags/{pharmacy.nurse.id}/statement",
                     **{"from": MIDNIGHT, "to": DEADLINE.isoformat()}).json
    assert statement["lines"][0]["remaining_ug"] == 10_000
    assert f"return deadline, {DEADLINE:%Y-%m-%d %H:%M} UTC" in detail_html


def test_a_shift_under_way_is_reckoned_up_to_now(pharmacy: Pharmacy, clock):
    _shift(pharmacy, clock, administered=35_000, wasted=15_000, returned=50_000)
    clock.set(VISIT_END + timedelta(hours=1))
    html = _text(_desk(pharmacy).get(f"/console/bags/{pharmacy.nurse.id}"))
    assert f"must be back to zero by {DEADLINE:%Y-%m-%d %H:%M} UTC" in html
    assert "balanced" in html


def test_a_day_in_the_future_is_refused_beside_the_day(pharmacy: Pharmacy):
    desk = _desk(pharmacy)
    for path in ("/console/bags", f"/console/bags/{pharmacy.nurse.id}"):
        page = desk.get(f"{path}?day=2026-11-03")
        assert page.status_code == 422
        assert _field_error(_text(page), "day") == "must not be in the future"
    page = desk.get("/console/bags?day=someday")
    assert page.status_code == 422
    assert _field_error(_text(page), "day") == "Not a valid date."


def test_another_organisations_nurse_is_not_found(world: World, pharmacy: Pharmacy):
    other = Pharmacy(world)
    desk = _desk(pharmacy)
    for nurse_id in (other.nurse.id, uuid.uuid4(), "not-an-id", pharmacy.users[Role.ADMIN].id):
        page = desk.get(f"/console/bags/{nurse_id}?day={DAY}")
        assert page.status_code == 404, nurse_id
        assert "Not found" in _text(page)
    assert desk.get(f"/console/bags/{other.nurse.id}?day=2030-01-01").status_code == 404


# Losses


def _lose(pharmacy: Pharmacy) -> dict:
    assert pharmacy.receive(1_000_000).status_code == 201
    lost = pharmacy.post(Role.PHARMACIST, {
        "kind": "loss", "quantity_ug": 5_000, "holder": "vault",
        "details": {"circumstances": "vial missing from the vault at the morning count"}})
    assert lost.status_code == 201, lost.json
    [loss] = _api(pharmacy, "losses").json
    return loss


def _deadline_rows(html: str) -> list[tuple[str, str]]:
    return [(row.group(1) or "", re.sub(r"<[^>]+>", "", row.group(2)).strip())
            for row in re.finditer(r"<tr( class=\"differs\")?>\s*<td>(?:Written|DEA Form)"
                                   r"[^<]*</td>\s*<td>[^<]*</td>\s*<td>(.*?)</td>", html, re.S)]


def test_losses_show_the_services_deadlines_counting_down(pharmacy: Pharmacy, clock):
    loss = _lose(pharmacy)
    html = _text(_desk(pharmacy, Role.ADMIN).get("/console/losses"))
    assert "vial missing from the vault" in html
    # Discovered Monday 08:00 in Chicago: notice by Tuesday 08:00, Form 106 in 45 days.
    assert "2026-11-03 14:00 UTC" in html and "2026-12-17 14:00 UTC" in html
    assert _deadline_rows(html) == [("", "due in 24 hours"), ("", "due in 45 days")]
    clock.advance(hours=25)
    assert [(row["notice_overdue"], row["form_106_overdue"])
            for row in _api(pharmacy, "losses").json] == [(True, False)]
    html = _text(_desk(pharmacy).get("/console/losses"))
    assert _deadline_rows(html) == [(' class="differs"', "overdue by 1 hour"),
                                    ("", "due in 43 days")]
    assert loss["id"] in html


def test_a_filing_recorded_through_the_form_shows_in_the_api(pharmacy: Pharmacy, clock):
    loss = _lose(pharmacy)
    clock.advance(hours=2)
    desk = _desk(pharmacy, Role.COMPLIANCE)
    desk.get("/console/losses")
    answer = desk.post(f"/console/losses/{loss['id']}/filings",
                       {"filing": "dea_notice", "filed_at": "2026-11-02T15:30"})
    assert answer.status_code == 303, _text(answer)
    html = _text(desk.get(answer.headers["Location"]))
    assert "Recorded: Written notice to DEA" in html and "2026-11-02 15:30 UTC" in html
    assert "Filed 2026-11-02 15:30 UTC" in html
    [listed] = _api(pharmacy, "losses").json
    assert (listed["notice_filed_at"], listed["form_106_filed_at"]) == (
        "2026-11-02T15:30:00+00:00", None)
    [event] = _audits(pharmacy, "custody.loss_filing")
    assert (event.object_id, event.detail["filing"], event.detail["late"]) == (
        loss["id"], "dea_notice", False)


@pytest.mark.parametrize(("form", "status", "field", "message"), [
    ({"filing": "dea_notice", "filed_at": "2026-11-02T14:01"}, 422, "filed-at",
     "must not be in the future"),
    ({"filing": "dea_notice", "filed_at": "2026-11-02T13:59"}, 422, "filed-at",
     "is before the loss was discovered"),
    ({"filing": "form_41", "filed_at": "2026-11-02T14:00"}, 422, "filing",
     "Must be one of: dea_notice, form_106."),
    ({"filing": "form_106"}, 422, "filed-at", "Missing data for required field."),
    ({"filing": "form_106", "filed_at": "yesterday"}, 422, "filed-at", "Not a valid datetime."),
])
def test_a_refused_filing_shows_beside_its_field_and_changes_nothing(
        pharmacy: Pharmacy, form, status, field, message):
    loss = _lose(pharmacy)
    desk = _desk(pharmacy)
    desk.get("/console/losses")
    answer = desk.post(f"/console/losses/{loss['id']}/filings", form)
    assert answer.status_code == status
    assert _field_error(_text(answer), f"{field}-{loss['id']}") == message
    assert _api(pharmacy, "losses").json == [loss]
    assert _audits(pharmacy, "custody.loss_filing") == []


def test_a_filing_already_recorded_is_refused_with_the_apis_conflict(pharmacy: Pharmacy):
    loss = _lose(pharmacy)
    filed = pharmacy.client.post(f"/api/v1/custody/losses/{loss['id']}/filings",
                                 headers=pharmacy.as_(Role.PHARMACIST),
                                 json={"filing": "dea_notice", "filed_at": START.isoformat()})
    assert filed.status_code == 201
    desk = _desk(pharmacy)
    desk.get("/console/losses")
    answer = desk.post(f"/console/losses/{loss['id']}/filings",
                       {"filing": "dea_notice", "filed_at": "2026-11-02T14:00"})
    assert answer.status_code == 409
    assert "The dea_notice was already filed" in _text(answer)
    assert len(_audits(pharmacy, "custody.loss_filing")) == 1


def test_only_the_apis_filers_may_record_a_filing(pharmacy: Pharmacy):
    loss = _lose(pharmacy)
    admin = _desk(pharmacy, Role.ADMIN)
    page = _text(admin.get("/console/losses"))
    assert "Record filing" not in page and "vial missing" in page
    assert admin.post(f"/console/losses/{loss['id']}/filings",
                      {"filing": "dea_notice", "filed_at": "2026-11-02T14:00"}).status_code == 403
    assert "Record filing" in _text(_desk(pharmacy).get("/console/losses"))
    assert _api(pharmacy, "losses").json == [loss]


def test_a_filing_without_the_forms_token_is_refused(pharmacy: Pharmacy):
    loss = _lose(pharmacy)
    desk = _desk(pharmacy)
    answer = desk.post(f"/console/losses/{loss['id']}/filings",
                       {"filing": "dea_notice", "filed_at": "2026-11-02T14:00"}, token=False)
    assert answer.status_code == 400
    assert _api(pharmacy, "losses").json == [loss]


def test_another_organisations_loss_is_not_found(world: World, pharmacy: Pharmacy):
    other = Pharmacy(world)
    loss = _lose(other)
    desk = _desk(pharmacy)
    assert loss["id"] not in _text(desk.get("/console/losses"))
    for loss_id in (loss["id"], "not-an-id"):
        answer = desk.post(f"/console/losses/{loss_id}/filings",
                           {"filing": "dea_notice", "filed_at": "2026-11-02T14:00"})
        assert answer.status_code == 404
    assert _api(other, "losses").json == [loss]


# Reports


def _seed(pharmacy: Pharmacy, clock) -> None:
    _shift(pharmacy, clock, administered=35_000, wasted=15_000, returned=40_000)
    changed = pharmacy.client.patch(f"/api/v1/patients/{pharmacy.patient_id}",
                                    headers=pharmacy.as_(Role.ADMIN),
                                    json={"address": "12 Elm Street, Apt 3, Chicago, IL"})
    assert changed.status_code == 200, changed.json
    clock.set(datetime(2026, 11, 4, 15, 0, tzinfo=UTC))


def test_the_dispensing_log_downloads_as_the_apis_csv_and_audits_as_the_api(
        pharmacy: Pharmacy, clock):
    _seed(pharmacy, clock)
    desk = _desk(pharmacy, Role.COMPLIANCE)
    before = len(_audits(pharmacy, "patient.read"))
    download = desk.get("/console/reports/dispensing.csv?since=2026-11-01&until=2026-11-30")
    assert download.status_code == 200
    assert download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"] == (
        'attachment; filename="dispensing-2026-11-01-to-2026-11-30.csv"')
    api = _api(pharmacy, "reports/dispensing", Role.COMPLIANCE, format="csv",
               **{"from": "2026-11-01T05:00:00+00:00", "to": "2026-12-01T06:00:00+00:00"})
    assert download.get_data() == api.get_data()
    assert download.get_data().startswith("\ufeffregistrant_name,".encode())
    assert "12 Elm Street" in download.get_data().decode("utf-8-sig")
    [console_log, api_log] = _audits(pharmacy, "custody.dispensing_log")
    assert console_log.detail == api_log.detail == {
        "from": "2026-11-01T05:00:00+00:00", "to": "2026-12-01T06:00:00+00:00",
        "events": 5, "patients": 1}
    assert len(_audits(pharmacy, "patient.read")) == before + 2


def test_the_dispensing_log_prints_as_a_page(pharmacy: Pharmacy, clock):
    _seed(pharmacy, clock)
    page = _desk(pharmacy, Role.ADMIN).get(
        "/console/reports/dispensing?since=2026-11-02&until=2026-11-02")
    assert page.status_code == 200
    html = _text(page)
    assert "Dispensing log, 2026-11-02 to 2026-11-02" in html
    assert "FV0000000" in html and "12 Elm Street" in html and "Pat Test" in html
    assert html.count("<tr>") == 1 + 5
    assert ('href="/console/reports/dispensing.csv?since=2026-11-02&amp;until=2026-11-02"'
            in html)
    [event] = _audits(pharmacy, "custody.dispensing_log")
    assert (event.detail["from"], event.detail["events"]) == (MIDNIGHT, 5)


@pytest.mark.parametrize(("query", "as_of"), [
    ("as_of=2026-11-02&at=close", "2026-11-03T06:00:00+00:00"),
    ("as_of=2026-11-02&at=open", MIDNIGHT),
    ("", None),
])
def test_the_inventory_downloads_as_the_apis_csv(pharmacy: Pharmacy, clock, query, as_of):
    _seed(pharmacy, clock)
    download = _desk(pharmacy).get(f"/console/reports/inventory.csv?{query}")
    assert download.status_code == 200, _text(download)
    api_query = {"format": "csv", **({"at": query.rsplit("=", 1)[1], "as_of": as_of}
                                      if as_of else {})}
    api = _api(pharmacy, "reports/inventory", **api_query)
    assert download.get_data() == api.get_data()
    assert download.headers["Content-Disposition"].startswith("attachment; filename=")
    page = _text(_desk(pharmacy).get(f"/console/reports/inventory?{query}"))
    assert "Inventory of controlled substances" in page


def test_the_reports_page_offers_each_report_with_labelled_dates(pharmacy: Pharmacy):
    html = _text(_desk(pharmacy).get("/console/reports"))
    for label in ("Since", "Until", "As of", "At"):
        assert re.search(rf'<label for="f-[a-z_]+">{label}</label>', html), label
    assert html.count(">Download CSV</button>") == 2
    assert 'value="2026-11-01"' in html and 'value="2026-11-02"' in html


@pytest.mark.parametrize(("path", "field", "message"), [
    ("dispensing?since=2026-11-05&until=2026-11-01", "until", "must be after from"),
    ("dispensing.csv?until=2026-11-01", "since", "Missing data for required field."),
    ("dispensing?since=2026-13-01&until=2026-11-01", "since", "Not a valid date."),
    ("inventory?as_of=2026-11-02&at=close", "as_of", "must not be in the future"),
    ("inventory.csv?at=noon", "at", "Must be one of: open, close."),
])
def test_a_refused_report_shows_beside_its_field(pharmacy: Pharmacy, path, field, message):
    page = _desk(pharmacy).get(f"/console/reports/{path}")
    assert page.status_code == 422
    assert page.mimetype == "text/html"
    assert _field_error(_text(page), field) == message
    assert _audits(pharmacy, "custody.dispensing_log") == []


# Roles


PAGES = ("/console/bags", f"/console/bags/{{nurse}}?day={DAY}", "/console/losses",
         "/console/reports", "/console/reports/dispensing?since=2026-11-01&until=2026-11-02",
         "/console/reports/dispensing.csv?since=2026-11-01&until=2026-11-02",
         "/console/reports/inventory", "/console/reports/inventory.csv")


@pytest.mark.parametrize("role", [*DESK, Role.PRESCRIBER])
def test_each_page_opens_for_the_apis_roles_only(pharmacy: Pharmacy, role: Role):
    desk = _desk(pharmacy, role)
    allowed = role in DESK
    for path in PAGES:
        answer = desk.get(path.format(nurse=pharmacy.nurse.id))
        assert answer.status_code == (200 if allowed else 403), (role, path)
    menu = _text(desk.get("/console/reports" if allowed else "/console/bags"))
    for label in ("Bags", "Losses", "Reports"):
        assert (f">{label}</a>" in menu) == allowed, (role, label)


def test_a_nurse_cannot_sign_in_to_the_console(pharmacy: Pharmacy, desk):
    assert desk.sign_in(pharmacy.org, pharmacy.nurse).status_code != 302
    assert desk.get("/console/bags").status_code == 302


def test_the_bag_pages_write_no_audit_row_as_the_api_writes_none(pharmacy: Pharmacy, clock):
    """Opening the bag pages writes no audit row: the API's statement writes none either."""
    _shift(pharmacy, clock, administered=35_000, wasted=15_000, returned=50_000)
    desk = _desk(pharmacy)
    count = select(func.count()).select_from(AuditEvent).where(
        AuditEvent.organisation_id == pharmacy.org.id)
    before = pharmacy.world.session.scalar(count)
    desk.get(f"/console/bags?day={DAY}")
    desk.get(f"/console/bags/{pharmacy.nurse.id}?day={DAY}")
    assert pharmacy.world.session.scalar(count) == before
