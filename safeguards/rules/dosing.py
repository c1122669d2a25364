"""Dosing rules across sessions: doses creeping upward, and doses far under plan with much waste.

The per-session ceilings (`dosing.above_plan_max`, `dosing.above_ceiling`) are monitoring
rules; these look at a patient's doses together and at a dose beside its visit's waste.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction

from safeguards.facts import Dose, DoseSeries, DoseTally, Facts, SeriesDose
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.rules.indexes import Kept, dose_series, kept, plan_policies, wasted_by_visit
from safeguards.stats import median, median_of_counts, rounded

DOSING = Registry()

CREEP = RuleMeta(
    id="dosing.creep", version=1, title="Doses creeping upward", severity=Severity.MEDIUM,
    rationale="A patient's recent doses well above the earlier ones, for the same plan, point "
              "to tolerance, to pressure on the nurse, or to doses recorded that were not given.",
    source="CLINICAL.md Drugs: steep dose-response, more dissociation and no added benefit at "
           "higher doses, Krystal et al. 2019; Fava 2017; the rise allowed is practice",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _planned(dose: SeriesDose | DoseTally) -> bool:
    return bool(dose.planned_ug)


def _weighed(dose: SeriesDose | DoseTally) -> bool:
    return dose.ug_per_kg is not None


def _ratio(dose: SeriesDose | DoseTally) -> Fraction:
    return Fraction(dose.quantity_ug, dose.planned_ug)


def _mg_per_kg(dose: SeriesDose | DoseTally) -> Fraction:
    return Fraction(dose.ug_per_kg) / 1000


def _measured(series: DoseSeries, least: int,
              recent: int) -> tuple[str, Kept, Callable[[SeriesDose | DoseTally], Fraction]] | None:
    """Return the measure, the doses that have it, and its value; None if too few do."""
    # Against the plan where it is known, so that a prescribed step up is not creep.
    for measure, keep, value in (("ratio_to_plan", _planned, _ratio),
                                 ("mg_per_kg", _weighed, _mg_per_kg)):
        doses = kept(series, keep, recent)
        if doses.count >= least:
            return measure, doses, value
    return None


@DOSING.rule(CREEP)
def creep(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a patient whose median recent dose rose beyond policy over the earlier doses'."""
    policy_of = plan_policies(facts, policy)
    for series in dose_series(facts):
        patient_id = series.patient_id
        rules = policy_of(series.latest[-1].plan_version_id)
        # At least one recent dose, and at least one earlier dose to compare it with.
        recent_count = max(rules.value("creep_recent_doses"), 1)
        measured = _measured(series, max(rules.value("creep_min_doses"), recent_count + 1),
                             recent_count)
        if measured is None:
            continue
        measure, doses, value = measured
        before = median_of_counts([(value(dose), count) for dose, count in doses.earlier])
        now = median([value(dose) for dose in doses.recent])
        limit = rules.value("creep_max_rise")
        rise = now / before - 1 if before > 0 else None
        if rise is None or rise <= limit:
            continue
        recent = doses.recent
        yield CREEP.finding(
            Subject(SubjectKind.PATIENT, patient_id),
            f"The patient's last {recent_count} doses have a median {measure.replace('_', ' ')} "
            f"of {rounded(now, 3)}, {rounded(rise * 100, 0)}% above the {rounded(before, 3)} "
            f"of the {doses.count - recent_count} doses before them (at most "
            f"{rounded(limit * 100, 0)}% allowed). Check the prescriber's orders for a step "
            "up, and the patient's response and the nurse's wastes at these doses.",
            evidence(patient_id=patient_id, nurse_id=recent[-1].nurse_id, measure=measure,
                     recent_median=rounded(now, 3), earlier_median=rounded(before, 3),
                     rise=rounded(rise, 3), max_rise=limit, doses=doses.count,
                     recent_dose_ids=",".join(dose.id for dose in recent),
                     last_dose_at=recent[-1].given_at))


LOW_DOSE_LARGE_WASTE = RuleMeta(
    id="dosing.low_dose_large_waste", version=2,
    title="Dose far below plan with a large waste", severity=Severity.HIGH,
    rationale="A dose too small to treat, with the rest of the planned dose wasted, is how a "
              "nurse who keeps the drug would record it.",
    source="CLINICAL.md Drugs: 0.2 mg/kg is subtherapeutic against 0.5 mg/kg, Krystal et al. "
           "2019; Diversion: whole-dose waste, BD/CareFusion patents",
    mode=Mode.ENABLED)


@DOSING.rule(LOW_DOSE_LARGE_WASTE)
def low_dose_large_waste(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose far below its planned dose at a visit whose waste is large."""
    wasted, policy_of = wasted_by_visit(facts), plan_policies(facts, policy)
    for dose in facts.doses:
        if not dose.planned_ug or dose.visit_id is None:
            continue
        rules = policy_of(dose.plan_version_id)
        low, large = rules.value("low_dose_ratio"), rules.value("large_waste_ratio")
        waste = wasted.get(dose.visit_id, 0)
        if dose.quantity_ug >= low * dose.planned_ug or waste < large * dose.planned_ug:
            continue
        yield LOW_DOSE_LARGE_WASTE.finding(
            Subject(SubjectKind.NURSE, dose.nurse_id),
            f"A dose of {dose.quantity_ug} µg was given against a planned {dose.planned_ug} µg "
            f"(under {low} of it), and {waste} µg was wasted at the visit (at least {large} of "
            "the planned dose). Check the waste's witness, and ask the nurse why so little of "
            "the planned dose was given.",
            evidence(nurse_id=dose.nurse_id, patient_id=dose.patient_id, dose_id=dose.id,
                     visit_id=dose.visit_id, dose_ug=dose.quantity_ug,
                     planned_ug=dose.planned_ug, wasted_ug=waste, low_dose_ratio=low,
                     large_waste_ratio=large,
                     dose_ratio=rounded(Fraction(dose.quantity_ug, dose.planned_ug), 3)),
            # The nurse is the root cause: one case, each such dose an occurrence of it.
            occurrence=dose.id)


BELOW_PLAN_RUN = RuleMeta(
    id="dosing.below_plan_run", version=1,
    title="A nurse's last doses each under their plans, across patients",
    severity=Severity.HIGH,
    rationale="Honest doses follow their plan; a nurse whose last few doses each fall well "
              "under their own plans, for more than one patient, is giving less than she "
              "draws. A single very low dose with a large waste is dosing.low_dose_large_waste; "
              "this is the run of moderately low doses, whatever was wasted, that the peer "
              "comparison (dosing.plan_ratio_outlier) sees only once enough doses are in.",
    source="CLINICAL.md Diversion: doses under the order with the remainder wasted "
           "(BD/CareFusion patents); the run's length, ratio and patients are practice; each "
           "dose against its own plan, so one prescriber's plans do not set a nurse apart",
    mode=Mode.ENABLED)


@DOSING.rule(BELOW_PLAN_RUN)
def below_plan_run(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose last doses with a plan are each under the policy share of it,
    across at least the policy's number of patients."""
    length = policy.value("below_plan_run_doses")
    ratio = policy.value("below_plan_run_max_ratio")
    patients = policy.value("below_plan_run_min_patients")
    by_nurse: dict[str, list[Dose]] = {}
    for dose in facts.doses:
        if dose.planned_ug:
            by_nurse.setdefault(dose.nurse_id, []).append(dose)
    for nurse_id, doses in sorted(by_nurse.items()):
        run = sorted(doses, key=lambda d: (d.given_at, d.id))[-length:]
        if len(run) < length or any(d.quantity_ug >= ratio * d.planned_ug for d in run):
            continue
        seen = sorted({d.patient_id for d in run})
        if len(seen) < patients:
            continue
        given, planned = sum(d.quantity_ug for d in run), sum(d.planned_ug for d in run)
        highest = max(Fraction(d.quantity_ug, d.planned_ug) for d in run)
        last = run[-1]
        yield BELOW_PLAN_RUN.finding(
            Subject(SubjectKind.NURSE, nurse_id),
            f"The nurse's last {length} doses, for {len(seen)} patients, were each under "
            f"{ratio} of their own plans' doses (at most {rounded(highest, 3)} of it; "
            f"{given} µg given against {planned} µg planned). Check what she drew and "
            "wasted at these visits, and ask why each dose was under its plan.",
            evidence(nurse_id=nurse_id, patient_id=last.patient_id, dose_id=last.id,
                     dose_ids=",".join(d.id for d in run), patients=len(seen),
                     doses=length, given_ug=given, planned_ug=planned,
                     highest_ratio=rounded(highest, 3), max_ratio=ratio,
                     min_patients=patients),
            # The nurse is the root cause: one case, each run's last dose an occurrence of it.
            occurrence=last.id)
