"""Threshold defaults, organisation and plan overrides, and the values a policy refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from safeguards import DEFAULT_THRESHOLDS, Policy, Threshold, UnknownThreshold


@pytest.mark.parametrize(("name", "value", "unit"), [
    ("min_interval_hours", 48, "h"),
    ("bp_hold_systolic", 140, "mmHg"),
    ("bp_hold_diastolic", 90, "mmHg"),
    ("monitoring_window_minutes", 120, "min"),
    ("max_mg_per_kg_racemic_iv", Decimal("1.0"), "mg/kg"),
    ("evv_radius_m", 250, "m"),
    ("loss_notice_business_days", 1, "business days"),
    ("form_106_days", 45, "days"),
    ("low_dose_ratio", Decimal("0.4"), "ratio of the planned dose"),
    ("waste_rate_z", Decimal("3.5"), "modified z"),
    ("administered_z", Decimal("3.5"), "modified z"),
    ("activity_low_z", Decimal("3.5"), "modified z"),
])
def test_defaults_come_from_the_clinical_reference(name, value, unit):
    policy = Policy()
    assert policy.value(name) == value
    assert type(policy.value(name)) is type(value)
    assert policy.threshold(name).unit == unit


@pytest.mark.parametrize("threshold", DEFAULT_THRESHOLDS, ids=lambda t: t.name)
def test_every_default_cites_its_source(threshold):
    # A practice default has no literature to cite, but must say it is a choice.
    assert "CLINICAL.md" in threshold.source or threshold.practice


@pytest.mark.parametrize(("name", "practice"), [
    ("bp_hold_systolic", True),
    ("evv_radius_m", True),
    ("monitoring_window_minutes", False),
    ("form_106_days", False),
    ("peer_min_visits", True),
    ("witness_pair_max_p_value", True),
    ("clock_drift_max_seconds", True),
    ("waste_rate_z", False),
])
def test_practice_defaults_are_marked(name, practice):
    assert Policy().threshold(name).practice is practice


@pytest.mark.parametrize(("organisation", "plan", "expected"), [
    ({}, {}, 48),
    ({"min_interval_hours": 72}, {}, 72),
    ({}, {"min_interval_hours": 96}, 96),
    ({"min_interval_hours": 72}, {"min_interval_hours": 96}, 96),  # the plan has the last word
    ({"min_interval_hours": 72}, {"bp_hold_systolic": 150}, 72),
])
def test_plan_overrides_sit_on_organisation_overrides(organisation, plan, expected):
    policy = Policy().with_overrides(organisation).with_overrides(plan)
    assert policy.value("min_interval_hours") == expected


def test_overriding_leaves_the_base_policy_unchanged():
    base = Policy()
    base.with_overrides({"bp_hold_systolic": 150})
    assert base.value("bp_hold_systolic") == 140


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"max_mg_per_kg_racemic_iv": Decimal("0.75")}, Decimal("0.75")),
    ({"max_mg_per_kg_racemic_iv": 1}, Decimal(1)),
])
def test_decimal_thresholds_take_decimals_and_ints(overrides, expected):
    value = Policy().with_overrides(overrides).value("max_mg_per_kg_racemic_iv")
    assert value == expected
    assert isinstance(value, Decimal)


@pytest.mark.parametrize(("overrides", "error"), [
    ({"min_interval_hourz": 72}, UnknownThreshold),
    ({"max_mg_per_kg_racemic_iv": 0.75}, TypeError),
    ({"min_interval_hours": Decimal("36.5")}, TypeError),
    ({"min_interval_hours": "48"}, TypeError),
    ({"min_interval_hours": True}, TypeError),
    ({"min_interval_hours": -1}, ValueError),
    ({"max_mg_per_kg_racemic_iv": Decimal("NaN")}, ValueError),
])
def test_overrides_are_refused_unless_known_and_exact(overrides, error):
    with pytest.raises(error):
        Policy().with_overrides(overrides)


def test_unknown_name_is_refused_on_lookup():
    with pytest.raises(UnknownThreshold, match="bp_hold"):
        Policy().value("bp_hold")


def test_policy_refuses_a_threshold_defined_twice():
    with pytest.raises(ValueError, match="twice"):
        Policy([Threshold("a", 1, "h", "x", minimum=0, maximum=9),
                Threshold("a", 2, "h", "x", minimum=0, maximum=9)])


def test_threshold_default_cannot_be_a_float():
    with pytest.raises(TypeError):
        Threshold("max_mg", 1.0, "mg/kg", "x", minimum=0, maximum=2)


@pytest.mark.parametrize("threshold", Policy().thresholds(), ids=lambda t: t.name)
def test_every_threshold_has_bounds_around_its_default(threshold):
    assert threshold.minimum <= threshold.default <= threshold.maximum
    assert type(threshold.minimum) is type(threshold.maximum) is type(threshold.default)


@pytest.mark.parametrize(("bounds", "default"), [((5, 9), 4), ((5, 9), 10), ((9, 5), 7),
                                                 ((Decimal(0), 9), 1), ((-1, 9), 1)])
def test_a_threshold_refuses_bounds_that_do_not_hold_its_default(bounds, default):
    low, high = bounds
    with pytest.raises((ValueError, TypeError)):
        Threshold("t", default, "h", "x", minimum=low, maximum=high)


@pytest.mark.parametrize(("name", "value"), [
    ("evv_radius_m", 2_147_483_647), ("evv_radius_m", 10**30), ("evv_radius_m", 49),
    ("min_interval_hours", 23), ("max_mg_per_kg_racemic_iv", Decimal("2.01")),
    ("max_mg_per_kg_racemic_iv", Decimal("0.09")), ("form_106_days", 46),
    ("witness_pair_max_p_value", Decimal("0.5")), ("scan_window_days", 10**6),
])
def test_values_beyond_a_thresholds_bounds_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be between"):
        Policy().with_overrides({name: value})


@pytest.mark.parametrize(("name", "value"), [
    ("evv_radius_m", 50), ("evv_radius_m", 1609), ("max_mg_per_kg_racemic_iv", Decimal("2.0")),
    ("loss_notice_business_days", 1)])
def test_values_at_a_thresholds_bounds_are_taken(name, value):
    assert Policy().with_overrides({name: value}).value(name) == value
