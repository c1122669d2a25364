"""A second factor in a real browser: a user adds an authenticator app in the console (the QR code's
key read from the page, codes computed on the live server's clock) and signs in with a code; a
security key from Chromium's virtual authenticator is added and signs in; a factor reset by an
admin is enrolled again at sign-in. Each new page passes axe."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import pyotp
import pytest

from backend.accounts.models import Role
from tests.browser.conftest import Watch, axe, expect, sign_in, watched_page
from tests.browser.live import LiveServer, Seeded

PASSWORD = "a long temporary password 2"
DUE = re.compile(r"Your role needs a second factor from \d{4}-\d\d-\d\d \d\d:\d\d UTC")
# A step of TOTP: a code later than the last one accepted needs the next step.
STEP_SECONDS = 30


def new_user(live: LiveServer, seeded: Seeded, role: Role) -> str:
    """Add a user with `role` through the API, as the seeded admin; return the username."""
    username = f"{role.value}-{uuid.uuid4().hex[:8]}"
    live.api(seeded).call("POST", "/users", Role.ADMIN, {
        "username": username, "display_name": f"New {role.value.capitalize()}",
        "role": role.value, "password": PASSWORD}, status=201)
    return username


def authenticator(page) -> pyotp.TOTP:
    """Return an authenticator app that read the key the page shows beside its QR code."""
    expect(page.locator("figure.qr svg")).to_be_visible()
    return pyotp.TOTP(page.locator("code.secret").inner_text().replace(" ", ""))


def next_code(live: LiveServer, app: pyotp.TOTP) -> str:
    """Return the app's code a step later than any it showed before, on the server's clock."""
    live.clock.advance(seconds=STEP_SECONDS)
    return app.at(live.clock.now())


def recovery_codes(page) -> list[str]:
    """Return the recovery codes the page shows, after checking the page."""
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    codes = page.locator("ol.recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", c)
                                    for c in codes), codes
    axe(page)
    return codes


def sign_out(page) -> None:
    """Sign out with the header's button."""
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))


def test_a_user_adds_an_authenticator_app_and_signs_in_with_its_code(page, live, seeded, watch):
    watch.expect_error_status(422)
    username = new_user(live, seeded, Role.PHARMACIST)
    sign_in(page, seeded, Role.PHARMACIST, PASSWORD, username=username)
    # Within the grace: the password signs in, and every page says by when a factor is due.
    expect(page.locator("p.notice.due")).to_contain_text(DUE)
    page.get_by_role("link", name="Second factor").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Second factor")
    axe(page)
    page.get_by_role("button", name="Add an authenticator app").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Add an authenticator app")
    axe(page)
    app = authenticator(page)
    page.get_by_label("Code from the app").fill("000000")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("alert")).to_contain_text("The code is wrong")
    assert page.locator("code.secret").inner_text().replace(" ", "") == app.secret
    page.get_by_label("Code from the app").fill(app.at(live.clock.now()))
    page.get_by_role("button", name="Confirm").click()
    recovery_codes(page)
    page.get_by_role("link", name="I have kept them: continue").click()
    expect(page.get_by_role("cell", name=re.compile("^confirmed"))).to_be_visible()
    expect(page.locator("p.notice.due")).to_have_count(0)

    sign_out(page)
    sign_in(page, seeded, Role.PHARMACIST, PASSWORD, username=username)
    expect(page).to_have_url(re.compile(r"/console/login/factor$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Second factor")
    axe(page)
    page.get_by_label("Code").fill(next_code(live, app))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_text("New Pharmacist (pharmacist)")).to_be_visible()
    assert "/console/login" not in page.url

    # A step-up, as a refused sensitive action asks.
    page.goto("/console/step-up?next=/console/losses")
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your second factor")
    axe(page)
    page.get_by_label("Code").fill(next_code(live, app))
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile(r"/console/losses$"))
    expect(page.get_by_role("status")).to_contain_text("Second factor confirmed")


@pytest.fixture
def at_localhost(chromium, live):
    """Return a page that opens the live server as http://localhost:<port>, and its watch.

    A security key's relying party is the page's host name, and browsers refuse an IP address
    there: this page's origin is localhost, where the other pages use 127.0.0.1.
    """
    origin = live.url.replace("127.0.0.1", "localhost")
    watch = Watch(origin=origin)
    page = watched_page(chromium, SimpleNamespace(url=origin), watch)
    yield page, watch
    page.context.close()
    assert not watch.outside, watch.outside
    assert not watch.unexpected_errors(), watch.unexpected_errors()


def virtual_authenticator(page) -> dict:
    """Give the page's browser a passkey authenticator (Chromium's virtual one); return it."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    found = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True}})
    return {"cdp": cdp, "id": found["authenticatorId"]}


def test_a_security_key_is_added_and_signs_in(at_localhost, live, seeded):
    page, _watch = at_localhost
    key = virtual_authenticator(page)
    username = new_user(live, seeded, Role.COMPLIANCE)
    sign_in(page, seeded, Role.COMPLIANCE, PASSWORD, username=username)
    page.goto("/console/account/factors")
    page.get_by_label("Name of the key (optional)").fill("Laptop passkey")
    page.get_by_role("button", name="Add a security key").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Add a security key")
    axe(page)
    page.get_by_role("button", name="Register “Laptop passkey”").click()
    # The first factor comes with recovery codes.
    recovery_codes(page)
    credentials = key["cdp"].send("WebAuthn.getCredentials", {"authenticatorId": key["id"]})
    assert len(credentials["credentials"]) == 1
    page.get_by_role("link", name="I have kept them: continue").click()
    expect(page.get_by_role("cell", name="Laptop passkey", exact=True)).to_be_visible()

    sign_out(page)
    sign_in(page, seeded, Role.COMPLIANCE, PASSWORD, username=username)
    expect(page).to_have_url(re.compile(r"/console/login/factor$"))
    axe(page)
    page.get_by_role("button", name="Use a security key").click()
    expect(page.get_by_text("New Compliance (compliance)")).to_be_visible()
    assert "/console/login" not in page.url
    after = key["cdp"].send("WebAuthn.getCredentials", {"authenticatorId": key["id"]})
    assert after["credentials"][0]["signCount"] > credentials["credentials"][0]["signCount"]


def test_a_factor_reset_by_an_admin_is_enrolled_again_at_sign_in(open_page, live, seeded):
    username = new_user(live, seeded, Role.PRESCRIBER)
    app = _enrolled_through_the_api(live, seeded, username)
    admin, theirs = open_page(), open_page()
    sign_in(admin, seeded, Role.ADMIN)
    admin.get_by_role("link", name="Users", exact=True).click()
    admin.get_by_role("row", name=re.compile(username)).get_by_role("link").click()
    expect(admin.locator("dl.facts")).to_contain_text("Authenticator app")
    axe(admin)
    admin.get_by_role("button", name="Reset second factor").click()
    expect(admin.get_by_role("status")).to_contain_text(
        f"Reset the second factor of New Prescriber ({username})")
    expect(admin.locator("dl.facts")).to_contain_text("they enrol one at their next sign-in")

    sign_in(theirs, seeded, Role.PRESCRIBER, PASSWORD, username=username)
    expect(theirs.get_by_role("heading", level=1)).to_have_text("Set up a second factor")
    axe(theirs)
    fresh = authenticator(theirs)
    assert fresh.secret != app.secret
    theirs.get_by_label("Code from the app").fill(fresh.at(live.clock.now()))
    theirs.get_by_role("button", name="Confirm and sign in").click()
    recovery_codes(theirs)
    theirs.get_by_role("link", name="I have kept them: continue").click()
    expect(theirs.get_by_text("New Prescriber (prescriber)")).to_be_visible()


def _enrolled_through_the_api(live: LiveServer, seeded: Seeded, username: str) -> pyotp.TOTP:
    client = live.app.test_client()
    login = client.post("/api/v1/auth/login", json={"org": seeded.org, "username": username,
                                                     "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    begun = client.post("/api/v1/me/factors/totp", headers=headers, json={})
    assert begun.status_code == 201, begun.json
    app = pyotp.parse_uri(begun.json["otpauth_uri"])
    confirmed = client.post(f"/api/v1/me/factors/{begun.json['factor']['id']}/confirm",
                            headers=headers, json={"code": app.at(live.clock.now())})
    assert confirmed.status_code == 200, confirmed.json
    return app
