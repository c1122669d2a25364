"""A compliance officer reviews a flag in the browser: the queue, the flag's rule and timeline,
assigning it to herself, a refusal beside its field, and a resolution with a verdict."""

from __future__ import annotations

import re

from backend.accounts.models import Role
from safeguards.rules.custody import COUNT_DISCREPANCY
from tests.browser.conftest import axe, expect, sign_in

RESOLVED = "A vial miscounted on the shelf; recounted, matches."


def test_an_officer_opens_a_flag_from_the_queue_reads_its_timeline_and_resolves_it(
        page, seeded, live, watch):
    # A count of the vault that found less than the ledger. The seed counted this lot short
    # once already: the lot's shortfalls are one case, and this count is its second occurrence.
    flag_id = live.api(seeded).discrepancy(seeded.product_id)
    assert flag_id == seeded.flag_id
    sign_in(page, seeded, Role.COMPLIANCE)
    page.get_by_role("link", name="Flags", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Flag queue")
    counts = page.get_by_role("list", name="Flags matching these filters, by severity")
    expect(counts).to_be_visible()
    axe(page)
    page.locator(f"a[href='/console/flags/{flag_id}']").click()

    expect(page).to_have_url(re.compile(rf"/console/flags/{flag_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(COUNT_DISCREPANCY.title)
    timeline = page.locator("ol.timeline")
    expect(timeline.locator("li").first).to_be_visible()
    expect(timeline.locator("li.finding")).to_have_count(2)
    # Custody movements of the lot with their ledger seq, and the finding itself.
    expect(timeline).to_contain_text(re.compile(r"Ledger #\d+ Receive of 5000 mg .* lot L-1001"))
    expect(timeline.locator("li.finding").first).to_contain_text("Counted")
    expect(timeline.locator("li.finding").last).to_contain_text("Counted")
    axe(page)

    page.get_by_role("button", name="Assign to me").click()
    expect(page.get_by_role("status")).to_contain_text("assigned to you and is in review")
    expect(page.locator("dl.facts").first).to_contain_text("Demo Compliance")

    # Resolving without a verdict is refused beside the Verdict select; nothing changes.
    watch.expect_error_status(422)
    page.get_by_label("Note", exact=True).fill("Looked at the vault.")
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_label("Verdict", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Note", exact=True)).to_have_value("Looked at the vault.")
    axe(page)

    page.get_by_label("Verdict", exact=True).select_option("false_positive")
    page.get_by_label("Note", exact=True).fill(RESOLVED)
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("status")).to_contain_text("resolved as false positive")
    history = page.locator("table", has=page.get_by_role("columnheader", name="Step"))
    expect(history).to_contain_text(RESOLVED)
    expect(history).to_contain_text("Demo Compliance")
    axe(page)
