"""Dosing rules across sessions: doses creeping upward, and doses far under plan with much waste.

The per-session ceilings (`dosing.above_plan_max`, `dosing.above_ceiling`) are monitoring
rules; these look at a patient's doses together and at a dose beside its visit's waste.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

from safeguards.facts import Dose, Facts
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.rules.indexes import doses_by_patient, plan_policies, wasted_by_visit
from safeguards.stats import median, rounded

DOSING = Registry()

CREEP = RuleMeta(
    id="dosing.creep", version=1, title="Doses creeping upward", severity=Severity.MEDIUM,
    rationale="A patient's recent doses well above the earlier ones, for the same plan, point "
              "to tolerance, to pressure on the nurse, or to doses recorded that were not given.",
    source="CLINICAL.md Drugs: steep dose-response, more dissociation and no added benefit at "
           "higher doses, Krystal et al. 2019; Fava 2017; the rise allowed is practice",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _measured(doses: list[Dose], least: int) -> tuple[str, list[Dose], list[Fraction]] | None:
    """Return the measure, the doses that have it, and their values; None if too few do."""
    # Against the plan where it is known, so that a prescribed step up is not creep.
    planned = [dose for dose in doses if dose.planned_ug]
    if len(planned) >= least:
        return "ratio_to_plan", planned, [Fraction(d.quantity_ug, d.planned_ug) for d in planned]
    weighed = [dose for dose in doses if dose.ug_per_kg is not None]
    if len(weighed) >= least:
        return "mg_per_kg", weighed, [Fraction(d.ug_per_kg) / 1000 for d in weighed]
    return None


@DOSING.rule(CREEP)
def creep(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a patient whose median recent dose rose beyond policy over the earlier doses'."""
    policy_of = plan_policies(facts, policy)
    for patient_id, doses in doses_by_patient(facts).items():
        rules = policy_of(doses[-1].plan_version_id)
        # At least one recent dose, and at least one earlier dose to compare it with.
        recent_count = max(rules.value("creep_recent_doses"), 1)
        measured = _measured(doses, max(rules.value("creep_min_doses"), recent_count + 1))
        if measured is None:
            continue
        measure, kept, values = measured
        before, now = median(values[:-recent_count]), median(values[-recent_count:])
        limit = rules.value("creep_max_rise")
        rise = now / before - 1 if before > 0 else None
        if rise is None or rise <= limit:
            continue
        recent = kept[-recent_count:]
        yield CREEP.finding(
            Subject(SubjectKind.PATIENT, patient_id),
            f"The patient's last {recent_count} doses have a median {measure.replace('_', ' ')} "
            f"of {rounded(now, 3)}, {rounded(rise * 100, 0)}% above the {rounded(before, 3)} "
            f"of the {len(values) - recent_count} doses before them (at most "
            f"{rounded(limit * 100, 0)}% allowed). Check the prescriber's orders for a step "
            "up, and the patient's response and the nurse's wastes at these doses.",
            evidence(patient_id=patient_id, nurse_id=recent[-1].nurse_id, measure=measure,
                     recent_median=rounded(now, 3), earlier_median=rounded(before, 3),
                     rise=rounded(rise, 3), max_rise=limit, doses=len(values),
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
