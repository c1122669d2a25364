"""Peer rules: a nurse's waste, dosing and activity against the nurses in her role.

Each figure is normalised (per visit, per dose, per day worked) and scored with the modified
z-score on the median and MAD of her role in the organisation, so that one extreme colleague
cannot hide another. Small samples are left out, and a score needs a real difference behind
it: when peers barely differ, a z-score is large over nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

from safeguards.facts import Facts, NurseActivity
from safeguards.findings import EvidenceValue, Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.stats import median, robust_scores, rounded

PEERS = Registry()


@dataclass(frozen=True)
class Outlier:
    """A nurse whose figure stands out from her role's: by how much, and against how many."""

    nurse: NurseActivity
    value: Fraction
    peer_median: Fraction
    z: Fraction
    peers: int


def _outliers(facts: Facts, policy: Policy,
              figure: Callable[[NurseActivity], Fraction | None],
              sample: Callable[[NurseActivity], int], least: int) -> Iterator[Outlier]:
    """Yield each nurse far enough from her role's median figure, with her modified z-score.

    `figure` is one of NurseActivity's per-visit, per-dose or per-day figures, never None
    here: a nurse is compared only with a sample of at least one.
    """
    roles: dict[str, list[NurseActivity]] = defaultdict(list)
    for nurse in facts.activity:
        # At least one: the figures are per visit, dose or day.
        if sample(nurse) >= max(least, 1):
            roles[nurse.role].append(nurse)
    min_difference = Fraction(policy.value("peer_min_difference"))
    for nurses in roles.values():
        if len(nurses) - 1 < policy.value("peer_min_peers"):
            continue
        values = [figure(nurse) for nurse in nurses]
        centre = median(values)
        for nurse, value, z in zip(nurses, values, robust_scores(values), strict=True):
            if z is None or abs(value - centre) < min_difference * abs(centre):
                continue
            yield Outlier(nurse, value, centre, z, len(nurses) - 1)


def _evidence(found: Outlier, unit: str, threshold: str,
              policy: Policy) -> dict[str, EvidenceValue]:
    return evidence(nurse_id=found.nurse.nurse_id, role=found.nurse.role,
                    **{unit: rounded(found.value, 3), f"peer_median_{unit}":
                       rounded(found.peer_median, 3)},
                    robust_z=rounded(found.z, 2), z_threshold=policy.value(threshold),
                    peers=found.peers, visits=found.nurse.visits, doses=found.nurse.doses,
                    days_worked=found.nurse.days_worked)


RATE_OUTLIER = RuleMeta(
    id="waste.rate_outlier", version=1, title="Waste per visit far above peers'",
    severity=Severity.MEDIUM,
    rationale="Skimming hides as waste: a nurse who wastes much more per visit than the "
              "nurses in her role is the first thing a diversion review looks at.",
    source="CLINICAL.md Diversion: more waste than usual (BD/CareFusion patents), peer score "
           "within a role (Omnicell; Bluesight IRIS), per visit (heliometrics); modified "
           "z-score, Iglewicz & Hoaglin 1993",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PEERS.rule(RATE_OUTLIER)
def rate_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose wasted µg per visit is a high outlier among her role's."""
    limit = policy.value("waste_rate_z")
    for found in _outliers(facts, policy, lambda n: n.wasted_ug_per_visit,
                          lambda n: n.visits, policy.value("peer_min_visits")):
        if found.z < limit:
            continue
        yield RATE_OUTLIER.finding(
            Subject(SubjectKind.NURSE, found.nurse.nurse_id),
            f"The nurse wasted {rounded(found.value, 0)} µg per visit over {found.nurse.visits} "
            f"visits; the median of the {found.peers + 1} nurses in her role "
            f"({found.nurse.role}) is "
            f"{rounded(found.peer_median, 0)} µg (modified z {rounded(found.z, 1)}, limit "
            f"{limit}).",
            {**_evidence(found, "wasted_ug_per_visit", "waste_rate_z", policy),
             "wasted_ug": found.nurse.wasted_ug, "wastes": found.nurse.wastes})


ADMINISTERED_OUTLIER = RuleMeta(
    id="dosing.administered_outlier", version=1, title="mg/kg per dose far from peers'",
    severity=Severity.MEDIUM,
    rationale="Nurses in one role give the doses their patients' plans set; one who records "
              "much more (or much less) per dose than the rest is recording something else.",
    source="CLINICAL.md Diversion: per-shift usage against peers in the same role, unusually "
           "low counts too (Omnicell; Bluesight IRIS); modified z-score, Iglewicz & Hoaglin 1993",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PEERS.rule(ADMINISTERED_OUTLIER)
def administered_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose mg/kg per dose is a high or low outlier among her role's."""
    limit = policy.value("administered_z")
    for found in _outliers(facts, policy, lambda n: n.ug_per_kg_per_dose,
                          lambda n: n.doses, policy.value("peer_min_doses")):
        if abs(found.z) < limit:
            continue
        direction = "above" if found.z > 0 else "below"
        yield ADMINISTERED_OUTLIER.finding(
            Subject(SubjectKind.NURSE, found.nurse.nurse_id),
            f"The nurse gave {rounded(found.value / 1000, 3)} mg/kg per dose over "
            f"{found.nurse.doses} doses, {direction} the {rounded(found.peer_median / 1000, 3)} "
            f"mg/kg median of the {found.peers + 1} nurses in her role ({found.nurse.role}; "
            f"modified z "
            f"{rounded(found.z, 1)}, limit ±{limit}).",
            {**_evidence(found, "ug_per_kg_per_dose", "administered_z", policy),
             "direction": direction, "administered_ug": found.nurse.administered_ug})


LOW_ACTIVITY = RuleMeta(
    id="activity.low_outlier", version=1, title="Far fewer visits per day worked than peers",
    severity=Severity.MEDIUM,
    rationale="Hours on the clock with little recorded work can hide time spent elsewhere; "
              "hospital systems flag unusually low activity as well as high.",
    source="CLINICAL.md Diversion: count per day worked (Epstein, Anesth Analg 2007), "
           "unusually low activity counts too (Omnicell; Bluesight IRIS); modified z-score, "
           "Iglewicz & Hoaglin 1993",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PEERS.rule(LOW_ACTIVITY)
def low_activity(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose visits per day worked are a low outlier among her role's."""
    limit = policy.value("activity_low_z")
    for found in _outliers(facts, policy, lambda n: n.visits_per_day_worked,
                          lambda n: n.days_worked, policy.value("peer_min_days_worked")):
        if found.z > -limit:
            continue
        yield LOW_ACTIVITY.finding(
            Subject(SubjectKind.NURSE, found.nurse.nurse_id),
            f"The nurse made {rounded(found.value, 2)} visits per day over "
            f"{found.nurse.days_worked} days worked; the median of the {found.peers + 1} nurses "
            f"in her role ({found.nurse.role}) is {rounded(found.peer_median, 2)} (modified z "
            f"{rounded(found.z, 1)}, limit -{limit}).",
            _evidence(found, "visits_per_day", "activity_low_z", policy))
