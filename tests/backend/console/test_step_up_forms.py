"""The console's forms of sensitive actions: a factor older than the window is refused as the
API refuses it, with a link to confirm the factor and come back to the form's page."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.custody.models import CustodyEntry
from backend.flags.models import Flag
from backend.flags.service import raise_flag
from backend.safeguards_api.models import SafeguardRuleMode
from safeguards.findings import Severity, Subject, SubjectKind
from safeguards.rules.monitoring import INFUSION_SHORT
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import PASSWORD, Pharmacy, World

WHEN = "2026-11-02T13:30"
REFUSED = "This needs your second factor, confirmed within the last 15 minutes."
STEP_UP_LINK = re.compile(r'<a href="([^"]+)">Confirm your second factor</a>')


def step_up_next(page) -> str:
    """Return the page the refusal's step-up link comes back to."""
    link = urlsplit(html.unescape(STEP_UP_LINK.search(page.get_data(as_text=True)).group(1)))
    assert link.path == "/console/step-up"
    [onward] = parse_qs(link.query)["next"]
    return onward


def aged(world: World, desk: Desk) -> None:
    """Let the sign-in's factor age past the window, the session kept alive by a page read."""
    world.rt.clock.advance(minutes=10)
    desk.get("/console/")
    world.rt.clock.advance(minutes=6)


def state(world: World) -> tuple:
    """Return the ledger, the rule modes and the flags' reviews."""
    session = world.session
    session.expire_all()
    return (sorted(map(str, session.scalars(select(CustodyEntry.id)))),
            sorted(session.execute(select(SafeguardRuleMode.rule_id, SafeguardRuleMode.mode))),
            sorted((str(flag.id), flag.status) for flag in session.scalars(select(Flag))))


@dataclass(frozen=True)
class Form:
    """A sensitive form: who sends it, from which page, and how."""

    name: str
    role: Role
    # Sets the form up and returns (its page, the post that sends it).
    prepare: Callable[[Pharmacy, Desk], tuple[str, Callable[[dict], object]]]


def rule_mode(pharmacy: Pharmacy, desk: Desk):
    page = f"/console/rules/{INFUSION_SHORT.id}"
    return page, lambda headers: desk.post(page, {"mode": "disabled"}, headers=headers)


def critical_verdict(pharmacy: Pharmacy, desk: Desk):
    world = pharmacy.world
    finding = INFUSION_SHORT.finding(Subject(SubjectKind.ORGANISATION, str(pharmacy.org.id)),
                                     "A short infusion.", {"minutes": 12}, key=("console",),
                                     severity=Severity.CRITICAL)
    flag = raise_flag(world.session, world.rt.clock.now(), pharmacy.org.id, finding)
    world.commit()
    officer = pharmacy.users[Role.COMPLIANCE]
    assert pharmacy.client.post(f"/api/v1/flags/{flag.id}/assign",
                                headers=pharmacy.as_(Role.COMPLIANCE),
                                json={"assignee_id": str(officer.id)}).status_code == 200
    page = f"/console/flags/{flag.id}"
    return page, lambda headers: desk.post(f"{page}/resolve", {
        "resolution": "false_positive", "note": "Nothing happened."}, headers=headers)


def received(pharmacy: Pharmacy) -> None:
    assert pharmacy.receive(1_000_000).status_code == 201


def destruction(pharmacy: Pharmacy, desk: Desk):
    received(pharmacy)
    witnesses = {f"witnesses.{n}.{name}": value for n, role in enumerate((Role.ADMIN,
                                                                            Role.COMPLIANCE))
                 for name, value in (("user_id", str(pharmacy.users[role].id)),
                                     ("password", PASSWORD))}
    return "/console/movements?kind=destroy", lambda headers: desk.post("/console/movements", {
        "kind": "destroy", "product_id": pharmacy.product_id, "lot": "L1",
        "expiry": "2028-01-31", "quantity_mg": "500", "occurred_at": WHEN,
        "details.method": "reverse distributor, Form 41", **witnesses}, headers=headers)


def count_reason(pharmacy: Pharmacy, desk: Desk):
    received(pharmacy)
    counted = pharmacy.client.post("/api/v1/custody/counts", headers=pharmacy.as_(Role.PHARMACIST),
                                   json={"holder": "vault", "counted_at": WHEN + ":00+00:00",
                                         "counts": [{"product_id": pharmacy.product_id,
                                                     "lot": "L1", "quantity_ug": 990_000}]})
    assert counted.status_code == 201, counted.json
    page = f"/console/counts/{counted.json['id']}"
    return page, lambda headers: desk.post(f"{page}/reasons", {
        "product_id": pharmacy.product_id, "lot": "L1", "reason": "vial cracked"},
        headers=headers)


FORMS = [Form("rule mode", Role.COMPLIANCE, rule_mode),
         Form("critical verdict", Role.COMPLIANCE, critical_verdict),
         Form("destruction", Role.PHARMACIST, destruction),
         Form("count reason", Role.PHARMACIST, count_reason)]


@pytest.mark.parametrize("form", FORMS, ids=[form.name for form in FORMS])
def test_a_stale_factor_is_refused_with_a_link_back_to_the_form(world, form):
    pharmacy = Pharmacy(world)
    desk = signed_in(world, pharmacy.org, pharmacy.users[form.role])
    page, send = form.prepare(pharmacy, desk)
    aged(world, desk)
    desk.get(page)
    before = state(world)
    # A browser names the form's page as the referrer: the link comes back to it.
    refused = send({"Referer": f"http://localhost{page}"})
    assert refused.status_code == 403
    assert REFUSED in html.unescape(refused.get_data(as_text=True))
    assert step_up_next(refused) == page
    assert state(world) == before
    # Confirming the factor comes back to the form's page, which then sends.
    user = pharmacy.users[form.role]
    desk.get(f"/console/step-up?next={page}")
    proved = desk.post("/console/step-up", {"code": desk.code(user), "next": page})
    assert (proved.status_code, proved.headers["Location"]) == (303, page)
    desk.get(page)
    done = send({"Referer": f"http://localhost{page}"})
    assert done.status_code == 303, html.unescape(done.get_data(as_text=True))
    assert state(world) != before


def test_without_a_referrer_the_link_names_the_page_the_form_posted_to(world):
    pharmacy = Pharmacy(world)
    desk = signed_in(world, pharmacy.org, pharmacy.users[Role.COMPLIANCE])
    page, send = rule_mode(pharmacy, desk)
    aged(world, desk)
    desk.get(page)
    assert step_up_next(send({})) == page


def test_a_referrer_elsewhere_is_not_followed(world):
    pharmacy = Pharmacy(world)
    desk = signed_in(world, pharmacy.org, pharmacy.users[Role.COMPLIANCE])
    page, send = rule_mode(pharmacy, desk)
    aged(world, desk)
    desk.get(page)
    for elsewhere in ("https://evil.example/console/rules", "http://localhost/api/v1/me"):
        assert step_up_next(send({"Referer": elsewhere})) == page


def test_a_fresh_sign_in_sends_the_form(world):
    pharmacy = Pharmacy(world)
    desk = signed_in(world, pharmacy.org, pharmacy.users[Role.PHARMACIST])
    page, send = destruction(pharmacy, desk)
    desk.get(page)
    assert send({}).status_code == 303
    assert {entry.kind for entry in world.session.scalars(select(CustodyEntry))} == {
        "receive", "destroy"}



def test_a_user_with_no_factor_is_sent_to_add_one(world: World):
    pharmacy = Pharmacy(world)
    # Within the grace a newcomer signs in with a password, but cannot act without a factor.
    newcomer = world.user(pharmacy.org, Role.COMPLIANCE, factor=False)
    desk = signed_in(world, pharmacy.org, newcomer)
    before = state(world)
    page = f"/console/rules/{INFUSION_SHORT.id}"
    desk.get(page)
    refused = desk.post(page, {"mode": "disabled"})
    assert refused.status_code == 403
    text = html.unescape(refused.get_data(as_text=True))
    assert "you have none yet: add one under My account" in text
    assert 'href="/console/account/factors"' in text
    assert state(world) == before
