"""An admin adds and deactivates a user in the browser, which ends that user's session in
another browser at once; another organisation's ids answer 404 to every desk role."""

from __future__ import annotations

import re
import uuid

import pytest

from backend.accounts.models import Role
from tests.browser.conftest import axe, expect, sign_in

REVOKED = "Your session was ended (signed out elsewhere, or the account changed)."
PASSWORD = "a long temporary password 1"


def test_an_admin_deactivates_a_user_whose_session_ends_at_once(open_page, seeded, watch):
    admin, theirs = open_page(), open_page()
    username = f"temp-{uuid.uuid4().hex[:8]}"
    sign_in(admin, seeded, Role.ADMIN)
    admin.get_by_role("link", name="Users", exact=True).click()
    admin.get_by_label("Username", exact=True).fill(username)
    admin.get_by_label("Display name", exact=True).fill("Temp Pharmacist")
    admin.get_by_label("Role", exact=True).select_option("pharmacist")
    admin.get_by_label("Password", exact=True).fill(PASSWORD)
    admin.get_by_role("button", name="Add user").click()
    expect(admin.get_by_role("status")).to_contain_text(f"Added Temp Pharmacist ({username})")

    # The new pharmacist signs in in a browser of their own.
    sign_in(theirs, seeded, Role.PHARMACIST, PASSWORD, username=username)
    expect(theirs.get_by_text("Temp Pharmacist (pharmacist)")).to_be_visible()

    row = admin.get_by_role("row", name=re.compile(username))
    row.get_by_role("link", name="Temp Pharmacist").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Temp Pharmacist")
    axe(admin)
    admin.get_by_role("button", name="Deactivate").click()
    expect(admin.get_by_role("status")).to_contain_text(
        f"Deactivated Temp Pharmacist ({username}): their console and app sessions ended.")
    expect(admin.locator("dl.facts")).to_contain_text("deactivated")
    expect(admin.get_by_role("button", name="Reactivate")).to_be_visible()

    # Their next page is the sign-in page, saying why; signing in again is refused.
    theirs.reload()
    expect(theirs).to_have_url(re.compile(r"/console/login\?.*ended=revoked"))
    expect(theirs.get_by_role("status")).to_have_text(REVOKED)
    watch.expect_error_status(401)
    sign_in(theirs, seeded, Role.PHARMACIST, PASSWORD, username=username)
    expect(theirs.get_by_role("alert")).to_be_visible()
    assert theirs.url.endswith("/console/login")


ELSEWHERE = {
    Role.COMPLIANCE: ("/console/flags/{flag}", "/console/nurses/{nurse}",
                      "/console/patients/{patient}"),
    Role.PHARMACIST: ("/console/bags/{nurse}",),
    Role.ADMIN: ("/console/users/{user}", "/console/users/{nurse}"),
}


@pytest.mark.parametrize("role", ELSEWHERE, ids=[role.value for role in ELSEWHERE])
def test_another_organisations_ids_answer_404(page, seeded, watch, role: Role):
    watch.expect_error_status(404)
    sign_in(page, seeded, role)
    for path in ELSEWHERE[role]:
        answer = page.goto(path.format(**seeded.other))
        assert answer.status == 404, (path, answer.status)
        expect(page.get_by_role("heading", level=1)).to_have_count(1)
        # Nothing of the other organisation shows: only the refusal, in this user's frame.
        expect(page.locator("main")).not_to_contain_text(seeded.other_org)
    axe(page)
