"""Signing in to the console in a real browser: the labelled form (and its second step), its
refusals, idle sign-out, forms that carry no CSRF token, and a page that needs nothing from
outside the server."""

from __future__ import annotations

import re

from backend.accounts.models import Role
from tests.browser.conftest import axe, expect, second_step, sign_in

IDLE = "You were signed out after 15 minutes without activity."
WRONG = "Wrong organisation, username or password."
FORGED = "This form was not sent from a page of this console"


def test_a_compliance_officer_signs_in_and_lands_on_her_first_page(page, seeded):
    sign_in(page, seeded, Role.COMPLIANCE)
    assert "/console/login" not in page.url
    expect(page.locator("h1")).to_have_count(1)
    expect(page.get_by_text("Demo Compliance (compliance)")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_the_sign_in_page_passes_axe_and_asks_nothing_of_another_host(page, watch):
    answer = page.goto("/console/login")
    assert answer.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    axe(page)
    # Its stylesheet and htmx came from the server itself (the fixture refuses any other host).
    assert any(url.endswith("/console.css") for url in watch.requests), watch.requests
    assert any(url.endswith("/htmx.min.js") for url in watch.requests), watch.requests


def test_a_wrong_password_is_refused_beside_the_form(page, seeded, watch):
    watch.expect_error_status(401)
    sign_in(page, seeded, Role.PHARMACIST, "not the password")
    assert page.url.endswith("/console/login")
    expect(page.get_by_role("alert")).to_contain_text(WRONG)
    # What was typed stays, except the password.
    expect(page.get_by_label("Organisation")).to_have_value(seeded.org)
    expect(page.get_by_label("Username")).to_have_value(seeded.usernames[Role.PHARMACIST])
    expect(page.get_by_label("Password")).to_have_value("")
    axe(page)


def test_a_nurse_is_refused_the_console(page, seeded, watch):
    watch.expect_error_status(403)
    sign_in(page, seeded, Role.NURSE)
    assert page.url.endswith("/console/login")
    expect(page.get_by_role("alert")).to_contain_text("Nurses sign in on the phone app")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_after_15_idle_minutes_the_next_page_is_the_sign_in_page_saying_why(page, seeded, live):
    sign_in(page, seeded, Role.COMPLIANCE)
    here = page.url
    live.clock.advance(minutes=15)
    page.goto(here)
    expect(page).to_have_url(re.compile(r"/console/login\?.*ended=idle"))
    expect(page.get_by_role("status")).to_have_text(IDLE)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    # Signing in again goes back where the user was.
    page.get_by_label("Organisation").fill(seeded.org)
    page.get_by_label("Username").fill(seeded.usernames[Role.COMPLIANCE])
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()
    second_step(page, seeded, Role.COMPLIANCE)
    expect(page).to_have_url(here)


def test_a_sign_in_posted_without_the_csrf_token_is_refused(page, seeded):
    page.goto("/console/login")
    answer = page.request.post("/console/login", form={
        "org": seeded.org, "username": seeded.usernames[Role.COMPLIANCE],
        "password": "correct horse battery staple"})
    assert answer.status == 400
    assert FORGED in answer.text()
    page.goto("/console/")
    assert page.url.split("?")[0].endswith("/console/login")


def test_a_signed_in_post_without_the_csrf_token_is_refused_and_changes_nothing(page, seeded):
    sign_in(page, seeded, Role.COMPLIANCE)
    here = page.url
    refused = page.request.post("/console/logout")
    assert refused.status == 400
    assert FORGED in refused.text()
    # Still signed in: the forged sign-out did nothing; the page's own button works.
    page.goto(here)
    assert page.url == here
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))
