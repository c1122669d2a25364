"""Monitoring and dosing rules, each threshold at, just under and just over its boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from safeguards import RULE_ERROR, Policy, SubjectKind, run
from safeguards.facts import Observed, SessionFacts, Vitals
from safeguards.rules.monitoring import MONITORING

START = datetime(2026, 11, 3, 15, 10, tzinfo=UTC)
PRE = Vitals(systolic=122, diastolic=78, heart_rate=70, spo2=98, respiratory_rate=14, moaas=5,
             cadss_total=0)
SEEN = Vitals(systolic=125, diastolic=80, heart_rate=72, spo2=97, respiratory_rate=14, moaas=5,
              cadss_total=2)
QUIET = Vitals(moaas=5)
EVERY_15 = tuple(Observed(minutes, SEEN) for minutes in range(15, 121, 15))
# A clean session: 0.5 mg/kg over 40 min, observed every 15 min, discharged at 2 h recovered.
CLEAN = SessionFacts(
    visit_id="visit-1", pre_dose=PRE, pre_dose_at=START - timedelta(minutes=10),
    dose_ug=35_000, ug_per_kg=Decimal("500.000"), weight_g=70_000,
    weight_measured_at=START - timedelta(days=2), plan_max_dose_ug=70_000,
    plan_infusion_minutes=40, active_ingredient="ketamine", route="IV",
    infusion_started_at=START, infusion_ended_at=START + timedelta(minutes=40),
    observations=EVERY_15, discharged_at=START + timedelta(minutes=120),
    discharge=Vitals(systolic=124, diastolic=80, heart_rate=70, spo2=98, respiratory_rate=14,
                     moaas=5, cadss_total=0))
UNDOSED = replace(CLEAN, dose_ug=None, ug_per_kg=None, infusion_started_at=None,
                  infusion_ended_at=None, observations=(), discharged_at=None, discharge=None)


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def found(facts: SessionFacts, overrides: dict | None = None) -> dict[str, object]:
    """Return the findings of a run over `facts`, by rule id."""
    findings = run(MONITORING, facts, Policy().with_overrides(overrides or {}))
    assert RULE_ERROR.id not in {finding.rule_id for finding in findings}
    return {finding.rule_id: finding for finding in findings}


def with_pre(**readings) -> SessionFacts:
    return replace(CLEAN, pre_dose=replace(PRE, **readings))


def with_discharge(**readings) -> SessionFacts:
    return replace(CLEAN, discharge=replace(CLEAN.discharge, **readings))


def with_observation(**readings) -> SessionFacts:
    return replace(CLEAN, observations=(Observed(45, replace(SEEN, **readings)), *EVERY_15))


def with_peak_bp(at: int, **readings) -> SessionFacts:
    quiet = tuple(Observed(o.minutes, QUIET) for o in EVERY_15)
    return replace(CLEAN, observations=(*quiet, Observed(at, replace(SEEN, **readings))))


def test_a_clean_session_raises_nothing():
    assert found(CLEAN) == {}


CASES = [
    # monitoring.bp_hold_without_justification: systolic > 140 or diastolic > 90
    ("monitoring.bp_hold_without_justification", with_pre(systolic=139), {}, False),
    ("monitoring.bp_hold_without_justification", with_pre(systolic=140), {}, False),
    ("monitoring.bp_hold_without_justification", with_pre(systolic=141), {}, True),
    ("monitoring.bp_hold_without_justification", with_pre(diastolic=89), {}, False),
    ("monitoring.bp_hold_without_justification", with_pre(diastolic=90), {}, False),
    ("monitoring.bp_hold_without_justification", with_pre(diastolic=91), {}, True),
    ("monitoring.bp_hold_without_justification",
     replace(with_pre(systolic=141), bp_justification="Usual for him; prescriber agreed."), {},
     False),
    ("monitoring.bp_hold_without_justification",
     replace(with_pre(systolic=141), bp_justification="  "), {}, True),
    ("monitoring.bp_hold_without_justification", with_pre(systolic=141),
     {"bp_hold_systolic": 141}, False),
    ("monitoring.bp_hold_without_justification",
     replace(UNDOSED, pre_dose=replace(PRE, systolic=160)), {}, False),
    # monitoring.dose_without_pre_dose_vitals
    ("monitoring.dose_without_pre_dose_vitals", replace(CLEAN, pre_dose=None), {}, True),
    # Until the discharge, a missing pre-dose record may still be on its way from the phone.
    ("monitoring.dose_without_pre_dose_vitals",
     replace(CLEAN, pre_dose=None, discharged_at=None, discharge=None), {}, False),
    ("monitoring.dose_without_pre_dose_vitals", with_pre(spo2=None), {}, True),
    ("monitoring.dose_without_pre_dose_vitals", with_pre(moaas=None), {}, False),
    ("monitoring.dose_without_pre_dose_vitals",
     replace(CLEAN, pre_dose_at=START - timedelta(seconds=1)), {}, False),
    ("monitoring.dose_without_pre_dose_vitals", replace(CLEAN, pre_dose_at=START), {}, False),
    ("monitoring.dose_without_pre_dose_vitals",
     replace(CLEAN, pre_dose_at=START + timedelta(seconds=1)), {}, True),
    ("monitoring.dose_without_pre_dose_vitals", replace(UNDOSED, pre_dose=None), {}, False),
    # dosing.above_plan_max: µg > plan maximum
    ("dosing.above_plan_max", replace(CLEAN, dose_ug=69_999), {}, False),
    ("dosing.above_plan_max", replace(CLEAN, dose_ug=70_000), {}, False),
    ("dosing.above_plan_max", replace(CLEAN, dose_ug=70_001), {}, True),
    # dosing.above_ceiling: racemic IV > 1.0 mg/kg
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=Decimal("999.999")), {}, False),
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=Decimal("1000.000")), {}, False),
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=Decimal("1000.001")), {}, True),
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=Decimal("500.001")),
     {"max_mg_per_kg_racemic_iv": Decimal("0.5")}, True),
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=Decimal("1500"), route="iv"), {}, True),
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=Decimal("1500"), route="IM"), {}, False),
    ("dosing.above_ceiling",
     replace(CLEAN, ug_per_kg=Decimal("1500"), active_ingredient="esketamine"), {}, False),
    ("dosing.above_ceiling", replace(CLEAN, ug_per_kg=None), {}, False),
    # monitoring.infusion_short: minutes < plan 40 - tolerance 5
    ("monitoring.infusion_short",
     replace(CLEAN, infusion_ended_at=START + minutes(35) - timedelta(seconds=1)), {}, True),
    ("monitoring.infusion_short", replace(CLEAN, infusion_ended_at=START + minutes(35)), {},
     False),
    ("monitoring.infusion_short",
     replace(CLEAN, infusion_ended_at=START + minutes(35) + timedelta(seconds=1)), {}, False),
    ("monitoring.infusion_short", replace(CLEAN, infusion_ended_at=START + minutes(39)),
     {"infusion_tolerance_minutes": 0}, True),
    ("monitoring.infusion_short", replace(CLEAN, plan_infusion_minutes=0,
                                          infusion_ended_at=START), {}, False),
    # monitoring.early_discharge: discharge < 120 min after the dose began
    ("monitoring.early_discharge",
     replace(CLEAN, discharged_at=START + minutes(120) - timedelta(seconds=1)), {}, True),
    ("monitoring.early_discharge", replace(CLEAN, discharged_at=START + minutes(120)), {},
     False),
    ("monitoring.early_discharge",
     replace(CLEAN, discharged_at=START + minutes(120) + timedelta(seconds=1)), {}, False),
    ("monitoring.early_discharge", replace(CLEAN, discharged_at=START + minutes(100)),
     {"monitoring_window_minutes": 100}, False),
    # monitoring.discharge_not_recovered: MOAA/S below baseline
    ("monitoring.discharge_not_recovered", with_discharge(moaas=4), {}, True),
    ("monitoring.discharge_not_recovered",
     replace(with_discharge(moaas=4), pre_dose=replace(PRE, moaas=4)), {}, False),
    ("monitoring.discharge_not_recovered",
     replace(with_discharge(moaas=5), pre_dose=replace(PRE, moaas=4)), {}, False),
    # ... or CADSS above baseline + 4
    ("monitoring.discharge_not_recovered", with_discharge(cadss_total=3), {}, False),
    ("monitoring.discharge_not_recovered", with_discharge(cadss_total=4), {}, False),
    ("monitoring.discharge_not_recovered", with_discharge(cadss_total=5), {}, True),
    ("monitoring.discharge_not_recovered",
     replace(with_discharge(cadss_total=7), pre_dose=replace(PRE, cadss_total=3)), {}, False),
    ("monitoring.discharge_not_recovered",
     replace(with_discharge(cadss_total=8), pre_dose=replace(PRE, cadss_total=3)), {}, True),
    ("monitoring.discharge_not_recovered",
     replace(with_discharge(cadss_total=5), pre_dose=replace(PRE, cadss_total=None)), {}, True),
    ("monitoring.discharge_not_recovered", with_discharge(cadss_total=5),
     {"cadss_discharge_delta": 5}, False),
    # ... or BP over the hold
    ("monitoring.discharge_not_recovered", with_discharge(systolic=139), {}, False),
    ("monitoring.discharge_not_recovered", with_discharge(systolic=140), {}, False),
    ("monitoring.discharge_not_recovered", with_discharge(systolic=141), {}, True),
    ("monitoring.discharge_not_recovered", with_discharge(diastolic=90), {}, False),
    ("monitoring.discharge_not_recovered", with_discharge(diastolic=91), {}, True),
    # monitoring.missing_observations: floor(minutes monitored / 15) observations
    ("monitoring.missing_observations", replace(CLEAN, observations=EVERY_15[:-1]), {}, True),
    ("monitoring.missing_observations",
     replace(CLEAN, discharged_at=START + minutes(135) - timedelta(seconds=1)), {}, False),
    ("monitoring.missing_observations", replace(CLEAN, discharged_at=START + minutes(135)), {},
     True),
    ("monitoring.missing_observations",
     replace(CLEAN, observations=EVERY_15[:-1],
             discharged_at=START + minutes(120) - timedelta(seconds=1)), {}, False),
    ("monitoring.missing_observations",
     replace(CLEAN, observations=(*EVERY_15[:-1], Observed(121, SEEN))), {}, True),
    ("monitoring.missing_observations", replace(CLEAN, observations=EVERY_15[:-1]),
     {"observation_interval_minutes": 17}, False),
    ("monitoring.missing_observations", replace(CLEAN, observations=()),
     {"observation_interval_minutes": 0}, True),
    # ... and a blood pressure within 40 ± 10 min
    ("monitoring.missing_observations", with_peak_bp(29), {}, True),
    ("monitoring.missing_observations", with_peak_bp(30), {}, False),
    ("monitoring.missing_observations", with_peak_bp(31), {}, False),
    ("monitoring.missing_observations", with_peak_bp(49), {}, False),
    ("monitoring.missing_observations", with_peak_bp(50), {}, False),
    ("monitoring.missing_observations", with_peak_bp(51), {}, True),
    ("monitoring.missing_observations", with_peak_bp(40, diastolic=None), {}, True),
    ("monitoring.missing_observations", with_peak_bp(51), {"bp_peak_tolerance_minutes": 11},
     False),
    ("monitoring.missing_observations", replace(CLEAN, discharged_at=None), {}, False),
    # monitoring.weight_stale: measured more than 30 days before the dose
    ("monitoring.weight_stale", replace(CLEAN, weight_measured_at=START - timedelta(days=29)),
     {}, False),
    ("monitoring.weight_stale", replace(CLEAN, weight_measured_at=START - timedelta(days=30)),
     {}, False),
    ("monitoring.weight_stale",
     replace(CLEAN, weight_measured_at=START - timedelta(days=30, seconds=1)), {}, True),
    ("monitoring.weight_stale", replace(CLEAN, weight_measured_at=START - timedelta(days=31)),
     {"weight_max_age_days": 31}, False),
    ("monitoring.weight_stale", replace(CLEAN, weight_measured_at=None), {}, True),
    ("monitoring.weight_stale", replace(CLEAN, weight_g=None, ug_per_kg=None), {}, True),
    ("monitoring.weight_stale", replace(UNDOSED, weight_measured_at=None), {}, False),
    # monitoring.alarming_vitals: systolic >= 180, diastolic >= 110
    ("monitoring.alarming_vitals", with_pre(systolic=179), {}, False),
    ("monitoring.alarming_vitals", with_pre(systolic=180), {}, True),
    ("monitoring.alarming_vitals", with_pre(systolic=181), {}, True),
    ("monitoring.alarming_vitals", with_pre(diastolic=109), {}, False),
    ("monitoring.alarming_vitals", with_pre(diastolic=110), {}, True),
    ("monitoring.alarming_vitals", with_pre(diastolic=111), {}, True),
    # ... SpO2 < 92, respiratory rate < 10, heart rate > 120 or < 50
    ("monitoring.alarming_vitals", with_observation(spo2=91), {}, True),
    ("monitoring.alarming_vitals", with_observation(spo2=92), {}, False),
    ("monitoring.alarming_vitals", with_observation(spo2=93), {}, False),
    ("monitoring.alarming_vitals", with_observation(respiratory_rate=9), {}, True),
    ("monitoring.alarming_vitals", with_observation(respiratory_rate=10), {}, False),
    ("monitoring.alarming_vitals", with_observation(respiratory_rate=11), {}, False),
    ("monitoring.alarming_vitals", with_discharge(heart_rate=119), {}, False),
    ("monitoring.alarming_vitals", with_discharge(heart_rate=120), {}, False),
    ("monitoring.alarming_vitals", with_discharge(heart_rate=121), {}, True),
    ("monitoring.alarming_vitals", with_discharge(heart_rate=49), {}, True),
    ("monitoring.alarming_vitals", with_discharge(heart_rate=50), {}, False),
    ("monitoring.alarming_vitals", with_discharge(heart_rate=51), {}, False),
    # ... a rise over pre-dose (122/78) of >= 40 systolic or >= 25 diastolic
    ("monitoring.alarming_vitals", with_observation(systolic=161), {}, False),
    ("monitoring.alarming_vitals", with_observation(systolic=162), {}, True),
    ("monitoring.alarming_vitals", with_observation(systolic=163), {}, True),
    ("monitoring.alarming_vitals", with_observation(diastolic=102), {}, False),
    ("monitoring.alarming_vitals", with_observation(diastolic=103), {}, True),
    ("monitoring.alarming_vitals", with_observation(diastolic=104), {}, True),
    ("monitoring.alarming_vitals", with_observation(systolic=162), {"bp_rise_systolic": 41},
     False),
    ("monitoring.alarming_vitals", replace(UNDOSED, pre_dose=replace(PRE, spo2=88)), {}, True),
]


@pytest.mark.parametrize(("rule_id", "facts", "overrides", "fires"), CASES)
def test_each_rule_fires_exactly_over_its_boundary(rule_id, facts, overrides, fires):
    findings = found(facts, overrides)
    assert (rule_id in findings) is fires
    if fires:
        finding = findings[rule_id]
        assert (finding.subject.kind, finding.subject.id) == (SubjectKind.VISIT, "visit-1")
        assert finding.evidence["visit_id"] == "visit-1"


def test_alarming_readings_make_one_finding_that_names_each():
    facts = replace(with_pre(spo2=90), discharge=replace(CLEAN.discharge, heart_rate=130))
    finding = found(facts)["monitoring.alarming_vitals"]
    assert finding.evidence["alarms"] == 2
    assert finding.evidence["pre_dose.spo2"] == 90
    assert finding.evidence["discharge.heart_rate"] == 130
    assert "pre-dose spo2 90 (< 92)" in finding.summary


@pytest.mark.parametrize("rule_id", [rule.meta.id for rule in MONITORING])
def test_a_finding_keeps_one_key_per_rule_and_visit(rule_id):
    worse = replace(CLEAN, pre_dose=replace(PRE, systolic=150, spo2=None), dose_ug=90_000,
                    ug_per_kg=Decimal("1300"), weight_measured_at=START - timedelta(days=40),
                    infusion_ended_at=START + minutes(10),
                    observations=(Observed(5, Vitals(spo2=80)),),
                    discharged_at=START + minutes(30), discharge=Vitals(moaas=2, cadss_total=20))
    worst = replace(worse, pre_dose=replace(PRE, systolic=160, spo2=None, heart_rate=None),
                    dose_ug=95_000, ug_per_kg=Decimal("1400"),
                    weight_measured_at=START - timedelta(days=50),
                    infusion_ended_at=START + minutes(5),
                    observations=(Observed(5, Vitals(spo2=70)),),
                    discharged_at=START + minutes(20), discharge=Vitals(moaas=1, cadss_total=20))
    first, second = found(worse)[rule_id], found(worst)[rule_id]
    assert first.dedup_key == second.dedup_key
    assert first.evidence != second.evidence
