"""The compliance pages: rules and their modes, the audit trail, the ledger's integrity."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from backend.accounts.models import Organisation, Role, User
from backend.audit.models import AuditEvent
from backend.console import oversight
from backend.console.models import ConsoleSession
from backend.custody import checkpoints
from backend.custody.models import CustodyBalance, CustodyCheckpoint
from backend.jobs import service as jobs
from backend.jobs.models import JobRun
from backend.safeguards_api.models import SafeguardRuleMode
from backend.safeguards_api.service import registry
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import Pharmacy, World

A, PH, C, PR, N = Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER, Role.NURSE
RULE = next(iter(registry())).meta


class Office:
    """An organisation with one user of each role, and browsers signed in as them."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.org: Organisation = world.org()
        self.users: dict[Role, User] = {role: world.user(self.org, role) for role in Role}

    def desk(self, role: Role) -> Desk:
        """Return a browser signed in as the user with `role`."""
        return signed_in(self.world, self.org, self.users[role])

    def api(self, role: Role) -> dict:
        """Return API headers of the user with `role`."""
        return self.world.headers(self.org, self.users[role])


@pytest.fixture
def office(world: World) -> Office:
    """Return an organisation with everyone in it."""
    return Office(world)


def text(response) -> str:
    """Return a response's body as text."""
    return response.get_data(as_text=True)


def count(world: World, model, *where) -> int:
    """Count rows of `model` matching `where`."""
    return world.session.scalar(select(func.count()).select_from(model).where(*where))


# Roles ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "allowed"), [
    ("/console/rules", {A, C}),
    (f"/console/rules/{RULE.id}", {A, C}),
    ("/console/audit", {A, C}),
    ("/console/ledger", {A, PH, C}),
])
def test_each_page_opens_for_the_roles_the_api_allows(office: Office, path: str, allowed):
    for role in (A, PH, C, PR):
        response = office.desk(role).get(path)
        assert response.status_code == (200 if role in allowed else 403), (role, path)
        if role in allowed:
            assert text(response).count("<h1") == 1


def test_the_menu_lists_the_review_pages_by_role(office: Office):
    compliance = text(office.desk(C).get("/console/ledger"))
    assert all(f">{label}</a>" in compliance for label in ("Rules", "Audit trail", "Ledger"))
    pharmacist = text(office.desk(PH).get("/console/ledger"))
    assert ">Ledger</a>" in pharmacist
    assert ">Rules</a>" not in pharmacist and ">Audit trail</a>" not in pharmacist


def test_a_nurse_cannot_sign_in(office: Office, desk: Desk):
    response = desk.sign_in(office.org, office.users[N])
    assert response.status_code == 403
    assert text(desk.get("/console/ledger", follow_redirects=False)).count("/console/login")


# Rules ------------------------------------------------------------------------------------

def test_the_rules_page_shows_what_the_api_shows(office: Office):
    listed = office.world.client.get("/api/v1/safeguards/rules", headers=office.api(C)).json
    page = text(office.desk(C).get("/console/rules"))
    assert f"{len(listed)} rules" in page
    for rule in listed:
        assert rule["title"].replace("'", "&#39;") in page or rule["title"] in page
        assert rule["id"] in page


def test_a_reviewer_changes_a_rules_mode(office: Office):
    browser = office.desk(C)
    browser.get(f"/console/rules/{RULE.id}")
    answer = browser.post(f"/console/rules/{RULE.id}", {"mode": "shadow"})
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/console/rules/{RULE.id}")
    shown = text(browser.get(f"/console/rules/{RULE.id}"))
    assert "now runs shadow" in shown
    listed = office.world.client.get("/api/v1/safeguards/rules", headers=office.api(A)).json
    assert next(r for r in listed if r["id"] == RULE.id)["mode"] == "shadow"
    assert count(office.world, AuditEvent, AuditEvent.action == "safeguards.rule_mode",
                 AuditEvent.object_id == RULE.id,
                 AuditEvent.user_id == office.users[C].id) == 1


def test_the_rules_own_mode_takes_the_override_away(office: Office):
    browser = office.desk(A)
    browser.get(f"/console/rules/{RULE.id}")
    assert browser.post(f"/console/rules/{RULE.id}", {"mode": "disabled"}).status_code == 303
    assert browser.post(f"/console/rules/{RULE.id}", {"mode": "default"}).status_code == 303
    assert count(office.world, SafeguardRuleMode,
                 SafeguardRuleMode.organisation_id == office.org.id) == 0


@pytest.mark.parametrize("form", [{"mode": "sometimes"}, {}])
def test_a_mode_the_api_refuses_shows_beside_the_field(office: Office, form):
    browser = office.desk(C)
    browser.get(f"/console/rules/{RULE.id}")
    answer = browser.post(f"/console/rules/{RULE.id}", form)
    assert answer.status_code == 422
    assert 'id="mode-error"' in text(answer)
    assert 'aria-invalid="true"' in text(answer)
    assert count(office.world, SafeguardRuleMode,
                 SafeguardRuleMode.organisation_id == office.org.id) == 0


def test_an_unknown_rule_is_not_found(office: Office):
    browser = office.desk(C)
    assert browser.get("/console/rules/no-such-rule").status_code == 404
    assert browser.post("/console/rules/no-such-rule", {"mode": "shadow"}).status_code == 404


def test_a_mode_change_without_the_csrf_token_is_refused(office: Office):
    browser = office.desk(C)
    browser.get(f"/console/rules/{RULE.id}")
    answer = browser.post(f"/console/rules/{RULE.id}", {"mode": "shadow"}, token=False)
    assert answer.status_code == 400
    assert count(office.world, SafeguardRuleMode,
                 SafeguardRuleMode.organisation_id == office.org.id) == 0


# Audit trail ------------------------------------------------------------------------------

def test_the_audit_trail_names_users_and_filters_as_the_api(office: Office):
    office.world.client.get("/api/v1/safeguards/rules", headers=office.api(C))
    office.world.client.put("/api/v1/policy/evv_radius_m", headers=office.api(A),
                            json={"value": "300"})
    admin = office.users[A]
    browser = office.desk(C)
    page = text(browser.get(f"/console/audit?user_id={admin.id}&action=policy.set"))
    assert "<code>policy.set</code>" in page
    assert "evv_radius_m" in page
    assert admin.display_name in page
    api = office.world.client.get(f"/api/v1/audit-events?user_id={admin.id}&action=policy.set",
                                  headers=office.api(C)).json
    assert len(api) == 1 and page.count("<code>policy.set</code>") == 1
    assert "No events match" in text(browser.get("/console/audit?action=nothing.like.this"))


def test_the_audit_trail_is_paged(office: Office):
    browser = office.desk(A)
    first = text(browser.get("/console/audit?limit=2"))
    assert "Next page" in first and "Previous page" not in first
    second = text(browser.get("/console/audit?limit=2&offset=2"))
    assert "Previous page" in second
    assert "offset=0" in second


def test_the_audit_trail_takes_times_in_utc(office: Office):
    browser = office.desk(A)
    later = text(browser.get("/console/audit?since=2100-01-01T00:00"))
    assert "No events match" in later
    earlier = text(browser.get("/console/audit?until=2100-01-01T00:00"))
    assert "user.create" in earlier


def test_a_bad_filter_shows_beside_its_field(office: Office):
    answer = office.desk(C).get("/console/audit?since=yesterday&user_id=nobody")
    assert answer.status_code == 422
    assert 'id="since-error"' in text(answer) and 'id="user_id-error"' in text(answer)


def test_the_audit_trail_keeps_to_the_organisation(office: Office, world: World):
    other = world.org()
    stranger = world.user(other, A, username="stranger-admin")
    page = text(office.desk(C).get(f"/console/audit?user_id={stranger.id}"))
    assert "No events match" in page


# Ledger -----------------------------------------------------------------------------------

@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    """Return a pharmacy with two entries in its chain and a signed checkpoint."""
    pharmacy = Pharmacy(world)
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000).status_code == 201
    checkpoints.sign_head(world.session, world.rt, pharmacy.org.id, world.rt.checkpoint_dir)
    world.commit()
    return pharmacy


@pytest.fixture
def at_once(app):
    """Run the console's background work at once, in the request that asked for it."""
    app.extensions[oversight.BACKGROUND] = lambda work: work()
    return app


def ledger_desk(pharmacy: Pharmacy, role: Role = C) -> Desk:
    """Return a browser signed in to the pharmacy as `role`."""
    return signed_in(pharmacy.world, pharmacy.org, pharmacy.users[role])


def runs(world: World, org: Organisation) -> list[JobRun]:
    """Return the organisation's ledger verifies, newest first."""
    world.session.expire_all()
    return [run for run in world.session.scalars(select(JobRun).where(
        JobRun.job == jobs.LEDGER_VERIFY).order_by(JobRun.started_at.desc()))
        if run.outcome["organisation_id"] == str(org.id)]


def test_the_ledger_page_shows_the_head_and_the_last_checkpoint(pharmacy: Pharmacy):
    page = text(ledger_desk(pharmacy, PH).get("/console/ledger"))
    signed = pharmacy.world.session.scalar(select(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == pharmacy.org.id))
    assert f"<dd>{signed.seq}</dd>" in page
    assert signed.head_hash in page
    assert "yes, in the append-only file" in page
    assert "has not been verified from the console yet" in page
    assert "Verify now</button>" in page


def test_verify_now_records_the_run_and_shows_its_result(pharmacy: Pharmacy, at_once):
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    answer = browser.post("/console/ledger/verify")
    assert answer.status_code == 303
    [run] = runs(pharmacy.world, pharmacy.org)
    assert run.finished_at is not None
    assert run.outcome["status"] == jobs.DONE and run.outcome["ok"] is True
    assert run.outcome["entries"] == 2 and run.outcome["requested_by"] == str(
        pharmacy.users[C].id)
    page = text(browser.get("/console/ledger"))
    assert "<strong>OK</strong>" in page and "2 entries, 1 checkpoint" in page
    assert pharmacy.users[C].display_name in page
    assert "hx-trigger" not in page
    assert count(pharmacy.world, AuditEvent, AuditEvent.action == "ledger.verify_requested",
                 AuditEvent.object_id == str(run.id)) == 1
    assert count(pharmacy.world, AuditEvent, AuditEvent.action == "ledger.verify",
                 AuditEvent.organisation_id == pharmacy.org.id) == 1


def test_a_tampered_ledger_fails_its_verify(pharmacy: Pharmacy, at_once):
    pharmacy.world.session.execute(update(CustodyBalance).where(
        CustodyBalance.organisation_id == pharmacy.org.id, CustodyBalance.holder == "vault")
        .values(quantity_ug=CustodyBalance.quantity_ug + 1))
    pharmacy.world.commit()
    browser = ledger_desk(pharmacy, A)
    browser.get("/console/ledger")
    assert browser.post("/console/ledger/verify").status_code == 303
    [run] = runs(pharmacy.world, pharmacy.org)
    assert run.outcome["ok"] is False and run.outcome["problem"]["seq"] is None
    page = text(browser.get("/console/ledger"))
    assert "<strong>FAILED</strong> at the balances" in page
    assert "the ledger says" in page


def test_a_verify_that_crashes_is_kept_as_failed(pharmacy: Pharmacy, at_once, monkeypatch):
    def broken(*_args):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(jobs, "verify", broken)
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    assert browser.post("/console/ledger/verify").status_code == 303
    [run] = runs(pharmacy.world, pharmacy.org)
    assert run.outcome["status"] == jobs.FAILED and run.outcome["error"] == "RuntimeError"
    assert "could not run to its end (RuntimeError)" in text(browser.get("/console/ledger"))


def test_the_page_polls_a_running_verify_until_it_is_done(pharmacy: Pharmacy, app, clock):
    started = []
    app.extensions[oversight.BACKGROUND] = started.append
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    assert browser.post("/console/ledger/verify").status_code == 303
    [run] = runs(pharmacy.world, pharmacy.org)
    assert run.finished_at is None and run.outcome["status"] == jobs.REQUESTED
    page = text(browser.get("/console/ledger"))
    poll = f"/console/ledger/verify/{run.id}"
    assert f'hx-get="{poll}" hx-trigger="every 2s"' in page
    assert ">Refresh</a>" in page
    # A second request while it runs is refused, and starts nothing.
    again = browser.post("/console/ledger/verify")
    assert again.status_code == 409 and "already running" in text(again)
    assert len(started) == 1

    htmx = {"HX-Request": "true"}
    seen = pharmacy.world.session.scalar(select(ConsoleSession.last_seen_at).order_by(
        ConsoleSession.last_seen_at.desc()).limit(1))
    clock.advance(minutes=5)
    waiting = browser.get(poll, headers=htmx)
    assert waiting.status_code == 200 and 'hx-trigger="every 2s"' in text(waiting)
    assert "<h1" not in text(waiting)
    pharmacy.world.session.expire_all()
    assert pharmacy.world.session.scalar(select(func.max(ConsoleSession.last_seen_at))) == seen

    started[0]()
    done = browser.get(poll, headers=htmx)
    assert "hx-trigger" not in text(done) and "<strong>OK</strong>" in text(done)
    assert browser.get(poll).status_code == 302


def test_a_lost_verify_does_not_block_a_new_one(pharmacy: Pharmacy, app, clock):
    started = []
    app.extensions[oversight.BACKGROUND] = started.append
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    assert browser.post("/console/ledger/verify").status_code == 303
    clock.advance(seconds=jobs.VERIFY_LOST_AFTER.total_seconds() + 1)
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    assert browser.post("/console/ledger/verify").status_code == 303
    assert len(runs(pharmacy.world, pharmacy.org)) == 2


def test_another_organisations_verify_is_not_found(pharmacy: Pharmacy, at_once, world: World):
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    browser.post("/console/ledger/verify")
    [run] = runs(world, pharmacy.org)
    other = Office(world)
    outsider = other.desk(C)
    assert outsider.get(f"/console/ledger/verify/{run.id}",
                        headers={"HX-Request": "true"}).status_code == 404
    assert outsider.get("/console/ledger/verify/not-an-id",
                        headers={"HX-Request": "true"}).status_code == 404
    assert "has not been verified" in text(outsider.get("/console/ledger"))


def test_verify_now_without_the_csrf_token_is_refused(pharmacy: Pharmacy, at_once):
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    assert browser.post("/console/ledger/verify", token=False).status_code == 400
    assert runs(pharmacy.world, pharmacy.org) == []


def test_a_prescriber_cannot_ask_for_a_verify(pharmacy: Pharmacy, at_once):
    browser = ledger_desk(pharmacy, PR)
    assert browser.get("/console/ledger").status_code == 403
    assert browser.post("/console/ledger/verify").status_code == 403
    assert runs(pharmacy.world, pharmacy.org) == []


def test_the_web_process_runs_background_work_in_a_thread():
    ran = threading.Event()
    where: list[str] = []

    def work():
        where.append(threading.current_thread().name)
        ran.set()

    oversight.in_thread(work)
    assert ran.wait(timedelta(seconds=5).total_seconds())
    assert where == ["vigil-console-background"]


def test_a_verify_run_is_not_run_twice(pharmacy: Pharmacy, at_once):
    browser = ledger_desk(pharmacy)
    browser.get("/console/ledger")
    browser.post("/console/ledger/verify")
    [run] = runs(pharmacy.world, pharmacy.org)
    finished = run.finished_at
    assert jobs.run_ledger_verify(pharmacy.world.session, pharmacy.world.rt,
                                  run.id).finished_at == finished
    assert jobs.run_ledger_verify(pharmacy.world.session, pharmacy.world.rt,
                                  uuid.uuid4()) is None
