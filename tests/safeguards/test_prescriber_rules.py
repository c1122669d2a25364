"""Prescriber rules, table-driven at and around each threshold: plans above the protocol dose,
and a prescriber's planned mg/kg and frequency overrides against the other prescribers'."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards.facts import PlanFact, SessionFacts
from safeguards.findings import Severity, SubjectKind
from safeguards.rules.monitoring import MONITORING
from safeguards.rules.prescribers import PRESCRIBERS
from tests.safeguards.factories import T0, facts, found

ABOVE = "prescriber.above_protocol"
PEERS = "prescriber.peer_outlier"


def plan(number: int = 1, prescriber: str = "prescriber-1", **fields) -> PlanFact:
    """Return version 1 of plan `number`: 0.5 mg/kg, the protocol dose, by `prescriber`."""
    defaults = dict(id=f"version-{number}", plan_id=f"plan-{number}", version=1,
                    patient_id=f"patient-{number}", prescriber_id=prescriber, created_at=T0,
                    dose_ug_per_kg=500, max_dose_ug=70_000)
    return PlanFact(**{**defaults, **fields})


def _above(*plans: PlanFact, overrides: dict | None = None):
    return [f for f in found(PRESCRIBERS, facts(plans=plans), overrides) if f.rule_id == ABOVE]


@pytest.mark.parametrize(("fields", "flagged"), [
    ({}, False),                                                  # the protocol dose
    ({"dose_ug_per_kg": 499}, False),                             # just below
    ({"dose_ug_per_kg": 501}, True),                              # just above
    ({"dose_ug_per_kg": 1_000}, True),                            # twice the protocol dose
    ({"dose_ug_per_kg": None, "dose_ug": 35_000, "weight_g": 70_000}, False),  # fixed, at
    ({"dose_ug_per_kg": None, "dose_ug": 35_001, "weight_g": 70_000}, True),   # fixed, above
    ({"dose_ug_per_kg": None, "dose_ug": 70_000, "weight_g": None}, False),    # no weight
    ({"dose_ug_per_kg": None, "dose_ug": 70_000, "weight_g": 0}, False),       # no weight
    ({"dose_ug_per_kg": None, "dose_ug": None}, False),           # no dose at all
    # A per-kg version whose fixed-dose phase is higher at the patient's weight.
    ({"dose_ug_per_kg": 400, "dose_ug": 42_000, "weight_g": 70_000}, True),
])
def test_a_plan_above_the_protocol_dose_is_flagged_at_and_around_it(fields, flagged):
    assert bool(_above(plan(justified=True, **fields))) is flagged


def test_the_finding_is_about_the_plan_and_says_what_to_check():
    [finding] = _above(plan(dose_ug_per_kg=1_000, justified=True))
    assert finding.subject.kind is SubjectKind.PLAN and finding.subject.id == "plan-1"
    assert finding.severity is Severity.MEDIUM
    assert "1.000 mg/kg" in finding.summary and "0.500 mg/kg protocol dose" in finding.summary
    assert "Check the justification" in finding.summary
    assert {name: finding.evidence[name] for name in (
        "plan_version_id", "patient_id", "prescriber_id", "planned_mg_per_kg",
        "protocol_mg_per_kg", "ratio_to_protocol", "dose_basis", "justified")} == {
        "plan_version_id": "version-1", "patient_id": "patient-1",
        "prescriber_id": "prescriber-1", "planned_mg_per_kg": Decimal("1.000"),
        "protocol_mg_per_kg": Decimal("0.5"), "ratio_to_protocol": Decimal("2.00"),
        "dose_basis": "per_kg", "justified": "yes"}


def test_without_a_justification_it_is_more_severe():
    [finding] = _above(plan(dose_ug_per_kg=1_000))
    assert finding.severity is Severity.HIGH
    assert "no justification was recorded" in finding.summary


def test_a_fixed_dose_names_the_weight_it_was_compared_by():
    [finding] = _above(plan(dose_ug_per_kg=None, dose_ug=70_000, weight_g=70_000))
    assert (finding.evidence["dose_basis"], finding.evidence["weight_g"]) == (
        "fixed_at_weight", 70_000)


@pytest.mark.parametrize(("protocol", "flagged"), [
    (Decimal("0.5"), True), (Decimal("0.6"), True), (Decimal("0.7"), False)])
def test_the_protocol_dose_is_the_organisation_s(protocol, flagged):
    assert bool(_above(plan(dose_ug_per_kg=700),
                       overrides={"protocol_mg_per_kg": protocol})) is flagged


def test_each_version_above_the_protocol_dose_is_an_occurrence_of_the_plan_s_one_case():
    first, second = plan(dose_ug_per_kg=900), plan(dose_ug_per_kg=1_000, id="version-2",
                                                   version=2)
    findings = _above(first, second)
    assert len({f.dedup_key for f in findings}) == 1
    assert [f.occurrence_key for f in findings] == ["version-1", "version-2"]
    other = _above(plan(2, dose_ug_per_kg=900))
    assert other[0].dedup_key != findings[0].dedup_key


# Session facts of a dose under a plan: 75 mg at 70 kg is 1.071 mg/kg, over the 1.0 ceiling.
HIGH_DOSE = SessionFacts(
    visit_id="visit-1", dose_ug=75_000, ug_per_kg=Decimal("1071.429"), weight_g=70_000,
    plan_max_dose_ug=80_000, active_ingredient="ketamine", route="IV",
    infusion_started_at=T0, infusion_ended_at=T0 + timedelta(minutes=40))


@pytest.mark.parametrize(("session", "flagged"), [
    (HIGH_DOSE, True),                                                   # no justified plan
    (replace(HIGH_DOSE, plan_dose_justified=True), False),              # the plan's cause
    (replace(HIGH_DOSE, plan_dose_justified=True, plan_max_dose_ug=75_000), False),  # at max
    (replace(HIGH_DOSE, plan_dose_justified=True, plan_max_dose_ug=74_999), True),   # above
    (replace(HIGH_DOSE, plan_dose_justified=True, plan_max_dose_ug=None), True),
])
def test_a_dose_within_its_justified_plan_is_left_to_the_plan_s_finding(session, flagged):
    ceiling = [f for f in found(MONITORING, session) if f.rule_id == "dosing.above_ceiling"]
    assert bool(ceiling) is flagged


def test_a_dose_above_its_justified_plan_s_maximum_is_still_flagged_against_the_plan():
    over = replace(HIGH_DOSE, plan_dose_justified=True, plan_max_dose_ug=70_000)
    assert {f.rule_id for f in found(MONITORING, over)} >= {"dosing.above_plan_max",
                                                           "dosing.above_ceiling"}


def prescribers(doses: dict[str, int], plans: int = 5, **fields) -> tuple[PlanFact, ...]:
    """Return `plans` plan versions for each prescriber, all at the µg/kg given for them."""
    return tuple(plan(n, prescriber, dose_ug_per_kg=dose, justified=True, **fields)
                 for index, (prescriber, dose) in enumerate(doses.items())
                 for n in range(index * 100, index * 100 + plans))


HONEST = {"honest-a": 500, "honest-b": 500, "honest-c": 450}


def _peers(given: tuple[PlanFact, ...], overrides: dict | None = None):
    return [f for f in found(PRESCRIBERS, facts(plans=given), overrides) if f.rule_id == PEERS]


@pytest.mark.parametrize(("dose", "flagged"), [
    (500, False),       # the protocol dose, like the others
    (620, False),       # 24% above the others' median: under the minimum effect
    (625, False),       # 25%: at the minimum effect, z 2.5 on the 0.05 mg/kg floor
    (674, False),       # z 3.48, just under 3.5
    (675, True),        # z 3.5 on the floor
    (1_000, True),      # twice the protocol dose
])
def test_a_prescriber_s_planned_dose_against_the_others_at_and_around_the_limits(dose, flagged):
    found_ = _peers(prescribers({**HONEST, "x": dose}))
    assert [f.subject.id for f in found_] == (["x"] if flagged else [])


def test_the_peer_finding_is_about_the_prescriber_and_names_the_figure():
    [finding] = _peers(prescribers({**HONEST, "x": 1_000}))
    assert finding.subject.kind is SubjectKind.PRESCRIBER
    assert finding.severity is Severity.MEDIUM
    assert (finding.evidence["figure"], finding.evidence["value"],
            finding.evidence["peer_median"], finding.evidence["peers"],
            finding.evidence["plan_versions"], finding.evidence["scale_basis"]) == (
        "planned_ug_per_kg", Decimal("1000.000"), Decimal("500.000"), 3, 5, "floor")
    assert "3 other prescribers" in finding.summary and "Check" in finding.summary


@pytest.mark.parametrize(("plans", "peers", "flagged"), [
    (5, 3, True),       # enough plans, enough peers
    (5, 2, True),       # at the fewest peers
    (4, 3, False),      # one plan too few for each prescriber
    (5, 1, False),      # one peer too few
])
def test_a_prescriber_is_compared_only_with_enough_plans_and_peers(plans, peers, flagged):
    doses = dict(list(HONEST.items())[:peers])
    assert bool(_peers(prescribers({**doses, "x": 1_000}, plans=plans))) is flagged


def test_one_plan_revised_many_times_is_one_plan_not_many():
    revised = tuple(plan(900, "x", id=f"version-900-{n}", version=n, dose_ug_per_kg=1_000)
                    for n in range(1, 6))
    assert _peers(prescribers(HONEST) + revised) == []
    others = tuple(plan(950 + n, "x", dose_ug_per_kg=1_000) for n in range(4))
    [finding] = _peers(prescribers(HONEST) + revised + others)
    assert (finding.evidence["plans"], finding.evidence["plan_versions"]) == (5, 9)


def test_a_low_prescriber_is_not_flagged():
    assert _peers(prescribers({**HONEST, "x": 200})) == []


def test_honest_prescribers_who_differ_a_little_raise_nothing():
    honest = {f"p{n}": 450 + 25 * (n % 5) for n in range(8)}
    assert _peers(prescribers(honest)) == []


def test_fixed_doses_without_a_weight_are_left_out_of_the_mean():
    weighed = prescribers({**HONEST, "x": 1_000})
    unknown = tuple(plan(900 + n, "x", dose_ug_per_kg=None, dose_ug=35_000)
                    for n in range(5))
    [finding] = _peers(weighed + unknown)
    assert (finding.evidence["value"], finding.evidence["plan_versions"]) == (
        Decimal("1000.000"), 10)


def _with_overrides(counts: dict[str, int], plans: int = 5) -> tuple[PlanFact, ...]:
    """Return each prescriber's plans with `counts[prescriber]` overrides among them."""
    return tuple(plan(index * 100 + n, prescriber, overrides=1 if n < count else 0)
                 for index, (prescriber, count) in enumerate(counts.items())
                 for n in range(plans))


@pytest.mark.parametrize(("overrides", "flagged"), [
    (0, False),
    (2, False),         # 0.4 per plan: under the 0.5 minimum excess
    (3, False),         # 0.6 per plan: z 2.4 on the 0.25 floor
    (4, False),         # 0.8 per plan: z 3.2
    (5, True),          # 1.0 per plan: z 4.0
])
def test_a_prescriber_s_overrides_against_the_others_at_and_around_the_limits(overrides,
                                                                              flagged):
    found_ = _peers(_with_overrides({"a": 0, "b": 0, "c": 0, "x": overrides}))
    assert [(f.subject.id, f.evidence["figure"]) for f in found_] == (
        [("x", "overrides_per_plan")] if flagged else [])


def test_prescribers_who_all_override_now_and_then_raise_nothing():
    assert _peers(_with_overrides({"a": 1, "b": 2, "c": 1, "d": 2, "x": 2})) == []


def test_an_empty_organisation_raises_nothing():
    assert found(PRESCRIBERS, facts()) == []
