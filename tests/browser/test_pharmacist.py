"""A pharmacist's day in the browser: receive, dispense, count with a discrepancy, reconcile a
nurse's bag, download a DEA record. Each test leaves what others rely on as it found it, or
works in lots of its own."""

from __future__ import annotations

import csv
import io
import re
import uuid
from decimal import Decimal

from backend.accounts.models import Role
from tests.browser.conftest import axe, expect, sign_in

VIAL = "Ketamine HCl 50 mg/mL, 10 mL vial"
NURSE = "Demo Nurse (demo-nurse, nurse)"
RECORDED = re.compile(r"as ledger entry seq \d+, hash [0-9a-f]{64}\.")


def _said(page, text) -> None:
    expect(page.get_by_role("status")).to_contain_text(text)


def _lot() -> str:
    return f"B-{uuid.uuid4().hex[:8].upper()}"


def _movement(page, kind: str) -> None:
    page.get_by_role("link", name="Movements").click()
    page.get_by_role("navigation", name="Kind of movement").get_by_role("link", name=kind).click()
    expect(page.get_by_role("heading", level=2, name=kind)).to_be_visible()


def _receive(page, lot: str, mg: str) -> None:
    _movement(page, "Receive from a supplier")
    page.get_by_label("Product", exact=True).select_option(label=VIAL)
    page.get_by_label("Lot", exact=True).fill(lot)
    page.get_by_label("Expiry", exact=True).fill("2028-06-30")
    page.get_by_label("Quantity (mg)", exact=True).fill(mg)
    page.get_by_label("Supplier", exact=True).fill("Example Wholesale Inc.")
    page.get_by_label("Supplier's address", exact=True).fill("1 Depot Rd, Elk Grove")
    page.get_by_label("Supplier's DEA number", exact=True).fill("RW0000000")
    page.get_by_label("Invoice or DEA Form 222 number", exact=True).fill("INV-77")
    page.get_by_role("button", name="Receive from a supplier").click()


def _kit(page, kind: str, lot: str, mg: str, seal: str) -> None:
    _movement(page, kind)
    page.get_by_label("Product", exact=True).select_option(label=VIAL)
    page.get_by_label("Lot", exact=True).fill(lot)
    page.get_by_label("Expiry", exact=True).fill("2028-06-30")
    page.get_by_label("Quantity (mg)", exact=True).fill(mg)
    nurse = "Nurse" if kind == "Dispense to a nurse" else "Returning nurse"
    page.get_by_label(nurse, exact=True).select_option(label=NURSE)
    page.get_by_label("Seal id of the kit", exact=True).fill(seal)
    page.get_by_role("button", name=kind).click()


def test_a_pharmacist_receives_stock_and_sees_it_in_the_vault(page, seeded):
    sign_in(page, seeded, Role.PHARMACIST)
    lot = _lot()
    _receive(page, lot, "1000")
    _said(page, f"Recorded receive of 1000.000 mg of lot {lot}")
    expect(page.get_by_role("status")).to_contain_text(RECORDED)
    axe(page)
    page.get_by_role("link", name="Inventory").click()
    vault = page.locator("table", has=page.locator("caption", has_text="Vault of"))
    row = vault.locator("tr", has=page.get_by_role("cell", name=lot, exact=True))
    expect(row).to_contain_text("1000.000")
    # The seeded lot that expires within 30 days is marked.
    expect(vault.locator("tr.expiring", has_text="L-0999")).to_contain_text("expires in")
    axe(page)


def test_a_pharmacist_dispenses_a_kit_and_a_refusal_shows_beside_its_field(page, seeded, watch):
    sign_in(page, seeded, Role.PHARMACIST)
    lot, seal = _lot(), f"SEAL-{uuid.uuid4().hex[:6]}"
    _receive(page, lot, "200")
    _kit(page, "Dispense to a nurse", lot, "150", seal)
    _said(page, f"Recorded dispense of 150.000 mg of lot {lot}")
    # More than the vault still holds of the lot: the service's 409, beside the quantity.
    watch.expect_error_status(409)
    _kit(page, "Dispense to a nurse", lot, "100", f"{seal}-2")
    expect(page.get_by_role("alert")).to_be_visible()
    quantity = page.get_by_label("Quantity (mg)", exact=True)
    expect(quantity).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#quantity_mg-error")).not_to_be_empty()
    axe(page)
    # Her kit comes back under its seal, so her bag is as the other tests expect it.
    _kit(page, "Take a return", lot, "150", seal)
    _said(page, f"Recorded return of 150.000 mg of lot {lot}")


def _mg(quantity_ug: int) -> str:
    return str(Decimal(quantity_ug).scaleb(-3).quantize(Decimal("0.001")))


def test_a_count_with_a_discrepancy_is_flagged_then_corrected_with_a_reason(page, seeded, live):
    # The form's time is to the minute: move past every entry the ledger already has.
    live.clock.advance(minutes=1)
    held = {row["lot"]: row["quantity_ug"] for row in live.api(seeded).call(
        "GET", "/custody/balances", Role.PHARMACIST, holder="vault")
        if row["product_id"] == seeded.product_id}
    short = "L-1001"
    sign_in(page, seeded, Role.PHARMACIST)
    page.get_by_role("link", name="Counts").click()
    sheet = page.locator("form", has=page.get_by_role("button", name="Record the count"))
    for lot, quantity in held.items():
        counted = quantity - 2_500 if lot == short else quantity
        line = sheet.locator("fieldset", has=page.locator("legend", has_text=f", lot {lot}, "))
        line.get_by_label("Counted (mg)", exact=True).fill(_mg(counted))
    page.get_by_role("button", name="Record the count").click()
    expect(page.get_by_role("status")).to_contain_text("1 discrepancy")
    row = page.locator("tr.differs")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("-2.500")
    # The difference is flagged for compliance review.
    expect(row).to_contain_text(re.compile(r"\bflag", re.IGNORECASE))
    axe(page)
    page.get_by_label(f"Reason for lot {short}").fill("Two vials broken in the vault, found today")
    page.get_by_role("button", name=f"Correct lot {short} with this reason").click()
    expect(page.get_by_role("status")).to_contain_text(
        re.compile(rf"Lot {short} corrected by ledger entry seq \d+"))
    expect(row).to_contain_text("Corrected: Two vials broken in the vault, found today")


def test_a_nurses_bag_is_reconciled_over_her_shift(page, seeded, live):
    sign_in(page, seeded, Role.PHARMACIST)
    page.get_by_role("link", name="Bags").click()
    page.get_by_role("link", name="Demo Nurse's shift, with its ledger entries").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Bag of Demo Nurse, shift of")
    statement = page.locator("table", has=page.locator(
        "caption", has_text="dispensed = administered + wasted + returned"))
    seeded_lot = statement.locator("tr", has=page.get_by_role("cell", name="L-1001", exact=True))
    # The seeded kit is still out: the difference is highlighted, linked to its entries.
    expect(seeded_lot).to_have_class(re.compile(r"\bdiffers\b"))
    expect(seeded_lot).to_contain_text("differs by 500.000 mg")
    entry = seeded_lot.get_by_role("link", name=re.compile(r"^Ledger entry \d+$")).first
    seq = entry.get_attribute("aria-label").split()[-1]
    entry.click()
    expect(page.locator(f"#entry-{seq}")).to_contain_text("dispensed to nurse")
    axe(page)
    # She brings the kit back under its seal: the bag balances.
    _kit(page, "Take a return", "L-1001", "500", "SEAL-0001")
    _said(page, "Recorded return of 500.000 mg")
    # The statement runs up to now, and this clock stands still: let a minute pass.
    live.clock.advance(minutes=1)
    page.get_by_role("link", name="Bags").click()
    page.get_by_role("link", name="Demo Nurse's shift, with its ledger entries").click()
    expect(seeded_lot).not_to_have_class(re.compile(r"\bdiffers\b"))
    expect(seeded_lot).to_contain_text("balanced")
    # Dispensed again, as the seed left it, for the tests that follow.
    _kit(page, "Dispense to a nurse", "L-1001", "500", "SEAL-0001")
    _said(page, "Recorded dispense of 500.000 mg")


def test_a_pharmacist_downloads_the_dispensing_log(page, seeded):
    sign_in(page, seeded, Role.PHARMACIST)
    page.get_by_role("link", name="Reports").click()
    axe(page)
    dispensing = page.get_by_role("region", name=re.compile("^Dispensing log"))
    with page.expect_download() as download:
        dispensing.get_by_role("button", name="Download CSV").click()
    assert re.fullmatch(r"dispensing-\d{4}-\d{2}-\d{2}-to-\d{4}-\d{2}-\d{2}\.csv",
                        download.value.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert any(row.get("lot") == "L-1001" for row in rows), rows[:3]
    # The same log as a page to print.
    dispensing.get_by_role("button", name="Show the dispensing log").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.get_by_role("cell", name="L-1001 (2028-06-30)").first).to_be_visible()
    axe(page)
