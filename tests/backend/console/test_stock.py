"""The pharmacist's stock pages: inventory, movements through the custody service, counts."""

from __future__ import annotations

import html
import re
import uuid

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.flags.models import Flag
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, World

ADMIN, PHARMACIST, COMPLIANCE, PRESCRIBER = (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE,
                                             Role.PRESCRIBER)
WHEN = "2026-11-02T13:30"
RECEIPT = {"kind": "receive", "lot": "L1", "expiry": "2028-01-31", "quantity_mg": "1500",
           "occurred_at": WHEN, **{f"details.{name}": value for name, value in SUPPLIER.items()}}


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    return Pharmacy(world)


@pytest.fixture
def desk(world: World, pharmacy: Pharmacy) -> Desk:
    return signed_in(world, pharmacy.org, pharmacy.users[PHARMACIST])


def _text(answer) -> str:
    return html.unescape(answer.get_data(as_text=True))


def _beside(answer, field: str) -> str:
    """Return the message shown beside `field` (its field-error span), or ''."""
    found = re.search(rf'<span class="field-error" id="{re.escape(field.replace(".", "-"))}'
                      r'-error">(.*?)</span>', answer.get_data(as_text=True), re.S)
    return html.unescape(found.group(1)) if found else ""


def _record(desk: Desk, pharmacy: Pharmacy, **fields):
    desk.get(f"/console/movements?kind={fields.get('kind', 'receive')}")
    return desk.post("/console/movements", {"product_id": pharmacy.product_id, **fields})


def _dispense(pharmacy: Pharmacy, quantity_mg: str = "500", seal: str = "S-9", **fields):
    return {"kind": "dispense", "lot": "L1", "expiry": "2028-01-31", "quantity_mg": quantity_mg,
            "occurred_at": WHEN, "nurse_id": str(pharmacy.nurse.id), "details.seal_id": seal,
            **fields}


def _ledger(pharmacy: Pharmacy) -> list[dict]:
    return pharmacy.client.get("/api/v1/custody/entries",
                               headers=pharmacy.as_(PHARMACIST)).json


def _balances(pharmacy: Pharmacy) -> dict[str, int]:
    rows = pharmacy.client.get("/api/v1/custody/balances", headers=pharmacy.as_(PHARMACIST)).json
    return {f"{row['holder'].split(':')[0]}/{row['lot']}": row["quantity_ug"] for row in rows}


def _audited(world: World, action: str) -> int:
    world.session.expire_all()
    return world.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == action))


def test_receive_then_dispense_shows_both_holders_in_mg_and_containers(world, pharmacy, desk):
    received = _record(desk, pharmacy, **RECEIPT)
    assert received.status_code == 303, _text(received)
    assert received.headers["Location"].endswith("/console/movements?kind=receive")
    page = _text(desk.get(received.headers["Location"]))
    [entry] = _ledger(pharmacy)
    assert f"seq {entry['seq']}, hash {entry['entry_hash']}" in page
    assert entry["quantity_ug"] == 1_500_000 and entry["details"] == SUPPLIER
    dispensed = _record(desk, pharmacy, **_dispense(pharmacy))
    assert dispensed.status_code == 303, _text(dispensed)
    page = _text(desk.get(dispensed.headers["Location"]))
    entry = _ledger(pharmacy)[-1]
    assert (entry["kind"], entry["to_holder"], entry["details"]) == (
        "dispense", f"bag:{pharmacy.nurse.id}", {"seal_id": "S-9"})
    assert f"seq {entry['seq']}, hash {entry['entry_hash']}" in page
    # The recent entries: newest first, holders by name, the hash's prefix.
    assert page.index(f"<code title=\"{entry['entry_hash']}\">") < page.index("Supplier → Vault")
    assert "Vault → Bag of Test User" in page
    assert _balances(pharmacy) == {"vault/L1": 1_000_000, "bag/L1": 500_000}
    stock = _text(desk.get("/console/inventory"))
    vault, bag = stock.split("<caption>Vault of Test Pharmacy</caption>")[1].split(
        "<caption>Bag of Test User</caption>")
    # 50 mg/mL in 10 mL vials: 500 mg a container.
    assert '<td class="num">1000.000</td>' in vault and "2 <span" in vault
    assert '<td class="num">500.000</td>' in bag and "1 <span" in bag
    assert "20.000 mL" in vault and "10.000 mL" in bag
    assert "expires in" not in stock


def test_a_lot_expiring_within_30_days_is_marked(pharmacy, desk):
    assert _record(desk, pharmacy, **{**RECEIPT, "lot": "SOON",
                                      "expiry": "2026-11-20"}).status_code == 303
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    stock = _text(desk.get("/console/inventory"))
    soon = re.search(r'<tr class="expiring">\s*<td>[^<]*<span[^>]*>[^<]*</span></td>\s*'
                     r"<td>SOON</td>.*?</tr>", stock, re.S)
    assert soon and "expires in 18 days" in soon.group(0)
    assert stock.count('class="expiring"') == 1


def test_a_dispense_beyond_stock_is_refused_beside_the_quantity(world, pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    before = (_ledger(pharmacy), _balances(pharmacy))
    answer = _record(desk, pharmacy, **_dispense(pharmacy, quantity_mg="1500.001"))
    assert answer.status_code == 409
    assert "1500000 µg of lot L1" in _beside(answer, "quantity_mg")
    # The form comes back as it was sent, for the pharmacist to correct.
    assert 'value="1500.001"' in answer.get_data(as_text=True)
    assert (_ledger(pharmacy), _balances(pharmacy)) == before
    # Refused as the API refuses: rolled back, and the refusal itself audited.
    assert _audited(world, "request.refused") == 1


def test_a_destruction_needs_both_witnesses_passwords(world, pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    first, second = pharmacy.users[ADMIN], pharmacy.users[COMPLIANCE]
    destroy = {"kind": "destroy", "lot": "L1", "expiry": "2028-01-31", "quantity_mg": "500",
               "occurred_at": WHEN, "details.method": "reverse distributor, Form 41",
               "witnesses.0.user_id": str(first.id), "witnesses.0.password": PASSWORD,
               "witnesses.1.user_id": str(second.id), "witnesses.1.password": "wrong"}
    before = _ledger(pharmacy)
    answer = _record(desk, pharmacy, **destroy)
    assert answer.status_code == 422
    assert "password did not confirm" in _beside(answer, "witnesses")
    fieldset = _text(answer).split("<legend>Two witnesses")[1].split("</fieldset>")[0]
    assert "password did not confirm" in fieldset
    assert PASSWORD not in _text(answer) and 'value="wrong"' not in _text(answer)
    assert _ledger(pharmacy) == before
    # The failed password is kept as the API keeps it: counted and audited, never its value.
    assert _audited(world, "custody.witness_failed") == 1
    done = _record(desk, pharmacy, **{**destroy, "witnesses.1.password": PASSWORD})
    assert done.status_code == 303, _text(done)
    entry = _ledger(pharmacy)[-1]
    assert (entry["kind"], entry["to_holder"], len(entry["witnesses"])) == (
        "destroy", "destruction", 2)
    assert "Test User (password); Test User (password)" in _text(desk.get(done.headers["Location"]))


def test_witness_passwords_lock_out_as_logins_do(world, pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    witness = pharmacy.users[ADMIN]
    destroy = {"kind": "destroy", "lot": "L1", "expiry": "2028-01-31", "quantity_mg": "1",
               "occurred_at": WHEN, "details.method": "incinerated",
               "witnesses.0.user_id": str(witness.id), "witnesses.0.password": "wrong",
               "witnesses.1.user_id": str(pharmacy.users[COMPLIANCE].id),
               "witnesses.1.password": PASSWORD}
    for _ in range(world.app.config["LOGIN_MAX_PER_ACCOUNT"]):
        assert _record(desk, pharmacy, **destroy).status_code == 422
    locked = _record(desk, pharmacy, **{**destroy, "witnesses.0.password": PASSWORD})
    assert locked.status_code == 429
    assert "Too many failed passwords" in _beside(locked, "witnesses")


def test_a_return_must_bring_back_the_seal_it_left_with(pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    assert _record(desk, pharmacy, **_dispense(pharmacy)).status_code == 303
    back = {**_dispense(pharmacy, quantity_mg="200"), "kind": "return"}
    wrong = _record(desk, pharmacy, **{**back, "details.seal_id": "S-1"})
    assert wrong.status_code == 409
    assert "seal does not match" in _beside(wrong, "details.seal_id")
    assert _record(desk, pharmacy, **back).status_code == 303
    assert _balances(pharmacy) == {"vault/L1": 1_200_000, "bag/L1": 300_000}


def test_an_adjustment_needs_its_reason(pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    adjust = {"kind": "adjust", "lot": "L1", "expiry": "2028-01-31", "quantity_mg": "0.5",
              "occurred_at": WHEN, "holder": "vault", "details.direction": "down"}
    refused = _record(desk, pharmacy, **adjust)
    assert refused.status_code == 422
    assert "required for a adjust entry" in _beside(refused, "details.reason")
    done = _record(desk, pharmacy, **adjust, **{"details.reason": "spill, incident 4"})
    assert done.status_code == 303, _text(done)
    assert _balances(pharmacy) == {"vault/L1": 1_499_500}


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"quantity_mg": "1.0005"}, "quantity_mg", "at most three decimals"),
    ({"quantity_mg": "0"}, "quantity_mg", "from 0.001 to"),
    ({"quantity_mg": "1e999999999"}, "quantity_mg", "at most three decimals"),
    ({"lot": ""}, "lot", "Missing data"),
    ({"expiry": "2026-10-01"}, "expiry", "the lot has expired"),
    ({"occurred_at": "yesterday"}, "occurred_at", "Not a valid datetime"),
    ({"details.supplier_dea": "XX123"}, "details.supplier_dea", ""),
])
def test_fields_are_refused_beside_themselves(pharmacy, desk, fields, field, message):
    answer = _record(desk, pharmacy, **{**RECEIPT, **fields})
    assert answer.status_code == 422
    assert _beside(answer, field) and message in _beside(answer, field)
    assert _ledger(pharmacy) == []


def test_another_organisation_s_ids_are_refused_as_the_api_refuses(world, pharmacy, desk):
    other = Pharmacy(world)
    answer = _record(desk, pharmacy, **{**RECEIPT, "product_id": other.product_id})
    assert answer.status_code == 404
    assert "No such product." in _beside(answer, "product_id")
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    answer = _record(desk, pharmacy, **_dispense(pharmacy, nurse_id=str(other.nurse.id)))
    assert answer.status_code == 422
    assert "active nurse of this organisation" in _beside(answer, "nurse_id")
    desk.get("/console/counts")
    counted = desk.post("/console/counts", {"holder": f"bag:{other.nurse.id}",
                                            "counted_at": WHEN})
    assert counted.status_code == 422
    assert len(_ledger(pharmacy)) == 1
    assert desk.get(f"/console/counts/{uuid.uuid4()}").status_code == 404
    assert desk.get("/console/counts/not-an-id").status_code == 404
    assert desk.post(f"/console/counts/{uuid.uuid4()}/reasons", {
        "product_id": pharmacy.product_id, "lot": "L1", "reason": "r"}).status_code == 404
    assert desk.get(f"/console/counts?holder=bag:{other.nurse.id}").status_code == 404


def test_a_post_without_its_csrf_token_is_refused(pharmacy, desk):
    answer = desk.post("/console/movements", {"product_id": pharmacy.product_id, **RECEIPT},
                       token=False)
    assert answer.status_code == 400
    assert _ledger(pharmacy) == []
    answer = desk.post("/console/counts", {"holder": "vault", "counted_at": WHEN}, token=False)
    assert answer.status_code == 400


def _count_discrepancy(world: World, pharmacy: Pharmacy, desk: Desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    assert _record(desk, pharmacy, **{**RECEIPT, "lot": "L2"}).status_code == 303
    # Counted a little after the receipts; recorded later still.
    world.rt.clock.advance(minutes=10)
    sheet = _text(desk.get("/console/counts?holder=vault"))
    assert sheet.count('name="counts.') == 2 * 4 + 5
    return desk.post("/console/counts", {
        "holder": "vault", "counted_at": "2026-11-02T14:05",
        "counts.0.product_id": pharmacy.product_id, "counts.0.lot": "L1",
        "counts.0.quantity_mg": "1490",
        "counts.1.product_id": pharmacy.product_id, "counts.1.lot": "L2",
        "counts.1.quantity_mg": "1500", "counts.1.reason": "not needed: it matches"})


def _flags(world: World) -> list[Flag]:
    world.session.expire_all()
    return list(world.session.scalars(select(Flag).where(
        Flag.rule_id == "custody.count_discrepancy")))


def test_a_count_with_a_discrepancy_shows_it_with_its_flag(world, pharmacy, desk):
    answer = _count_discrepancy(world, pharmacy, desk)
    assert answer.status_code == 303, _text(answer)
    [flag] = _flags(world)
    assert flag.evidence["difference_ug"] == -10_000
    page = _text(desk.get(answer.headers["Location"]))
    assert "Count recorded: 2 lot(s), 1 discrepancy." in page
    # Flags are compliance's and admins' to open: the pharmacist is told one was raised.
    assert "Flag raised for compliance review" in page and f"/console/flags/{flag.id}" not in page
    assert '<td class="num">-10.000</td>' in page
    assert 'class="differs"' in page
    counts = _text(desk.get("/console/counts"))
    assert "Lot L1: -10.000 mg; flag raised for compliance review" in counts
    assert f'href="{answer.headers["Location"]}"' in counts
    # Nothing was adjusted: the difference waits for a reason or the flag's review.
    assert _balances(pharmacy) == {"vault/L1": 1_500_000, "vault/L2": 1_500_000}


def test_a_discrepancy_is_corrected_with_a_reason_on_its_flag(world, pharmacy, desk):
    counted = _count_discrepancy(world, pharmacy, desk)
    count_path = counted.headers["Location"]
    desk.get(count_path)
    refused = desk.post(f"{count_path}/reasons", {"product_id": pharmacy.product_id,
                                                   "lot": "L2", "reason": "matches"})
    assert refused.status_code == 422
    assert "no discrepancy" in _text(refused)
    fixed = desk.post(f"{count_path}/reasons", {"product_id": pharmacy.product_id, "lot": "L1",
                                                 "reason": "vial cracked, incident 7"})
    assert fixed.status_code == 303, _text(fixed)
    [adjust] = [entry for entry in _ledger(pharmacy) if entry["kind"] == "adjust"]
    assert (adjust["quantity_ug"], adjust["details"]["reason"]) == (10_000, "vial cracked, "
                                                                            "incident 7")
    assert _balances(pharmacy) == {"vault/L1": 1_490_000, "vault/L2": 1_500_000}
    [flag] = _flags(world)
    assert flag.evidence["adjustment_id"] == adjust["id"]
    page = _text(desk.get(count_path))
    assert f"seq {adjust['seq']}, hash {adjust['entry_hash']}" in page
    assert "Corrected: vial cracked, incident 7" in page
    assert "Flag raised for compliance review" in page
    again = desk.post(f"{count_path}/reasons", {"product_id": pharmacy.product_id, "lot": "L1",
                                                 "reason": "twice"})
    assert again.status_code == 409
    assert len([e for e in _ledger(pharmacy) if e["kind"] == "adjust"]) == 1


def test_a_count_s_blank_lot_is_refused_beside_it(world, pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    desk.get("/console/counts")
    answer = desk.post("/console/counts", {"holder": "vault", "counted_at": WHEN,
                                           "counts.0.product_id": pharmacy.product_id,
                                           "counts.0.lot": "L1"})
    assert answer.status_code == 422
    assert "Missing data" in _beside(answer, "counts.0.quantity_mg")
    assert _audited(world, "custody.count") == 0


@pytest.mark.parametrize(("path", "allowed"), [
    ("/console/inventory", {ADMIN, PHARMACIST, COMPLIANCE}),
    ("/console/movements", {ADMIN, PHARMACIST, COMPLIANCE}),
    ("/console/counts", {PHARMACIST}),
])
def test_pages_open_for_the_api_s_roles(world, pharmacy, path, allowed):
    for role in (ADMIN, PHARMACIST, COMPLIANCE, PRESCRIBER):
        browser = signed_in(world, pharmacy.org, pharmacy.users[role])
        answer = browser.get(path)
        assert answer.status_code == (200 if role in allowed else 403), (role, path)
        menu = browser.get("/console/inventory" if role != PRESCRIBER else "/console/")
        label = path.rsplit("/", 1)[1].capitalize()
        if answer.status_code == 200:
            assert answer.get_data(as_text=True).count("<h1>") == 1
            assert f">{label}</a>" in menu.get_data(as_text=True)


@pytest.mark.parametrize("role", [ADMIN, COMPLIANCE])
def test_only_pharmacists_record_movements(world, pharmacy, role):
    browser = signed_in(world, pharmacy.org, pharmacy.users[role])
    page = _text(browser.get("/console/movements"))
    assert "<form method=\"post\" action=\"/console/movements\"" not in page
    answer = browser.post("/console/movements", {"product_id": pharmacy.product_id, **RECEIPT})
    assert answer.status_code == 403
    assert browser.post("/console/counts", {"holder": "vault",
                                            "counted_at": WHEN}).status_code == 403
    assert _ledger(pharmacy) == []


def test_entries_are_paged_newest_first(world, pharmacy, desk):
    for lot in ("A1", "A2", "A3"):
        assert _record(desk, pharmacy, **{**RECEIPT, "lot": lot}).status_code == 303
    first = _text(desk.get("/console/movements?limit=2"))
    assert "<td>A3</td>" in first and "<td>A2</td>" in first and "<td>A1</td>" not in first
    assert "Next page" in first and "Previous page" not in first
    second = _text(desk.get("/console/movements?limit=2&offset=2&kind=receive"))
    assert "<td>A1</td>" in second and "Previous page" in second and "Next page" not in second
    assert desk.get("/console/movements?limit=0").status_code == 422



def test_a_refused_count_changes_nothing_and_keeps_its_sheet(world, pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    desk.get("/console/counts")
    # L1 would be adjusted by its reason; then the new lot, reconciled after it, is refused.
    answer = desk.post("/console/counts", {
        "holder": "vault", "counted_at": WHEN,
        "counts.0.product_id": pharmacy.product_id, "counts.0.lot": "L1",
        "counts.0.quantity_mg": "0", "counts.0.reason": "all gone",
        "counts.1.product_id": pharmacy.product_id, "counts.1.lot": "NEW",
        "counts.1.quantity_mg": "5", "counts.1.reason": "found on the shelf"})
    assert answer.status_code == 422
    assert "give the expiry of lot NEW" in _beside(answer, "counts")
    page = _text(answer)
    assert 'name="counts.0.lot" value="L1"' in page and 'value="found on the shelf"' in page
    assert [entry["kind"] for entry in _ledger(pharmacy)] == ["receive"]
    assert _balances(pharmacy) == {"vault/L1": 1_500_000}
    assert _audited(world, "custody.count") == 0


def test_a_deactivated_nurse_s_bag_is_still_counted(world, pharmacy, desk):
    assert _record(desk, pharmacy, **RECEIPT).status_code == 303
    assert _record(desk, pharmacy, **_dispense(pharmacy)).status_code == 303
    holder = f"bag:{pharmacy.nurse.id}"
    answer = world.client.patch(f"/api/v1/users/{pharmacy.nurse.id}",
                                headers=pharmacy.as_(ADMIN), json={"active": False})
    assert answer.status_code == 200, answer.json
    counts = _text(desk.get("/console/counts"))
    assert f'<option value="{holder}">Bag of Test User</option>' in counts
    sheet = _text(desk.get(f"/console/counts?holder={holder}"))
    assert 'name="counts.0.lot" value="L1"' in sheet
    # She can no longer be dispensed to.
    assert str(pharmacy.nurse.id) not in _text(desk.get("/console/movements?kind=dispense"))
