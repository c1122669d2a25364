"""Every endpoint × every role: the allowed roles get through, the others get 403."""

from __future__ import annotations

import uuid

import pytest

from backend.accounts.models import Role
from backend.flags.service import raise_flag
from safeguards.findings import Subject, SubjectKind
from safeguards.rules.custody import COUNT_DISCREPANCY
from tests.factories import Clinic, Phone, World

A, PR, PH, N, C = Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST, Role.NURSE, Role.COMPLIANCE
ALL = frozenset(Role)

# (method, path template, allowed roles). {user}, {device}, {patient} are the caller's org's.
MATRIX = [
    ("GET", "/api/v1/me", ALL),
    ("POST", "/api/v1/auth/logout", ALL),
    ("POST", "/api/v1/auth/step-up", ALL),
    ("POST", "/api/v1/auth/step-up/webauthn-options", ALL),
    ("GET", "/api/v1/me/factors", ALL),
    ("POST", "/api/v1/me/factors/totp", ALL),
    ("POST", "/api/v1/me/factors/{factor}/confirm", ALL),
    ("POST", "/api/v1/me/factors/webauthn", ALL),
    ("POST", "/api/v1/me/factors/{factor}/webauthn", ALL),
    ("DELETE", "/api/v1/me/factors/{factor}", ALL),
    ("POST", "/api/v1/me/recovery-codes", ALL),
    ("GET", "/api/v1/users", {A}),
    ("POST", "/api/v1/users", {A}),
    ("PATCH", "/api/v1/users/{user}", {A}),
    ("POST", "/api/v1/users/{user}/factors/reset", {A}),
    ("GET", "/api/v1/organisation", ALL),
    ("PATCH", "/api/v1/organisation", {A}),
    ("GET", "/api/v1/organisation/security-policy", {A, C}),
    ("PUT", "/api/v1/organisation/security-policy", {A}),
    ("GET", "/api/v1/devices", {A, C, N}),
    ("POST", "/api/v1/devices", {N}),
    ("DELETE", "/api/v1/devices/{device}", {A, N}),
    ("GET", "/api/v1/patients", {A, PR, N, C}),
    ("POST", "/api/v1/patients", {A, PR}),
    ("GET", "/api/v1/patients/{patient}", {A, PR, N, C}),
    ("PATCH", "/api/v1/patients/{patient}", {A, PR}),
    ("GET", "/api/v1/patients/{patient}/weights", {A, PR, N, C}),
    ("POST", "/api/v1/patients/{patient}/weights", {A, PR, N}),
    ("POST", "/api/v1/patients/{patient}/nurses", {A, PR}),
    ("DELETE", "/api/v1/patients/{patient}/nurses/{nurse}", {A, PR}),
    ("GET", "/api/v1/audit-events", {A, C}),
    ("GET", "/api/v1/products", ALL),
    ("POST", "/api/v1/products", {A, PH}),
    ("PATCH", "/api/v1/products/{product}", {A, PH}),
    ("POST", "/api/v1/patients/{patient}/plans", {PR}),
    ("GET", "/api/v1/plans/{plan}", {A, PR, PH, N, C}),
    ("PUT", "/api/v1/plans/{plan}", {PR}),
    ("POST", "/api/v1/plans/{plan}/visits", {A, PR}),
    ("GET", "/api/v1/visits", ALL),
    ("POST", "/api/v1/visits", {A, PR}),
    ("GET", "/api/v1/visits/{visit}", ALL),
    ("POST", "/api/v1/visits/{visit}/cancel", {A, PR, N}),
    ("POST", "/api/v1/visits/{visit}/reschedule", {A, PR}),
    ("POST", "/api/v1/visits/{visit}/check-in", {N}),
    ("POST", "/api/v1/visits/{visit}/check-out", {N}),
    ("GET", "/api/v1/visits/{visit}/evv", {A, N, C}),
    ("POST", "/api/v1/visits/{visit}/pre-dose", {N}),
    ("POST", "/api/v1/visits/{visit}/dose", {N}),
    ("POST", "/api/v1/visits/{visit}/observations", {N}),
    ("POST", "/api/v1/visits/{visit}/discharge", {N}),
    ("POST", "/api/v1/visits/{visit}/outcomes", {N}),
    ("POST", "/api/v1/visits/{visit}/waste", {N}),
    ("GET", "/api/v1/visits/{visit}/session", {A, PR, N, C}),
    ("POST", "/api/v1/visits/{visit}/session", {N}),
    ("GET", "/api/v1/visits/{visit}/monitoring-record", {A, PR, N, C}),
    ("GET", "/api/v1/visits/{visit}/fhir", {A, PR, N, C}),
    ("GET", "/api/v1/patients/{patient}/trajectory", {A, PR, N, C}),
    ("GET", "/api/v1/patients/{patient}/fhir", {A, PR, N, C}),
    ("GET", "/api/v1/flags", {A, C}),
    ("GET", "/api/v1/flags/{flag}", {A, C}),
    ("POST", "/api/v1/flags/{flag}/assign", {A, C}),
    ("POST", "/api/v1/flags/{flag}/notes", {A, C}),
    ("POST", "/api/v1/flags/{flag}/resolve", {A, C}),
    ("GET", "/api/v1/safeguards/rules", {A, C}),
    ("PATCH", "/api/v1/safeguards/rules/{rule}", {A, C}),
    ("GET", "/api/v1/safeguards/policy", {A, C, PR}),
    ("PATCH", "/api/v1/safeguards/policy", {A}),
    ("GET", "/api/v1/sync", {N}),
    ("POST", "/api/v1/sync", {N}),
    ("GET", "/api/v1/policy", ALL),
    ("PUT", "/api/v1/policy/{threshold}", {A}),
    ("GET", "/api/v1/notifications", ALL),
    ("GET", "/api/v1/jobs/runs", {A}),
    ("GET", "/api/v1/custody/entries", {A, PH, C, N}),
    ("POST", "/api/v1/custody/entries", {PH, N}),
    ("GET", "/api/v1/custody/balances", {A, PH, C, N}),
    ("GET", "/api/v1/custody/checkpoints", {A, PH, C}),
    ("POST", "/api/v1/custody/counts", {PH}),
    ("GET", "/api/v1/custody/losses", {A, PH, C}),
    ("POST", "/api/v1/custody/losses/{loss}/filings", {PH, C}),
    ("GET", "/api/v1/custody/bags/{nurse}/statement", {A, PH, C, N}),
    ("GET", "/api/v1/custody/reports/dispensing", {A, PH, C}),
    ("GET", "/api/v1/custody/reports/inventory", {A, PH, C}),
    ("GET", "/api/v1/custody/inventories", {A, PH, C}),
    ("POST", "/api/v1/custody/inventories", {PH}),
    ("GET", "/api/v1/custody/inventories/{inventory}", {A, PH, C}),
    ("PATCH", "/api/v1/custody/losses/{loss}", {PH, C}),
    ("GET", "/api/v1/dea/losses/{loss}/form-106", {A, PH, C}),
    ("GET", "/api/v1/dea/form-106", {A, PH, C}),
    ("GET", "/api/v1/dea/destructions/{entry}/form-41", {A, PH, C}),
    ("GET", "/api/v1/dea/form-41", {A, PH, C}),
]
PUBLIC = {"/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/login/factor",
          "/api/v1/auth/login/enrol", "/api/v1/auth/login/webauthn-options", "/api/v1/openapi.json",
          "/api/v1/docs", "/api/v1/docs/<path:filename>", "/healthz",
          "/readyz"}
# Admitted by network or token, never by a user's role: tests/backend/operations/test_metrics.py
# tests its refusals.
SCRAPED = {"/metrics"}


PLACEHOLDERS = {"user": "<uuid:user_id>", "device": "<uuid:device_id>",
                "patient": "<uuid:patient_id>", "plan": "<uuid:plan_id>",
                "visit": "<uuid:visit_id>", "threshold": "<string:name>",
                "nurse": "<uuid:nurse_id>", "loss": "<uuid:loss_id>", "flag": "<uuid:flag_id>",
                "rule": "<string:rule_id>", "factor": "<uuid:factor_id>",
                "product": "<uuid:product_id>", "entry": "<uuid:entry_id>",
                "inventory": "<uuid:inventory_id>"}


@pytest.fixture
def org_with_everyone(world: World):
    clinic = Clinic(world)
    device_id, _ = world.device(clinic.org, clinic.nurse)
    plan = clinic.plan()
    visit = clinic.schedule("2026-11-03T15:00:00+00:00").json
    flag = raise_flag(world.session, world.rt.clock.now(), clinic.org.id,
                      COUNT_DISCREPANCY.finding(Subject(SubjectKind.LOT, "L1"), "Short.", {}))
    world.commit()
    ids = {"user": clinic.users[PH].id, "device": device_id, "patient": clinic.patient_id,
           "plan": plan["id"], "visit": visit["id"], "threshold": "evv_radius_m",
           "nurse": clinic.nurse.id, "loss": uuid.uuid4(), "flag": flag.id,
           "rule": COUNT_DISCREPANCY.id, "factor": uuid.uuid4(), "product": uuid.uuid4(),
           "entry": uuid.uuid4(),
           "inventory": uuid.uuid4()}
    return clinic.org, clinic.users, ids


def _call(client, method: str, path: str, headers: dict):
    return client.open(path, method=method, headers=headers, json={} if method in {
        "POST", "PATCH", "PUT"} else None)


@pytest.mark.parametrize(("method", "template", "allowed"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _ in MATRIX])
def test_role_matrix(world: World, org_with_everyone, method, template, allowed):
    org, users, ids = org_with_everyone
    path = template.format(**ids)
    for role in Role:
        response = _call(world.client, method, path, world.headers(org, users[role]))
        if role in allowed:
            assert response.status_code not in (401, 403), (role, response.json)
        else:
            assert response.status_code == 403, (role, response.status_code)
            assert response.json["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "template", "_allowed"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _ in MATRIX])
def test_every_protected_endpoint_requires_a_token(client, method, template, _allowed):
    path = template.format(**{name: uuid.uuid4() for name in PLACEHOLDERS})
    response = _call(client, method, path, {})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_refused_role_changes_nothing(world: World, org_with_everyone):
    org, users, _ = org_with_everyone
    response = world.client.post("/api/v1/users", headers=world.headers(org, users[N]), json={
        "username": "sneaky", "display_name": "S", "role": "admin", "password": "x" * 12})
    assert response.status_code == 403
    listed = world.client.get("/api/v1/users", headers=world.headers(org, users[A])).json
    assert "sneaky" not in {u["username"] for u in listed}


def test_pharmacist_cannot_register_a_device(world: World, org_with_everyone):
    org, users, _ = org_with_everyone
    response = world.client.post("/api/v1/devices", headers=world.headers(org, users[PH]),
                                 json={"public_key": Phone.new().public_key_b64(), "label": "x"})
    assert response.status_code == 403


def test_matrix_covers_every_api_route(app):
    """A new endpoint must be added to the matrix, so its refusals are tested too.

    The console's pages are not the API: tests/backend/console tests their roles.
    """
    covered = {(method, template.format(**PLACEHOLDERS)) for method, template, _ in MATRIX}
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.rule not in PUBLIC | SCRAPED and rule.endpoint != "static"
              and not rule.rule.startswith("/console")}
    assert routes == covered
