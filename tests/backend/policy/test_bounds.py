"""Each threshold's minimum and maximum: out-of-bounds values are refused wherever they are set.

`evv_radius_m = 2147483647` passed a check-in from 0°N 0°E with no reason and no flag, and
`1e30` made every check-in a 500 (issue 13). The organisation's policy (PUT and PATCH) and a
plan's `policy_overrides` (POST and PUT) refuse such values with 422 naming the threshold, and
a value stored before the bounds is read as its nearest bound.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from backend.flags.models import Flag
from backend.policy.models import PolicyOverride
from backend.policy.service import policy_for
from safeguards import RULE_ERROR
from safeguards.policy import Policy
from tests.backend.scene import (
    ADMIN,
    AT_HOME,
    NURSE,
    PHONE,
    PLAN,
    PRE_DOSE,
    PRESCRIBER,
    Scene,
    changed,
    refusal_records,
    row_counts,
)
from tests.factories import World

OUT_OF_BOUNDS = [
    ("evv_radius_m", "1" + "0" * 30),
    ("evv_radius_m", "2147483647"),
    ("evv_radius_m", "49"),
    ("min_interval_hours", "23"),
    ("monitoring_window_minutes", "59"),
    ("max_mg_per_kg_racemic_iv", "2.5"),
    ("max_mg_per_kg_racemic_iv", "1e30"),
    ("form_106_days", "46"),
    ("loss_notice_business_days", "2"),
    ("witness_pair_max_p_value", "0.5"),
    ("scan_window_days", "1000000"),
    ("sync_offline_window_days", "0"),
]
# Where a threshold is set: method, path, role, the body for (name, value), the field named.
SETTERS = [
    ("PUT one", "PUT", "/api/v1/policy/{name}", ADMIN,
     lambda s, name, value: {"value": value}, "value"),
    ("PATCH several", "PATCH", "/api/v1/safeguards/policy", ADMIN,
     lambda s, name, value: {"thresholds": {"min_interval_hours": "72", name: value}},
     "thresholds.{name}"),
    ("new plan", "POST", "/api/v1/patients/{patient}/plans", PRESCRIBER,
     lambda s, name, value: {**PLAN, "product_id": s.ids["product"],
                             "policy_overrides": {name: value}}, "policy_overrides.{name}"),
    ("plan version", "PUT", "/api/v1/plans/{plan}", PRESCRIBER,
     lambda s, name, value: {**PLAN, "product_id": s.ids["product"], "change_reason": "r",
                             "policy_overrides": {name: value}}, "policy_overrides.{name}"),
]


@pytest.fixture
def scene(world: World) -> Scene:
    return Scene(world)


@pytest.mark.parametrize(("name", "value"), OUT_OF_BOUNDS)
@pytest.mark.parametrize(("method", "path", "role", "body", "field"),
                         [case[1:] for case in SETTERS], ids=[case[0] for case in SETTERS])
def test_a_value_beyond_a_thresholds_bounds_is_refused_wherever_it_is_set(
        scene, connection, name, value, method, path, role, body, field):
    before = row_counts(connection)
    response = scene.send(method, path.replace("{name}", name), role, body(scene, name, value))
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "validation_error"
    named = field.format(name=name)
    assert set(error["details"]["fields"]) == {named}, error
    [problem] = error["details"]["fields"][named]
    if "e" not in value:
        assert "must be between" in problem
    assert changed(before, row_counts(connection)) == refusal_records(role, method)


@pytest.mark.parametrize("threshold", Policy().thresholds(), ids=lambda t: t.name)
def test_each_thresholds_bounds_can_be_set(scene, threshold):
    for value in (threshold.minimum, threshold.maximum):
        response = scene.send("PUT", f"/api/v1/policy/{threshold.name}", ADMIN,
                              {"value": str(value)})
        assert response.status_code == 200, response.json
        assert Decimal(response.json["value"]) == value


def test_the_policy_lists_each_thresholds_bounds(scene):
    listed = scene.send("GET", "/api/v1/policy", NURSE).json
    radius = next(t for t in listed if t["name"] == "evv_radius_m")
    assert (radius["minimum"], radius["default"], radius["maximum"]) == ("50", "250", "1609")
    for threshold in listed:
        assert Decimal(threshold["minimum"]) <= Decimal(threshold["value"]) <= Decimal(
            threshold["maximum"]), threshold
    assert scene.send("GET", "/api/v1/safeguards/policy", ADMIN).json == listed


def test_a_value_stored_before_the_bounds_is_read_as_its_nearest_bound(scene, world, caplog):
    """The issue's radius, stored before the bounds: check-ins from anywhere no longer pass."""
    organisation_id = scene.pharmacy.org.id
    world.session.add(PolicyOverride(
        organisation_id=organisation_id, name="evv_radius_m", value="2147483647",
        set_by_id=scene.pharmacy.users[ADMIN].id, set_at=scene.pharmacy.world.rt.clock.now()))
    world.commit()
    assert policy_for(world.session, organisation_id).value("evv_radius_m") == 1609
    assert "evv_radius_m: stored 2147483647 is outside 50..1609" in caplog.text
    listed = scene.send("GET", "/api/v1/policy", NURSE).json
    assert next(t for t in listed if t["name"] == "evv_radius_m")["value"] == "1609"
    gulf_of_guinea = {**AT_HOME, "latitude": "0.000000", "longitude": "0.000000"}
    response = scene.send("POST", "/api/v1/visits/{visit}/check-in", PHONE, gulf_of_guinea)
    assert response.status_code == 422, response.json
    assert "reason" in response.json["error"]["details"]["fields"]


def test_a_plans_thresholds_reach_the_rules_as_numbers(scene, world):
    """Stored as strings, a plan's thresholds used to reach the rules as strings: each rule
    judging one of its visits failed, and the failure was flagged instead of the finding."""
    revised = scene.send("PUT", "/api/v1/plans/{plan}", PRESCRIBER, {
        **PLAN, "product_id": scene.ids["product"], "change_reason": "slower",
        "policy_overrides": {"min_interval_hours": "72", "max_mg_per_kg_racemic_iv": "0.8"}})
    assert revised.status_code == 200, revised.json
    visit = scene.pharmacy.schedule("2026-11-10T15:00:00+00:00").json
    dose = {"product_id": scene.ids["product"], "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": 35_000, "route": "IV", "occurred_at": "2026-11-10T15:05:00Z",
            "infusion_started_at": "2026-11-10T15:10:00Z",
            "infusion_ended_at": "2026-11-10T15:50:00Z"}
    for part, body in (("pre-dose", PRE_DOSE), ("dose", dose)):
        recorded = scene.send("POST", f"/api/v1/visits/{visit['id']}/{part}", PHONE,
                              scene.signed(body))
        assert recorded.status_code == 201, recorded.json
    flagged = world.session.scalars(select(Flag.rule_id)).all()
    assert RULE_ERROR.id not in flagged
