"""The rules API (modes, verdicts, precision), the thresholds API, and a plan's own thresholds."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.flags.service import raise_flag
from backend.plans.models import PlanVersion
from backend.policy.service import policy_for_plan
from backend.safeguards_api import service
from backend.safeguards_api.models import SafeguardRuleMode
from safeguards.findings import Subject, SubjectKind
from safeguards.registry import Mode, RuleMeta
from safeguards.rules.custody import COUNT_DISCREPANCY
from safeguards.rules.monitoring import INFUSION_SHORT, MONITORING
from tests.factories import Clinic, World

A, C, PR = Role.ADMIN, Role.COMPLIANCE, Role.PRESCRIBER


@pytest.fixture
def clinic(world: World) -> Clinic:
    return Clinic(world)


def rules_by_id(clinic: Clinic, role: Role = C) -> dict[str, dict]:
    """Return the rules listing by rule id."""
    response = clinic.client.get("/api/v1/safeguards/rules", headers=clinic.as_(role))
    assert response.status_code == 200, response.json
    return {rule["id"]: rule for rule in response.json}


def judged(clinic: Clinic, rule: RuleMeta, verdicts: list[str | None], *,
           shadow: bool = False, in_review: int = 0) -> None:
    """Raise one flag of `rule` per verdict and resolve it so (None: leave it open)."""
    headers = clinic.as_(C)
    for verdict in [*verdicts, *["review"] * in_review]:
        finding = rule.finding(Subject(SubjectKind.ORGANISATION, str(clinic.org.id)),
                               "Judged.", {}, key=(str(uuid.uuid4()),))
        flag = raise_flag(clinic.world.session, clinic.world.rt.clock.now(), clinic.org.id,
                          replace(finding, shadow=shadow))
        clinic.world.commit()
        if verdict is None:
            continue
        path = f"/api/v1/flags/{flag.id}"
        assert clinic.client.post(f"{path}/assign", headers=headers, json={
            "assignee_id": str(clinic.users[C].id)}).status_code == 200
        if verdict != "review":
            assert clinic.client.post(f"{path}/resolve", headers=headers, json={
                "resolution": verdict, "note": "Reviewed."}).status_code == 200


def test_every_registered_rule_is_listed_with_what_it_is_and_why(clinic: Clinic):
    listed = rules_by_id(clinic)
    assert set(listed) == {rule.meta.id for rule in service.registry()}
    assert {rule.meta.id for rule in MONITORING} | {COUNT_DISCREPANCY.id} <= set(listed)
    short = listed[INFUSION_SHORT.id]
    assert short == {
        "id": "monitoring.infusion_short", "version": 1, "title": INFUSION_SHORT.title,
        "severity": "medium", "rationale": INFUSION_SHORT.rationale,
        "source": INFUSION_SHORT.source, "cadence": "event", "default_mode": "enabled",
        "mode": "enabled", "open": 0, "in_review": 0, "resolved": 0, "precision": None,
        "verdicts": {"justified": 0, "confirmed_misuse": 0, "confirmed_diversion": 0,
                     "false_positive": 0}}


def test_the_peer_rules_run_in_the_nightly_scan(clinic: Clinic):
    listed = rules_by_id(clinic)
    assert listed["waste.rate_outlier"]["cadence"] == "population"
    assert listed["waste.exceeds_remainder"]["cadence"] == "event"


def test_precision_is_measured_from_reviewers_verdicts(clinic: Clinic, world: World):
    judged(clinic, COUNT_DISCREPANCY, ["confirmed_misuse", "confirmed_diversion", "justified",
                                       "false_positive", None, None], in_review=1)
    # Shadow flags are judged too: that is what shadow mode is for.
    judged(clinic, COUNT_DISCREPANCY, ["false_positive"], shadow=True)
    # Another organisation's verdicts say nothing about this one's.
    judged(Clinic(world), COUNT_DISCREPANCY, ["false_positive"] * 3)
    judged(clinic, INFUSION_SHORT, [None])

    listed = rules_by_id(clinic)
    count = listed[COUNT_DISCREPANCY.id]
    assert count["verdicts"] == {"justified": 1, "confirmed_misuse": 1,
                                 "confirmed_diversion": 1, "false_positive": 2}
    assert (count["resolved"], count["open"], count["in_review"]) == (5, 2, 1)
    assert count["precision"] == "0.600"
    short = listed[INFUSION_SHORT.id]
    assert (short["open"], short["resolved"], short["precision"]) == (1, 0, None)


@pytest.mark.parametrize(("verdicts", "precision"), [
    (["justified"], "1.000"),
    (["false_positive"], "0.000"),
    (["confirmed_misuse", "false_positive", "false_positive"], "0.333"),
    (["confirmed_diversion", "confirmed_diversion", "false_positive"], "0.667"),
])
def test_precision_is_true_positives_over_every_verdict(clinic: Clinic, verdicts, precision):
    judged(clinic, INFUSION_SHORT, verdicts)
    assert rules_by_id(clinic)[INFUSION_SHORT.id]["precision"] == precision


@pytest.mark.parametrize("role", [A, C])
def test_a_rule_mode_set_here_is_shown_and_used(clinic: Clinic, world: World, role: Role):
    rule_id = "monitoring.early_discharge"
    response = clinic.client.patch(f"/api/v1/safeguards/rules/{rule_id}",
                                   headers=clinic.as_(role), json={"mode": "shadow"})
    assert response.status_code == 200, response.json
    assert (response.json["mode"], response.json["default_mode"]) == ("shadow", "enabled")
    assert rules_by_id(clinic)[rule_id]["mode"] == "shadow"
    assert service.modes_for(world.session, clinic.org.id) == {rule_id: Mode.SHADOW}
    assert service.registry_for(world.session, clinic.org.id).mode(rule_id) is Mode.SHADOW
    audit = world.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "safeguards.rule_mode", AuditEvent.object_id == rule_id)).one()
    assert (audit.user_id, audit.detail) == (clinic.users[role].id,
                                             {"from": None, "to": "shadow"})

    other = Clinic(world)
    assert rules_by_id(other)[rule_id]["mode"] == "enabled"
    assert service.registry_for(world.session, other.org.id).mode(rule_id) is Mode.ENABLED

    restored = clinic.client.patch(f"/api/v1/safeguards/rules/{rule_id}",
                                   headers=clinic.as_(role), json={"mode": None})
    assert restored.json["mode"] == "enabled"
    assert service.modes_for(world.session, clinic.org.id) == {}


def test_a_rule_mode_must_be_known_for_a_known_rule(clinic: Clinic):
    headers = clinic.as_(A)
    unknown = clinic.client.patch("/api/v1/safeguards/rules/dosing.imaginary", headers=headers,
                                  json={"mode": "disabled"})
    assert unknown.status_code == 404
    bad = clinic.client.patch(f"/api/v1/safeguards/rules/{INFUSION_SHORT.id}", headers=headers,
                              json={"mode": "loud"})
    assert bad.status_code == 422
    assert "mode" in bad.json["error"]["details"]["fields"]
    assert rules_by_id(clinic)[INFUSION_SHORT.id]["mode"] == "enabled"


def test_an_override_of_a_withdrawn_rule_is_ignored(clinic: Clinic, world: World):
    world.session.add(SafeguardRuleMode(
        organisation_id=clinic.org.id, rule_id="dosing.withdrawn", mode="disabled",
        updated_at=world.rt.clock.now(), updated_by_id=clinic.users[A].id))
    world.commit()
    registry = service.registry_for(world.session, clinic.org.id)
    assert "dosing.withdrawn" not in {rule.meta.id for rule in registry}
    assert "dosing.withdrawn" not in rules_by_id(clinic)


RULE_ENDPOINTS = [("GET", "/api/v1/safeguards/rules", None),
                  ("PATCH", f"/api/v1/safeguards/rules/{INFUSION_SHORT.id}",
                   {"mode": "disabled"})]


@pytest.mark.parametrize("role", [Role.NURSE, Role.PHARMACIST, Role.PRESCRIBER])
def test_other_roles_cannot_see_or_switch_rules(clinic: Clinic, role: Role):
    headers = clinic.as_(role)
    for method, path, body in RULE_ENDPOINTS:
        response = clinic.client.open(path, method=method, headers=headers, json=body)
        assert response.status_code == 403, (method, path)
    assert rules_by_id(clinic)[INFUSION_SHORT.id]["mode"] == "enabled"


def thresholds(clinic: Clinic, role: Role = A) -> dict[str, str]:
    """Return the thresholds in force by name."""
    response = clinic.client.get("/api/v1/safeguards/policy", headers=clinic.as_(role))
    assert response.status_code == 200, response.json
    return {threshold["name"]: threshold["value"] for threshold in response.json}


@pytest.mark.parametrize(("change", "fields"), [
    ({"min_interval_hours": "72", "no_such_threshold": "1"}, ["thresholds.no_such_threshold"]),
    ({"min_interval_hours": "72", "evv_radius_m": "12.5"}, ["thresholds.evv_radius_m"]),
    ({"min_interval_hours": "seventy", "max_mg_per_kg_racemic_iv": "-1"},
     ["thresholds.max_mg_per_kg_racemic_iv", "thresholds.min_interval_hours"]),
])
def test_a_policy_change_is_all_or_nothing(clinic: Clinic, world: World, change, fields):
    before = thresholds(clinic)
    response = clinic.client.patch("/api/v1/safeguards/policy", headers=clinic.as_(A),
                                   json={"thresholds": change})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert sorted(response.json["error"]["details"]["fields"]) == fields
    assert thresholds(clinic) == before
    assert world.session.scalar(select(AuditEvent.id).where(
        AuditEvent.action == "policy.set")) is None


def test_a_policy_change_sets_every_threshold_it_names(clinic: Clinic, world: World):
    response = clinic.client.patch("/api/v1/safeguards/policy", headers=clinic.as_(A), json={
        "thresholds": {"min_interval_hours": "72", "max_mg_per_kg_racemic_iv": "0.8"}})
    assert response.status_code == 200, response.json
    changed = {t["name"]: t["value"] for t in response.json}
    assert (changed["min_interval_hours"], changed["max_mg_per_kg_racemic_iv"]) == ("72", "0.8")
    assert thresholds(clinic, C)["min_interval_hours"] == "72"
    assert thresholds(clinic, PR)["max_mg_per_kg_racemic_iv"] == "0.8"
    # The older per-threshold endpoint reads the same store.
    old = clinic.client.get("/api/v1/policy", headers=clinic.as_(Role.NURSE)).json
    assert {t["name"]: t["value"] for t in old}["min_interval_hours"] == "72"
    audited = world.session.scalars(select(AuditEvent.object_id).where(
        AuditEvent.action == "policy.set")).all()
    assert sorted(audited) == ["max_mg_per_kg_racemic_iv", "min_interval_hours"]

    restored = clinic.client.patch("/api/v1/safeguards/policy", headers=clinic.as_(A),
                                   json={"thresholds": {"min_interval_hours": None}})
    assert {t["name"]: t["value"] for t in restored.json}["min_interval_hours"] == "48"


@pytest.mark.parametrize(("role", "method", "allowed"), [
    (C, "PATCH", False), (PR, "PATCH", False), (Role.NURSE, "GET", False),
    (Role.PHARMACIST, "GET", False), (PR, "GET", True), (C, "GET", True)])
def test_who_may_read_and_change_the_policy(clinic: Clinic, role, method, allowed):
    response = clinic.client.open("/api/v1/safeguards/policy", method=method,
                                  headers=clinic.as_(role),
                                  json={"thresholds": {"evv_radius_m": "100"}}
                                  if method == "PATCH" else None)
    assert (response.status_code != 403) is allowed
    assert thresholds(clinic)["evv_radius_m"] == "250"


def test_a_plan_sets_its_own_thresholds(clinic: Clinic, world: World):
    plan = clinic.plan(policy_overrides={"min_interval_hours": "72",
                                         "max_mg_per_kg_racemic_iv": "0.6"})
    [version] = plan["versions"]
    assert version["policy_overrides"] == {"min_interval_hours": "72",
                                           "max_mg_per_kg_racemic_iv": "0.6"}
    # Phases left to policy follow the plan's interval.
    assert {phase["min_interval_hours"] for phase in version["phases"]} == {72}
    stored = world.session.get(PlanVersion, uuid.UUID(version["id"]))
    policy = policy_for_plan(world.session, clinic.org.id, stored)
    assert policy.value("min_interval_hours") == 72
    assert policy.value("max_mg_per_kg_racemic_iv") == Decimal("0.6")
    assert policy.value("evv_radius_m") == 250
    assert policy_for_plan(world.session, clinic.org.id, None).value("min_interval_hours") == 48


def test_a_plan_without_thresholds_uses_the_organisations(clinic: Clinic, world: World):
    [version] = clinic.plan()["versions"]
    assert version["policy_overrides"] is None
    stored = world.session.get(PlanVersion, uuid.UUID(version["id"]))
    assert policy_for_plan(world.session, clinic.org.id, stored).value(
        "min_interval_hours") == 48


@pytest.mark.parametrize(("overrides", "body", "field"), [
    ({"no_such_threshold": "1"}, {}, "policy_overrides.no_such_threshold"),
    ({"min_interval_hours": "1.5"}, {}, "policy_overrides.min_interval_hours"),
    ({"max_mg_per_kg_racemic_iv": "-0.1"}, {}, "policy_overrides.max_mg_per_kg_racemic_iv"),
    # A plan may lower the ceiling for its patient, not lift it for the prescriber.
    ({"max_mg_per_kg_racemic_iv": "2.0"}, {"dose_ug_per_kg": 1500}, "dose_ug_per_kg"),
    ({"max_mg_per_kg_racemic_iv": "0.4"}, {"dose_ug_per_kg": 500}, "dose_ug_per_kg"),
])
def test_a_plans_bad_thresholds_are_refused_naming_the_field(clinic: Clinic, overrides, body,
                                                             field):
    response = clinic.client.post(
        f"/api/v1/patients/{clinic.patient_id}/plans", headers=clinic.as_(PR),
        json={"product_id": clinic.product_id, "route": "IV", "dose_ug_per_kg": 500,
              "max_dose_ug": 70_000, "infusion_minutes": 40, "starts_on": "2026-11-02",
              "policy_overrides": overrides, **body})
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]["fields"]
