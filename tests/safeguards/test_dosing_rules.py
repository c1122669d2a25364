"""Dose creep and low doses with large waste, each at, under and over its thresholds."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards.facts import DoseSeries, DoseTally
from safeguards.policy import Policy
from safeguards.rules.dosing import DOSING, creep
from safeguards.rules.indexes import dose_series
from tests.safeguards.factories import (
    T0,
    dose,
    doses_every,
    facts,
    found,
    ids,
    waste,
    with_quantities,
)

# Six doses twice a week; the first three as planned (35 mg), the last three as given here.
EARLIER = [35_000] * 3


def creeping(recent: list[int], **fields) -> list:
    """Return six doses: three as planned, then `recent`."""
    return with_quantities(doses_every(3.5, 3 + len(recent), **fields), EARLIER + recent)


CREEP_CASES = [
    # creep_max_rise 0.20: the recent median over the earlier median, against the plan.
    ("rise of exactly 20%", creeping([42_000] * 3), {}, False),
    ("just under 20%", creeping([41_999] * 3), {}, False),
    ("just over 20%", creeping([42_001] * 3), {}, True),
    ("the median, not one dose, must rise", creeping([35_000, 35_000, 70_000]), {}, False),
    ("two of three recent up", creeping([35_000, 42_001, 42_001]), {}, True),
    # creep_min_doses 6: five doses are too few to judge.
    ("five doses", with_quantities(doses_every(3.5, 5), [35_000] * 3 + [50_000] * 2), {},
     False),
    ("five doses, minimum lowered", with_quantities(doses_every(3.5, 5), [35_000] * 3
                                                    + [50_000] * 2), {"creep_min_doses": 5},
     True),
    ("rise allowed raised", creeping([42_001] * 3), {"creep_max_rise": Decimal("0.25")}, False),
    ("falling doses", creeping([20_000] * 3), {}, False),
]


@pytest.mark.parametrize(("doses", "overrides", "expected"),
                         [case[1:] for case in CREEP_CASES], ids=[c[0] for c in CREEP_CASES])
def test_creep_thresholds(doses, overrides, expected):
    findings = found(DOSING, facts(doses=tuple(doses)), overrides)
    assert ("dosing.creep" in ids(findings)) is expected


def test_creep_follows_the_plan_so_a_prescribed_step_up_is_not_creep():
    doses = creeping([50_000] * 3)
    stepped = [replace(d, planned_ug=50_000) if d.quantity_ug == 50_000 else d for d in doses]
    assert found(DOSING, facts(doses=tuple(stepped))) == []


def test_creep_falls_back_to_mg_per_kg_without_a_planned_dose():
    doses = [replace(d, planned_ug=None, ug_per_kg=Decimal(d.quantity_ug) / 70)
             for d in creeping([42_001] * 3)]
    [finding] = found(DOSING, facts(doses=tuple(doses)))
    assert finding.evidence["measure"] == "mg_per_kg"
    assert finding.evidence["rise"] == Decimal("0.200")


def test_creep_finding_names_the_patient_and_the_recent_doses():
    [finding] = found(DOSING, facts(doses=tuple(creeping([45_500] * 3))))
    assert finding.subject.id == "patient-1"
    assert finding.evidence["patient_id"] == "patient-1"
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["recent_dose_ids"] == "dose-4,dose-5,dose-6"
    assert finding.evidence["rise"] == Decimal("0.300")
    assert "30%" in finding.summary


def test_creep_keeps_one_finding_per_patient_as_the_window_grows():
    first = found(DOSING, facts(doses=tuple(creeping([45_500] * 3))))
    later = found(DOSING, facts(doses=tuple(creeping([45_500] * 5))))
    assert [f.dedup_key for f in first] == [f.dedup_key for f in later]


def test_creep_reads_the_plan_overrides_of_the_latest_dose():
    doses = creeping([42_001] * 3)
    plan = {"plan-1": {"creep_max_rise": Decimal("0.5")}}
    assert found(DOSING, facts(doses=tuple(doses), plan_overrides=plan)) == []


# planned 35,000 µg: low_dose_ratio 0.4 → a dose under 14,000 µg; large_waste_ratio 0.5 → waste
# of at least 17,500 µg.
LOW_CASES = [
    ("dose at 0.4 of plan", 14_000, 21_000, {}, False),
    ("dose just under 0.4", 13_999, 21_000, {}, True),
    ("waste just under half", 13_999, 17_499, {}, False),
    ("waste exactly half", 13_999, 17_500, {}, True),
    ("no waste at the visit", 13_999, 0, {}, False),
    ("ratio lowered", 13_999, 21_000, {"low_dose_ratio": Decimal("0.3")}, False),
]


@pytest.mark.parametrize(("dose_ug", "waste_ug", "overrides", "expected"),
                         [case[1:] for case in LOW_CASES], ids=[c[0] for c in LOW_CASES])
def test_low_dose_large_waste_thresholds(dose_ug, waste_ug, overrides, expected):
    wastes = (waste(quantity_ug=waste_ug),) if waste_ug else ()
    given = facts(doses=(dose(quantity_ug=dose_ug),), wastes=wastes)
    assert ("dosing.low_dose_large_waste" in ids(found(DOSING, given, overrides))) is expected


def test_low_dose_sums_every_waste_of_the_visit():
    wastes = (waste(1, quantity_ug=9_000), waste(2, visit_id="visit-1", quantity_ug=9_000))
    [finding] = found(DOSING, facts(doses=(dose(quantity_ug=10_000),), wastes=wastes))
    assert finding.evidence["wasted_ug"] == 18_000
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["patient_id"] == "patient-1"
    assert finding.dedup_key == found(DOSING, facts(
        doses=(dose(quantity_ug=10_000), dose(2)), wastes=wastes))[0].dedup_key


def test_low_dose_needs_a_planned_dose():
    given = facts(doses=(dose(quantity_ug=1_000, planned_ug=None),), wastes=(waste(),))
    assert found(DOSING, given) == []


def run_of(quantities: list[int], patients: list[str] | None = None, planned: int = 40_000,
           nurse: str = "nurse-1") -> list:
    """Return one dose a day by `nurse` with `planned` µg planned, given as `quantities`,
    for `patients` in turn (two patients by default)."""
    patients = patients or ["patient-1", "patient-2"]
    return [dose(n, T0 + timedelta(days=n), quantity_ug=q, planned_ug=planned,
                 patient_id=patients[n % len(patients)], nurse_id=nurse)
            for n, q in enumerate(quantities)]


# below_plan_run_max_ratio 0.85 of 40 mg planned is 34 mg; below_plan_run_doses 4.
RUN_CASES = [
    ("four at 30 mg for two patients", run_of([30_000] * 4), {}, True),
    ("four just under 0.85", run_of([33_999] * 4), {}, True),
    ("one exactly at 0.85", run_of([30_000] * 3 + [34_000]), {}, False),
    ("one as planned among them", run_of([30_000, 40_000, 30_000, 30_000]), {}, False),
    ("three under plan only", run_of([30_000] * 3), {}, False),
    ("an honest dose before a run of four", run_of([40_000] + [30_000] * 4), {}, True),
    ("an honest last dose ends the run", run_of([30_000] * 4 + [40_000]), {}, False),
    ("four for one patient", run_of([30_000] * 4, ["patient-1"]), {}, False),
    ("four for one patient, one patient allowed", run_of([30_000] * 4, ["patient-1"]),
     {"below_plan_run_min_patients": 1}, True),
    ("four when five are asked", run_of([30_000] * 4), {"below_plan_run_doses": 5}, False),
    ("three when three are asked", run_of([30_000] * 3), {"below_plan_run_doses": 3}, True),
    ("under a stricter ratio", run_of([30_000] * 4),
     {"below_plan_run_max_ratio": Decimal("0.75")}, False),
    ("no plans known", [replace(d, planned_ug=None) for d in run_of([30_000] * 4)], {}, False),
    ("honest doses as planned", run_of([40_000] * 8), {}, False),
]


@pytest.mark.parametrize(("doses", "overrides", "expected"), [c[1:] for c in RUN_CASES],
                         ids=[c[0] for c in RUN_CASES])
def test_below_plan_run_thresholds(doses, overrides, expected):
    findings = found(DOSING, facts(doses=tuple(doses)), overrides)
    assert ("dosing.below_plan_run" in ids(findings)) is expected


def test_below_plan_run_is_per_nurse_and_says_what_to_check():
    # Two nurses' runs interleaved: each her own four doses, neither the other's.
    mine = run_of([30_000] * 2, nurse="nurse-1")
    theirs = [replace(d, id=f"other-{d.id}") for d in run_of([30_000] * 2, nurse="nurse-2")]
    assert "dosing.below_plan_run" not in ids(found(DOSING, facts(doses=(*mine, *theirs))))
    [finding] = [f for f in found(DOSING, facts(doses=tuple(run_of([30_000] * 4))))
                 if f.rule_id == "dosing.below_plan_run"]
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["patients"] == 2
    assert finding.evidence["highest_ratio"] == Decimal("0.750")
    assert (finding.evidence["given_ug"], finding.evidence["planned_ug"]) == (120_000, 160_000)
    assert "Check" in finding.summary
    later = run_of([30_000] * 5)
    [again] = [f for f in found(DOSING, facts(doses=tuple(later)))
               if f.rule_id == "dosing.below_plan_run"]
    assert again.dedup_key == finding.dedup_key


def _tallied(doses: list, tail: int) -> DoseSeries:
    """Return the doses of one patient as the scan's loader sums them, `tail` latest apart."""
    [whole] = dose_series(facts(doses=tuple(doses)))
    latest = whole.latest[-tail:]
    earlier = Counter((d.quantity_ug, d.ug_per_kg, d.planned_ug) for d in whole.latest[:-tail])
    return DoseSeries(whole.patient_id, tail, latest,
                      tuple(DoseTally(*figures, doses=count) for figures, count in earlier.items()))


@pytest.mark.parametrize(("doses", "overrides", "expected"),
                         [case[1:] for case in CREEP_CASES], ids=[c[0] for c in CREEP_CASES])
def test_creep_finds_the_same_in_a_series_with_its_earlier_doses_tallied(doses, overrides,
                                                                          expected):
    series = facts(dose_series=(_tallied(doses, 3),))
    assert (list(creep(series, Policy().with_overrides(overrides)))
            == list(creep(facts(doses=tuple(doses)), Policy().with_overrides(overrides))))


def test_creep_refuses_a_series_that_tallied_doses_it_compares_one_by_one():
    series = facts(dose_series=(_tallied(creeping([42_001] * 3), 2),))
    with pytest.raises(ValueError, match="3 recent doses"):
        list(creep(series, Policy()))
