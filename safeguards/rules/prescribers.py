"""Prescriber rules: a plan written above the protocol dose, and prescribers against their peers.

A plan above the protocol dose is judged once, when it is written, about the plan: every dose
given under it follows from that one decision, so the doses are not each a case of their own
(`dosing.above_ceiling` leaves a dose within its justified plan's maximum to the plan's finding).

Prescribers are compared with each other, each against the *other* prescribers (leave one
out, so that with a handful of prescribers one outlier does not move the median and spread it
is judged on), on two figures per plan version: the mean planned mg/kg, and the frequency
overrides per plan version. A prescriber is compared only with enough plans and enough peers,
and flagged only with a real difference (a minimum effect) and a modified z-score on a spread
with a floor, so that prescribers who all write the protocol dose, or who never override,
do not make an ordinary difference look extreme.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from safeguards.facts import Facts, PlanFact
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.stats import robust_spread, rounded

PRESCRIBERS = Registry()

ABOVE_PROTOCOL = RuleMeta(
    id="prescriber.above_protocol", version=1, title="Plan written above the protocol dose",
    severity=Severity.MEDIUM,
    rationale="The protocol dose is 0.5 mg/kg; above it there is more dissociation and no "
              "added benefit, so a plan above it needs a stated reason and a second look. "
              "Judged once, as the plan is written, not again at each dose it orders.",
    source="CLINICAL.md Orders, authentication and plausibility: protocol dose 0.5 mg/kg over "
           "40 min, 1.0 mg/kg gave no added benefit, a plan above 0.5 mg/kg needs a stated "
           "reason (practice); Krystal et al. 2019; Fava et al. 2020",
    mode=Mode.ENABLED)


def _mg(ug_per_kg: Fraction) -> str:
    return f"{rounded(ug_per_kg / 1000, 3)} mg/kg"


def _basis(plan: PlanFact) -> str:
    """Return whether the highest planned dose is per kg or a fixed dose at the weight."""
    fixed = (Fraction(plan.dose_ug * 1000, plan.weight_g)
             if plan.dose_ug is not None and plan.weight_g else None)
    per_kg = plan.dose_ug_per_kg
    return "fixed_at_weight" if fixed is not None and (per_kg is None or fixed > per_kg) \
        else "per_kg"


@PRESCRIBERS.rule(ABOVE_PROTOCOL)
def above_protocol(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a plan version whose highest dose is above the protocol dose, as it is written."""
    # The organisation's protocol dose: a plan's own overrides cannot lift it for itself.
    protocol = Fraction(policy.value("protocol_mg_per_kg")) * 1000
    for plan in facts.plans:
        planned = plan.planned_ug_per_kg
        if planned is None or planned <= protocol:
            continue
        said = ("a justification was recorded with it" if plan.justified
                else "no justification was recorded")
        yield ABOVE_PROTOCOL.finding(
            Subject(SubjectKind.PLAN, plan.plan_id),
            f"Version {plan.version} of the patient's plan was written at {_mg(planned)}, "
            f"{rounded(planned / protocol, 2)} times the {_mg(protocol)} protocol dose; "
            f"{said}. Check the justification against the patient's record, and this "
            "prescriber's other plans.",
            evidence(plan_id=plan.plan_id, plan_version_id=plan.id, version=plan.version,
                     patient_id=plan.patient_id, prescriber_id=plan.prescriber_id,
                     planned_mg_per_kg=rounded(planned / 1000, 3),
                     protocol_mg_per_kg=policy.value("protocol_mg_per_kg"),
                     ratio_to_protocol=rounded(planned / protocol, 2), dose_basis=_basis(plan),
                     weight_g=plan.weight_g if _basis(plan) == "fixed_at_weight" else None,
                     max_dose_ug=plan.max_dose_ug,
                     justified="yes" if plan.justified else "no",
                     written_at=plan.created_at),
            # One case per plan; each version written above the protocol dose is an occurrence.
            occurrence=plan.id, severity=None if plan.justified else Severity.HIGH)


PEER_OUTLIER = RuleMeta(
    id="prescriber.peer_outlier", version=1,
    title="Plan doses or frequency overrides far above other prescribers'",
    severity=Severity.MEDIUM,
    rationale="Prescribers in one organisation treat alike patients under one protocol; one "
              "whose plans order far more ketamine, or who overrides the frequency limits far "
              "more often, than the others is where a reviewer looks for over-prescribing.",
    source="CLINICAL.md Orders, authentication and plausibility: protocol dose 0.5 mg/kg "
           "(Krystal et al. 2019); Diversion: peer score within a role (Omnicell; Bluesight "
           "IRIS); modified z-score, Iglewicz & Hoaglin 1993, each against the others (leave "
           "one out), with a floor on the spread and a minimum effect size",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@dataclass(frozen=True)
class Figure:
    """One figure compared across prescribers: how it is read from plans, and its limits."""

    name: str
    unit: str
    of: Callable[[Sequence[PlanFact]], Fraction | None]
    # The smallest difference worth a review, and the least spread, from the peers' median.
    min_difference: Callable[[Fraction, Policy], Fraction]
    spread_floor: Callable[[Fraction, Policy], Fraction]
    check_next: str


def _mean_ug_per_kg(plans: Sequence[PlanFact]) -> Fraction | None:
    known = [plan.planned_ug_per_kg for plan in plans if plan.planned_ug_per_kg is not None]
    return sum(known, Fraction(0)) / len(known) if known else None


def _overrides_per_plan(plans: Sequence[PlanFact]) -> Fraction | None:
    return Fraction(sum(plan.overrides for plan in plans), len(plans)) if plans else None


def _value(name: str) -> Callable[[Fraction, Policy], Fraction]:
    return lambda centre, policy: Fraction(policy.value(name))


def _share(name: str) -> Callable[[Fraction, Policy], Fraction]:
    return lambda centre, policy: Fraction(policy.value(name)) * abs(centre)


FIGURES = (
    Figure("planned_ug_per_kg", "µg/kg per plan version", _mean_ug_per_kg,
           _share("prescriber_min_dose_difference"), _share("prescriber_dose_spread_floor"),
           "Check the doses of the prescriber's plans and the justifications recorded with them"),
    Figure("overrides_per_plan", "frequency overrides per plan version", _overrides_per_plan,
           _value("prescriber_min_override_difference"),
           _value("prescriber_override_spread_floor"),
           "Check the reasons the prescriber gave for booking past the frequency limits"),
)


@dataclass(frozen=True)
class Standing:
    """A prescriber's figure against the other prescribers': their median, spread and z."""

    prescriber_id: str
    plans: int
    versions: int
    value: Fraction
    peer_median: Fraction
    scale: Fraction
    basis: str
    z: Fraction
    peers: int


def _by_prescriber(facts: Facts, least: int) -> dict[str, list[PlanFact]]:
    plans: dict[str, list[PlanFact]] = defaultdict(list)
    for plan in facts.plans:
        plans[plan.prescriber_id].append(plan)
    # Plans, not versions: one patient's plan revised again and again is still one patient.
    return {prescriber: mine for prescriber, mine in sorted(plans.items())
            if len({plan.plan_id for plan in mine}) >= max(least, 1)}


def _standings(facts: Facts, policy: Policy, figure: Figure) -> Iterator[Standing]:
    """Yield each prescriber whose figure is above the others' by the effect and z limits."""
    plans = _by_prescriber(facts, policy.value("prescriber_min_plans"))
    values = {prescriber: value for prescriber, mine in plans.items()
              if (value := figure.of(mine)) is not None}
    if len(values) - 1 < policy.value("prescriber_min_peers"):
        return
    for prescriber, value in values.items():
        others = [other for who, other in values.items() if who != prescriber]
        spread = robust_spread(others)
        floor = figure.spread_floor(spread.centre, policy)
        scale, basis = max((spread.scale or Fraction(0), spread.basis.value), (floor, "floor"),
                           key=lambda candidate: candidate[0])
        if not scale or value - spread.centre < figure.min_difference(spread.centre, policy):
            continue
        mine = plans[prescriber]
        yield Standing(prescriber, len({plan.plan_id for plan in mine}), len(mine), value,
                       spread.centre, scale, basis, (value - spread.centre) / scale, len(others))


@PRESCRIBERS.rule(PEER_OUTLIER)
def peer_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a prescriber whose planned mg/kg or overrides per plan far exceed the others'."""
    limit = policy.value("prescriber_peer_z")
    for figure in FIGURES:
        for found in _standings(facts, policy, figure):
            if found.z < limit:
                continue
            yield PEER_OUTLIER.finding(
                Subject(SubjectKind.PRESCRIBER, found.prescriber_id),
                f"The prescriber's {found.versions} plan versions ({found.plans} plans) average "
                f"{rounded(found.value, 3)} {figure.unit}, against a median of "
                f"{rounded(found.peer_median, 3)} for the {found.peers} other prescribers "
                f"(modified z {rounded(found.z, 1)}, limit {limit}). {figure.check_next}, "
                "against the patients' records.",
                evidence(prescriber_id=found.prescriber_id, figure=figure.name,
                         value=rounded(found.value, 3), peer_median=rounded(found.peer_median, 3),
                         scale=rounded(found.scale, 3), scale_basis=found.basis,
                         robust_z=rounded(found.z, 2), z_threshold=limit, peers=found.peers,
                         plans=found.plans, plan_versions=found.versions),
                key=(figure.name,))
