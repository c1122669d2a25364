"""Step-up: each sensitive action but a plan's (tests/backend/plans) needs a second factor proved
within the organisation's window; a nurse's phone is never refused for it. And the organisation's
second-factor policy, which sets that window."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from backend.accounts.models import Organisation, Role, User
from backend.audit.models import AuditEvent
from backend.custody.models import CustodyBalance, CustodyEntry, InventoryRecord, LossReport
from backend.devices.models import Device
from backend.flags.models import Flag, FlagEvent
from backend.flags.service import raise_flag
from backend.mfa.policy import Action
from backend.safeguards_api.models import SafeguardRuleMode
from safeguards.findings import Severity, Subject, SubjectKind
from safeguards.rules.monitoring import INFUSION_SHORT
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, Phone, World, signed_payload

POLICY = "/api/v1/organisation/security-policy"
# Just past the default window (15 minutes) after the sign-in that proved the factor.
STALE = timedelta(minutes=16)
Send = Callable[[dict], TestResponse]


def bearer(access_token: str) -> dict:
    """Return the Authorization header of an access token."""
    return {"Authorization": f"Bearer {access_token}"}


def stale_headers(world: World, org: Organisation, user: User,
                  device_id: uuid.UUID | None = None) -> dict:
    """Sign in with the factor, let it age past the window, and return the refreshed session's
    headers: the session is live, its factor is not fresh."""
    tokens = world.login(org, user, device_id)
    world.rt.clock.advance(seconds=STALE.total_seconds())
    refreshed = world.client.post("/api/v1/auth/refresh",
                                  json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json
    return bearer(refreshed.json["access_token"])


def step_up(world: World, headers: dict, user: User) -> None:
    """Prove the user's factor again for the session of `headers`."""
    response = world.client.post("/api/v1/auth/step-up", headers=headers,
                                 json={"code": world.code(user)})
    assert response.status_code == 200, response.json


def snapshot(world: World, org: Organisation) -> dict:
    """Return all a sensitive action could change: the ledger and its balances, losses, rule
    modes, flags' reviews, devices and the policy."""
    session = world.session
    session.expire_all()

    def rows(*columns, where) -> list:
        return sorted(tuple(map(str, row)) for row in session.execute(
            select(*columns).where(where)))

    return {
        "ledger": rows(CustodyEntry.id, where=CustodyEntry.organisation_id == org.id),
        "balances": rows(CustodyBalance.holder, CustodyBalance.lot, CustodyBalance.quantity_ug,
                         where=CustodyBalance.organisation_id == org.id),
        "losses": rows(LossReport.id, where=LossReport.organisation_id == org.id),
        "inventories": rows(InventoryRecord.id, where=InventoryRecord.organisation_id == org.id),
        "modes": rows(SafeguardRuleMode.rule_id, SafeguardRuleMode.mode,
                      where=SafeguardRuleMode.organisation_id == org.id),
        "flags": rows(Flag.id, Flag.status, Flag.resolution,
                      where=Flag.organisation_id == org.id),
        "flag_events": session.scalar(select(func.count()).select_from(FlagEvent).join(Flag)
                                      .where(Flag.organisation_id == org.id)),
        "devices": rows(Device.id, where=Device.organisation_id == org.id),
        "policy": rows(Organisation.mfa_nurses, Organisation.mfa_grace_days,
                       Organisation.step_up_seconds, Organisation.mfa_policy_at,
                       where=Organisation.id == org.id),
        "registrant": rows(Organisation.name, Organisation.dea_registration,
                           Organisation.address_line, where=Organisation.id == org.id),
    }


def entry(pharmacy: Pharmacy, body: dict) -> Send:
    """Return a sender of one custody entry (the same id each time)."""
    body = {"id": str(uuid.uuid4()), "occurred_at": "2026-11-02T14:00:00+00:00",
            "product_id": pharmacy.product_id, "lot": "L1", "expiry": "2028-01-31", **body}
    return lambda headers: pharmacy.client.post("/api/v1/custody/entries", headers=headers,
                                                json=body)


def witness(pharmacy: Pharmacy, role: Role) -> dict:
    """Return a witness's confirmation by password."""
    return {"user_id": str(pharmacy.users[role].id), "password": PASSWORD}


def stocked(pharmacy: Pharmacy) -> None:
    """Receive stock into the vault and give the nurse a kit."""
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000).status_code == 201


def destroying(pharmacy: Pharmacy) -> Send:
    stocked(pharmacy)
    return entry(pharmacy, {
        "kind": "destroy", "quantity_ug": 50_000,
        "details": {"method": "reverse distributor, DEA Form 41"},
        "witnesses": [witness(pharmacy, Role.ADMIN), witness(pharmacy, Role.COMPLIANCE)]})


def adjusting(pharmacy: Pharmacy) -> Send:
    stocked(pharmacy)
    return entry(pharmacy, {"kind": "adjust", "quantity_ug": 1_000, "holder": "vault",
                            "details": {"reason": "vial overfill", "direction": "up"}})


def counting(pharmacy: Pharmacy, reasons: dict | None = None) -> Send:
    stocked(pharmacy)
    body = {"id": str(uuid.uuid4()), "holder": "vault",
            "counted_at": "2026-11-02T14:00:00+00:00", "reasons": reasons or {},
            "counts": [{"product_id": pharmacy.product_id, "lot": "L1", "quantity_ug": 899_000}]}
    return lambda headers: pharmacy.client.post("/api/v1/custody/counts", headers=headers,
                                                json=body)


def losing(pharmacy: Pharmacy) -> Send:
    stocked(pharmacy)
    return entry(pharmacy, {"kind": "loss", "quantity_ug": 5_000, "holder": "vault",
                            "details": {"circumstances": "vial broken in the vault"}})


def inventorying(pharmacy: Pharmacy) -> Send:
    stocked(pharmacy)
    return lambda headers: pharmacy.client.post("/api/v1/custody/inventories", headers=headers,
                                                json={"kind": "biennial", "at": "close"})


def rule_mode(pharmacy: Pharmacy) -> Send:
    return lambda headers: pharmacy.client.patch(
        f"/api/v1/safeguards/rules/{INFUSION_SHORT.id}", headers=headers,
        json={"mode": "shadow"})


def flag_in_review(pharmacy: Pharmacy, severity: Severity) -> str:
    """Raise a flag of `severity` and assign it to the compliance officer."""
    world = pharmacy.world
    finding = INFUSION_SHORT.finding(Subject(SubjectKind.ORGANISATION, str(pharmacy.org.id)),
                                     "A short infusion.", {"minutes": 12}, key=(severity,),
                                     severity=severity)
    flag = raise_flag(world.session, world.rt.clock.now(), pharmacy.org.id, finding)
    world.commit()
    officer = pharmacy.users[Role.COMPLIANCE]
    assigned = pharmacy.client.post(f"/api/v1/flags/{flag.id}/assign",
                                    headers=pharmacy.as_(Role.COMPLIANCE),
                                    json={"assignee_id": str(officer.id)})
    assert assigned.status_code == 200, assigned.json
    return str(flag.id)


def verdict(resolution: str, severity: Severity = Severity.CRITICAL) -> Callable[[Pharmacy], Send]:
    def prepare(pharmacy: Pharmacy) -> Send:
        flag_id = flag_in_review(pharmacy, severity)
        return lambda headers: pharmacy.client.post(
            f"/api/v1/flags/{flag_id}/resolve", headers=headers,
            json={"resolution": resolution, "note": "Looked into it."})
    return prepare


def nurses_covered(pharmacy: Pharmacy) -> None:
    """Turn on the organisation's second factor for nurses and enrol the clinic's nurse."""
    world = pharmacy.world
    world.session.get(Organisation, pharmacy.org.id).mfa_nurses = True
    world.enrol(pharmacy.nurse)
    world.commit()


def registering(pharmacy: Pharmacy) -> Send:
    nurses_covered(pharmacy)
    key = Phone.new().public_key_b64()
    return lambda headers: pharmacy.client.post("/api/v1/devices", headers=headers,
                                                json={"public_key": key, "label": "new phone"})


def policy_change(pharmacy: Pharmacy) -> Send:
    return lambda headers: pharmacy.client.put(POLICY, headers=headers, json={
        "second_factor_for_nurses": True, "enrolment_grace_days": 3, "step_up_minutes": 10})


def registrant_change(pharmacy: Pharmacy) -> Send:
    return lambda headers: pharmacy.client.patch("/api/v1/organisation", headers=headers, json={
        "address_line": "1 Registered Way", "city": "Springfield", "state": "IL"})


@dataclass(frozen=True)
class Case:
    """A sensitive action: who takes it, how to set it up, and the answer when it is taken."""

    name: str
    action: Action
    role: Role
    prepare: Callable[[Pharmacy], Send]
    status: int


CASES = [
    Case("destroy", Action.DESTROY, Role.PHARMACIST, destroying, 201),
    Case("adjust", Action.ADJUST, Role.PHARMACIST, adjusting, 201),
    Case("count with a reason", Action.ADJUST, Role.PHARMACIST,
         lambda pharmacy: counting(pharmacy, {"L1": "spilled while counting"}), 201),
    Case("loss report", Action.REPORT_LOSS, Role.PHARMACIST, losing, 201),
    Case("signed inventory", Action.INVENTORY_SIGN, Role.PHARMACIST, inventorying, 201),
    Case("rule mode", Action.RULE_MODE, Role.COMPLIANCE, rule_mode, 200),
    Case("critical flag justified", Action.CRITICAL_VERDICT, Role.COMPLIANCE,
         verdict("justified"), 200),
    Case("critical flag false positive", Action.CRITICAL_VERDICT, Role.COMPLIANCE,
         verdict("false_positive"), 200),
    Case("nurse registers a phone", Action.REGISTER_DEVICE, Role.NURSE, registering, 201),
    Case("security policy", Action.SECURITY_POLICY, Role.ADMIN, policy_change, 200),
    Case("registrant details", Action.REGISTRANT, Role.ADMIN, registrant_change, 200),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_sensitive_action_with_a_stale_factor_is_refused_until_a_step_up(world, case):
    pharmacy = Pharmacy(world)
    send = case.prepare(pharmacy)
    user = pharmacy.users[case.role]
    headers = stale_headers(world, pharmacy.org, user)
    before = snapshot(world, pharmacy.org)
    refused = send(headers)
    assert refused.status_code == 403, refused.json
    error = refused.json["error"]
    assert (error["code"], error["details"]["action"]) == ("mfa_required", case.action.value)
    assert error["details"]["enrolled"] is True
    assert error["details"]["window_seconds"] == 900
    assert error["details"]["step_up"] == "/api/v1/auth/step-up"
    assert snapshot(world, pharmacy.org) == before
    step_up(world, headers, user)
    done = send(headers)
    assert done.status_code == case.status, done.json
    assert snapshot(world, pharmacy.org) != before


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_fresh_sign_in_is_fresh_enough(world, case):
    pharmacy = Pharmacy(world)
    send = case.prepare(pharmacy)
    headers = pharmacy.world.headers(pharmacy.org, pharmacy.users[case.role])
    world.rt.clock.advance(minutes=14)
    done = send(headers)
    assert done.status_code == case.status, done.json


def test_a_session_without_a_factor_is_told_to_enrol(world):
    pharmacy = Pharmacy(world)
    send = destroying(pharmacy)
    # In the enrolment grace: signed in with a password alone.
    newcomer = world.user(pharmacy.org, Role.PHARMACIST, factor=False)
    before = snapshot(world, pharmacy.org)
    refused = send(world.headers(pharmacy.org, newcomer))
    assert refused.status_code == 403, refused.json
    details = refused.json["error"]["details"]
    assert (details["action"], details["enrolled"], details["factor_proved_at"]) == (
        "custody.destroy", False, None)
    assert "/api/v1/me/factors/totp" in refused.json["error"]["message"]
    assert snapshot(world, pharmacy.org) == before


def test_the_window_is_the_organisations(world):
    pharmacy = Pharmacy(world)
    send = adjusting(pharmacy)
    world.session.get(Organisation, pharmacy.org.id).step_up_seconds = 60
    world.commit()
    headers = world.headers(pharmacy.org, pharmacy.users[Role.PHARMACIST])
    world.rt.clock.advance(seconds=61)
    refused = send(headers)
    assert refused.status_code == 403, refused.json
    assert refused.json["error"]["details"]["window_seconds"] == 60


@pytest.mark.parametrize(("name", "prepare", "role", "status"), [
    ("receive", lambda pharmacy: entry(pharmacy, {
        "kind": "receive", "quantity_ug": 1_000, "details": SUPPLIER}), Role.PHARMACIST, 201),
    ("count without a reason", counting, Role.PHARMACIST, 201),
    ("critical flag confirmed misuse", verdict("confirmed_misuse"), Role.COMPLIANCE, 200),
    ("critical flag confirmed diversion", verdict("confirmed_diversion"), Role.COMPLIANCE, 200),
    ("high flag justified", verdict("justified", Severity.HIGH), Role.COMPLIANCE, 200),
    ("high flag false positive", verdict("false_positive", Severity.HIGH), Role.COMPLIANCE,
     200),
    ("nurse registers a phone, nurses not covered", lambda pharmacy: (
        lambda headers: pharmacy.client.post("/api/v1/devices", headers=headers, json={
            "public_key": Phone.new().public_key_b64(), "label": "new phone"})),
     Role.NURSE, 201),
])
def test_other_actions_need_no_fresh_factor(world, name, prepare, role, status):
    pharmacy = Pharmacy(world)
    send = prepare(pharmacy)
    done = send(stale_headers(world, pharmacy.org, pharmacy.users[role]))
    assert done.status_code == status, done.json


@pytest.mark.parametrize("nurses_need_a_factor", [False, True])
def test_a_nurses_phone_is_never_refused_for_want_of_a_fresh_factor(world,
                                                                    nurses_need_a_factor):
    pharmacy = Pharmacy(world)
    stocked(pharmacy)
    if nurses_need_a_factor:
        nurses_covered(pharmacy)
    headers = stale_headers(world, pharmacy.org, pharmacy.nurse, pharmacy.device_id)

    def signed(body: dict) -> dict:
        body = {"id": str(uuid.uuid4()), "product_id": pharmacy.product_id, "lot": "L1",
                "expiry": "2028-01-31", "occurred_at": "2026-11-02T14:30:00+00:00", **body}
        return {**body, "signature": pharmacy.phone.sign(signed_payload(pharmacy, body))}

    waste = signed({"kind": "waste", "quantity_ug": 2_000,
                    "witnesses": [witness(pharmacy, Role.PHARMACIST)]})
    loss = {"id": str(uuid.uuid4()), "kind": "loss", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", "occurred_at": "2026-11-02T14:40:00+00:00",
            "quantity_ug": 1_000, "details": {"circumstances": "vial dropped on a visit"}}
    for body in (waste, loss):
        posted = pharmacy.client.post("/api/v1/custody/entries", headers=headers, json=body)
        assert posted.status_code == 201, posted.json
    pushed = signed({"kind": "return", "quantity_ug": 50_000,
                     "details": {"seal_id": "S-1"}})
    row = {**pushed, "details": json.dumps(pushed["details"]), "from_holder": None,
           "to_holder": None, "visit_id": None, "corrects_id": None, "witnesses": "[]",
           "_status": "created", "_changed": ""}
    response = pharmacy.client.post("/api/v1/sync", headers=headers,
                                    query_string={"last_pulled_at": 0},
                                    json={"changes": {"custody_entries": {
                                        "created": [row], "updated": [], "deleted": []}}})
    assert response.status_code == 200, response.json
    assert (response.json["applied"], response.json["quarantined"]) == (
        {"custody_entries": 1}, [])


# The organisation's security policy --------------------------------------------------------

def test_the_policy_is_read_by_admins_and_compliance_and_set_by_admins(world):
    pharmacy = Pharmacy(world)
    for role in Role:
        read = pharmacy.client.get(POLICY, headers=pharmacy.as_(role))
        assert read.status_code == (200 if role in (Role.ADMIN, Role.COMPLIANCE) else 403), role
        written = policy_change(pharmacy)(pharmacy.as_(role))
        assert written.status_code == (200 if role == Role.ADMIN else 403), role
        if role != Role.ADMIN:
            assert written.json["error"]["code"] == "forbidden"
    read = pharmacy.client.get(POLICY, headers=pharmacy.as_(Role.COMPLIANCE)).json
    assert (read["second_factor_for_nurses"], read["enrolment_grace_days"],
            read["step_up_minutes"]) == (True, 3, 10)


@pytest.mark.parametrize(("body", "field"), [
    ({"enrolment_grace_days": -1}, "enrolment_grace_days"),
    ({"enrolment_grace_days": 31}, "enrolment_grace_days"),
    ({"step_up_minutes": 0}, "step_up_minutes"),
    ({"step_up_minutes": 16}, "step_up_minutes"),
    ({"second_factor_for_nurses": None}, "second_factor_for_nurses"),
    ({"step_up_seconds": 60}, "step_up_seconds"),
])
def test_the_policy_is_bounded(world, body, field):
    pharmacy = Pharmacy(world)
    before = snapshot(world, pharmacy.org)
    response = pharmacy.client.put(POLICY, headers=pharmacy.as_(Role.ADMIN), json={
        "second_factor_for_nurses": False, "enrolment_grace_days": 7, "step_up_minutes": 15,
        **body})
    assert response.status_code == 422, response.json
    assert list(response.json["error"]["details"]["fields"]) == [field]
    assert snapshot(world, pharmacy.org) == before


@pytest.mark.parametrize(("grace", "minutes"), [(0, 1), (30, 15)])
def test_the_policy_takes_its_bounds(world, grace, minutes):
    pharmacy = Pharmacy(world)
    response = pharmacy.client.put(POLICY, headers=pharmacy.as_(Role.ADMIN), json={
        "second_factor_for_nurses": False, "enrolment_grace_days": grace,
        "step_up_minutes": minutes})
    assert response.status_code == 200, response.json
    org = world.session.get(Organisation, pharmacy.org.id)
    world.session.refresh(org)
    assert (org.mfa_grace_days, org.step_up_seconds) == (grace, minutes * 60)


def audited(world: World, org: Organisation) -> list[dict]:
    return [event.detail for event in world.session.scalars(
        select(AuditEvent).where(AuditEvent.organisation_id == org.id,
                                 AuditEvent.action == "organisation.security_policy")
        .order_by(AuditEvent.occurred_at))]


def test_a_change_is_audited_and_restarts_the_grace(world):
    pharmacy = Pharmacy(world)
    admin, start = pharmacy.users[Role.ADMIN], world.rt.clock.now()
    late = world.user(pharmacy.org, Role.PRESCRIBER, factor=False)

    def due() -> dict[str, tuple[str, bool]]:
        listed = pharmacy.client.get(POLICY, headers=pharmacy.as_(Role.COMPLIANCE)).json
        return {row["username"]: (row["due_at"], row["overdue"])
                for row in listed["without_factor"]}

    assert due() == {late.username: ((start + timedelta(days=7)).isoformat(), False)}
    world.rt.clock.advance(days=8)
    assert due() == {late.username: ((start + timedelta(days=7)).isoformat(), True)}
    changed = world.rt.clock.now()
    response = policy_change(pharmacy)(pharmacy.as_(Role.ADMIN))
    assert response.status_code == 200, response.json
    # Nurses are covered now: the clinic's nurse has no factor; everyone's grace restarts.
    again = (changed + timedelta(days=3)).isoformat()
    assert response.json["changed_at"] == changed.isoformat()
    assert {row["username"]: (row["due_at"], row["role"]) for row in
            response.json["without_factor"]} == {late.username: (again, "prescriber"),
                                                  pharmacy.nurse.username: (again, "nurse")}
    assert audited(world, pharmacy.org) == [{
        "from": {"second_factor_for_nurses": False, "enrolment_grace_days": 7,
                 "step_up_minutes": 15},
        "to": {"second_factor_for_nurses": True, "enrolment_grace_days": 3,
               "step_up_minutes": 10}}]
    # The same policy again changes nothing: no restart, no audit.
    world.rt.clock.advance(days=1)
    same = policy_change(pharmacy)(world.headers(pharmacy.org, admin))
    assert same.json["changed_at"] == changed.isoformat()
    assert len(audited(world, pharmacy.org)) == 1


def test_an_admins_reset_is_due_at_once_whatever_the_policy(world):
    pharmacy = Pharmacy(world)
    reset_at = world.rt.clock.now()
    pharmacist = pharmacy.users[Role.PHARMACIST]
    reset = pharmacy.client.post(f"/api/v1/users/{pharmacist.id}/factors/reset",
                                 headers=pharmacy.as_(Role.ADMIN))
    assert reset.status_code == 204, reset.json
    assert policy_change(pharmacy)(pharmacy.as_(Role.ADMIN)).status_code == 200
    listed = pharmacy.client.get(POLICY, headers=pharmacy.as_(Role.ADMIN)).json
    # Soonest due first.
    first = listed["without_factor"][0]
    assert (first["user_id"], first["due_at"], first["overdue"]) == (
        str(pharmacist.id), reset_at.isoformat(), True)


def test_the_document_names_mfa_required_beside_forbidden(app):
    spec = app.test_client().get("/api/v1/openapi.json").json
    guarded = [("post", "/api/v1/custody/entries"), ("post", "/api/v1/custody/counts"),
               ("post", "/api/v1/custody/inventories"),
               ("patch", "/api/v1/safeguards/rules/{rule_id}"),
               ("post", "/api/v1/flags/{flag_id}/resolve"), ("post", "/api/v1/devices"),
               ("put", POLICY), ("patch", "/api/v1/organisation")]
    for method, path in guarded:
        described = spec["paths"][path][method]["responses"]["403"]["description"]
        assert "`forbidden`" in described and "`mfa_required`" in described, (method, path)
    assert "mfa_required" not in spec["paths"][POLICY]["get"]["responses"]["403"]["description"]


def test_the_table_covers_every_action_but_a_plans():
    assert {case.action for case in CASES} == set(Action) - {Action.SIGN_PLAN}
