"""Peer rules: a nurse's waste, doses and activity against the nurses in her role.

Each figure is normalised (per visit, per µg given, per planned dose, per day worked) and scored
with the modified z-score on the median of her role in the organisation, so that one extreme
colleague cannot hide another (Iglewicz & Hoaglin 1993). Three guards keep an ordinary
difference from looking extreme:

- a minimum sample: a nurse is scored only on enough visits, doses or days, and a role only
  with enough such nurses (`peer_min_peers`) for a median to mean anything;
- a minimum effect: her figure must differ from the peer median by `peer_min_difference` of it;
- a floor under the spread (stats.robust_spread): the scale is the largest of MAD / 0.6745,
  1.2533 x the mean absolute deviation and a policy share of the median, so a tiny MAD (peers
  who nearly tie) cannot turn 1.55 visits a day against 1.91 into a z of -27.

Doses are compared with their own plans (dose ÷ planned dose), so that one prescriber's high
plans never make the nurses who give them look like outliers; waste is compared with what her
doses' plans left in their containers (about 1 when honest, whatever her patients weigh),
against her peers and against her own earlier weeks.
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
from safeguards.stats import Basis, robust_spread, rounded

PEERS = Registry()

# Every peer rule's method, cited in its metadata.
METHOD = ("modified z-score on the role's median (Iglewicz & Hoaglin 1993), its scale the "
          "largest of MAD/0.6745, 1.2533 x mean absolute deviation (IBM SPSS) and a policy "
          "share of the median, as MAD implodes when peers nearly tie (Rousseeuw & Croux 1993, "
          "JASA 88:1273); minimum samples, minimum peers and a minimum relative difference")


@dataclass(frozen=True)
class Outlier:
    """A nurse whose figure stands out from her role's: by how much, and against how many."""

    nurse: NurseActivity
    value: Fraction
    peer_median: Fraction
    z: Fraction
    peers: int
    scale: Fraction
    basis: Basis


def _outliers(facts: Facts, policy: Policy,
              figure: Callable[[NurseActivity], Fraction | None],
              enough: Callable[[NurseActivity], bool], floor: str) -> Iterator[Outlier]:
    """Yield each nurse far enough from her role's median figure, with her modified z-score.

    Only nurses with `enough` of a sample and a figure are scored, and only in a role with at
    least `peer_min_peers` others; `floor` names the policy's spread floor for this figure.
    """
    roles: dict[str, list[tuple[NurseActivity, Fraction]]] = defaultdict(list)
    for nurse in facts.activity:
        value = figure(nurse) if enough(nurse) else None
        if value is not None:
            roles[nurse.role].append((nurse, value))
    min_difference = Fraction(policy.value("peer_min_difference"))
    for scored in roles.values():
        if len(scored) - 1 < policy.value("peer_min_peers"):
            continue
        spread = robust_spread([value for _, value in scored], policy.value(floor))
        for nurse, value in scored:
            z = spread.z(value)
            if z is None or spread.scale is None:
                continue
            if abs(value - spread.centre) < min_difference * abs(spread.centre):
                continue
            yield Outlier(nurse, value, spread.centre, z, len(scored) - 1, spread.scale,
                          spread.basis)


def _evidence(found: Outlier, unit: str, threshold: str, floor: str,
              policy: Policy, places: int = 3) -> dict[str, EvidenceValue]:
    return evidence(nurse_id=found.nurse.nurse_id, role=found.nurse.role,
                    **{unit: rounded(found.value, places), f"peer_median_{unit}":
                       rounded(found.peer_median, places)},
                    robust_z=rounded(found.z, 2), z_threshold=policy.value(threshold),
                    spread=rounded(found.scale, places + 1), spread_basis=str(found.basis),
                    spread_floor=policy.value(floor),
                    min_difference=policy.value("peer_min_difference"),
                    peers=found.peers, visits=found.nurse.visits, doses=found.nurse.doses,
                    days_worked=found.nurse.days_worked)


def _percent(share: Fraction) -> str:
    return f"{rounded(share * 100, 1)}%"


def _against(found: Outlier) -> str:
    return (f"the {found.peers + 1} nurses in her role ({found.nurse.role}) with enough "
            f"activity")


def _score(found: Outlier, limit: object) -> str:
    return f"modified z {rounded(found.z, 1)}, limit {limit}"


RATE_OUTLIER = RuleMeta(
    id="waste.rate_outlier", version=2, title="Waste per visit far above peers'",
    severity=Severity.MEDIUM,
    rationale="Skimming hides as waste: a nurse who wastes much more per visit than the "
              "nurses in her role is the first thing a diversion review looks at.",
    source="CLINICAL.md Diversion: more waste than usual (BD/CareFusion patents), peer score "
           f"within a role (Omnicell; Bluesight IRIS), per visit (heliometrics); {METHOD}",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PEERS.rule(RATE_OUTLIER)
def rate_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose wasted µg per visit is a high outlier among her role's."""
    limit = policy.value("waste_rate_z")
    least = policy.value("peer_min_visits")
    for found in _outliers(facts, policy, lambda n: n.wasted_ug_per_visit,
                           lambda n: n.visits >= least, "waste_rate_spread_floor"):
        if found.z < limit:
            continue
        yield RATE_OUTLIER.finding(
            Subject(SubjectKind.NURSE, found.nurse.nurse_id),
            f"The nurse wasted {rounded(found.value, 0)} µg per visit over {found.nurse.visits} "
            f"visits, against a median of {rounded(found.peer_median, 0)} µg among "
            f"{_against(found)} ({_score(found, limit)}). Check her wastes against the vials "
            f"and doses of those visits, and who witnessed them.",
            {**_evidence(found, "wasted_ug_per_visit", "waste_rate_z",
                         "waste_rate_spread_floor", policy),
             "wasted_ug": found.nurse.wasted_ug, "wastes": found.nurse.wastes})


SHARE_OUTLIER = RuleMeta(
    id="waste.share_outlier", version=2,
    title="Waste against what the plans left in the containers, above peers'",
    severity=Severity.MEDIUM,
    rationale="A nurse who wastes more than her doses' plans leave in their containers, by "
              "much more than the nurses in her role, may be wasting vials she never opened "
              "for a patient or keeping what she gave short. Set against each dose's own plan "
              "and container, an honest nurse wastes about what is left whatever her patients "
              "weigh, so light patients (more of each vial left over) do not set her apart.",
    source="CLINICAL.md Diversion: more waste than usual (BD/CareFusion patents), dispense = "
           "administered + wasted + returned (Bluesight), peer score within a role (Omnicell; "
           "Bluesight IRIS); scored as µg wasted over the µg her doses' plans left in their "
           "containers (containers needed x size - planned dose, per dose), about 1 when "
           f"honest; {METHOD}",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _of_remainder(ratio: Fraction) -> str:
    return f"{_percent(ratio)} of what the plans left"


@PEERS.rule(SHARE_OUTLIER)
def share_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose waste, over what her doses' plans left in their containers, is a high
    outlier in her role.

    What the plans left is summed per dose (NurseActivity.planned_remainder_ug): an honest
    nurse's waste is about it, however light or heavy her patients, so her figure is near 1.
    """
    limit = policy.value("waste_share_z")
    least = policy.value("peer_min_doses")
    for found in _outliers(facts, policy, lambda n: n.waste_of_remainder,
                           lambda n: n.doses >= least and n.planned_remainder_ug > 0,
                           "waste_share_spread_floor"):
        if found.z < limit:
            continue
        nurse = found.nurse
        yield SHARE_OUTLIER.finding(
            Subject(SubjectKind.NURSE, nurse.nurse_id),
            f"The nurse wasted {nurse.wasted_ug} µg in {nurse.wastes} wastes over "
            f"{nurse.doses} doses, where those doses' plans left {nurse.planned_remainder_ug} "
            f"µg in their containers: {_of_remainder(found.value)}, against a median of "
            f"{_of_remainder(found.peer_median)} among {_against(found)} "
            f"({_score(found, limit)}). Each dose is set against its own plan and container, "
            f"so her patients' weights do not enter. Check her wastes against the vials each "
            f"visit opened and the doses their plans set, with their witnesses.",
            {**_evidence(found, "waste_of_remainder", "waste_share_z",
                         "waste_share_spread_floor", policy),
             "wasted_ug": nurse.wasted_ug, "planned_remainder_ug": nurse.planned_remainder_ug,
             "administered_ug": nurse.administered_ug, "wastes": nurse.wastes})


SHARE_RISE = RuleMeta(
    id="waste.share_rise", version=2,
    title="Waste against what the plans left, risen against her own history",
    severity=Severity.MEDIUM,
    rationale="A nurse who starts wasting more than her doses' plans leave in their "
              "containers wastes more of what is left than she used to; her own earlier weeks "
              "are the baseline her vials and habits set, and her role's changes over the same "
              "days are the yardstick of an honest drift. Set against each dose's own plan, a "
              "change in her patients' weights does not move it.",
    source="CLINICAL.md Diversion: more waste than usual (BD/CareFusion patents), dispense = "
           "administered + wasted + returned (Bluesight); her recent µg wasted over what her "
           "doses' plans left in their containers, over her earlier figure in the scan window, "
           "that rise scored among her role's rises; minimum doses on both sides and a "
           f"minimum rise; {METHOD}",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _rise(nurse: NurseActivity) -> Fraction | None:
    earlier, recent = nurse.earlier_waste_of_remainder, nurse.recent_waste_of_remainder
    # Nothing wasted before leaves no rate to rise from: the comparison with peers judges her.
    if not earlier or recent is None:
        return None
    return recent / earlier


@PEERS.rule(SHARE_RISE)
def share_rise(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose recent waste, over what her plans left, rose well above her own
    earlier figure."""
    limit = policy.value("waste_share_rise_z")
    recent_least = policy.value("waste_share_min_recent_doses")
    earlier_least = policy.value("waste_share_min_earlier_doses")
    least_rise = 1 + Fraction(policy.value("waste_share_rise_min"))
    for found in _outliers(facts, policy, _rise,
                           lambda n: n.recent_since is not None
                           and n.recent_doses >= recent_least
                           and n.earlier_doses >= earlier_least,
                           "waste_share_rise_spread_floor"):
        if found.z < limit or found.value < least_rise:
            continue
        nurse = found.nurse
        recent, earlier = nurse.recent_waste_of_remainder, nurse.earlier_waste_of_remainder
        assert recent is not None and earlier is not None and nurse.recent_since is not None
        since = nurse.recent_since.date().isoformat()
        yield SHARE_RISE.finding(
            Subject(SubjectKind.NURSE, nurse.nurse_id),
            f"The nurse wasted {_of_remainder(recent)} in their containers over her "
            f"{nurse.recent_doses} doses since {since}, against {_of_remainder(earlier)} over "
            f"her {nurse.earlier_doses} doses before: {rounded(found.value, 2)} times her own "
            f"earlier figure, where the median change among {_against(found)} is "
            f"{rounded(found.peer_median, 2)} times ({_score(found, limit)}). Check her doses "
            f"and wastes since {since}: what each patient's plan called for, what each vial "
            f"held and who witnessed the wastes.",
            {**_evidence(found, "rise", "waste_share_rise_z",
                         "waste_share_rise_spread_floor", policy),
             "recent_since": since, "recent_doses": nurse.recent_doses,
             "earlier_doses": nurse.earlier_doses,
             "recent_waste_of_remainder": rounded(recent, 3),
             "earlier_waste_of_remainder": rounded(earlier, 3),
             "recent_wasted_ug": nurse.recent_wasted_ug,
             "recent_planned_remainder_ug": nurse.recent_planned_remainder_ug,
             "min_rise": policy.value("waste_share_rise_min")})


PLAN_RATIO_OUTLIER = RuleMeta(
    id="dosing.plan_ratio_outlier", version=1,
    title="Doses against their own plans, far from peers'",
    severity=Severity.MEDIUM,
    rationale="Nurses give the doses their patients' plans set; one whose doses come to much "
              "less (or more) of their plans than her colleagues' is recording something "
              "else. Each dose is set against its own plan, so one prescriber's high plans "
              "never make the nurses who give them look like outliers; her recent doses are "
              "judged on their own too, so a change shows within days.",
    source="CLINICAL.md Diversion: per-shift usage against peers in the same role, unusually "
           "low counts too (Omnicell; Bluesight IRIS); the sum of her doses over the sum of "
           "their plans' planned doses (a dose-weighted mean ratio), over the scan window and "
           f"over its last waste_share_recent_days, each against her peers' same figure; {METHOD}",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _plan_outliers(facts: Facts, policy: Policy) -> Iterator[tuple[Outlier, bool]]:
    """Yield each nurse's most extreme plan-ratio outlier, over the window or its last days,
    with whether it is the recent one."""
    limit = policy.value("administered_z")
    least = policy.value("peer_min_doses")
    recent_least = policy.value("plan_ratio_min_recent_doses")
    best: dict[str, tuple[Outlier, bool]] = {}
    windows = ((False, lambda n: n.plan_ratio, lambda n: n.planned_doses >= least),
               (True, lambda n: n.recent_plan_ratio,
                lambda n: n.recent_since is not None and n.recent_planned_doses >= recent_least))
    for recent, figure, enough in windows:
        for found in _outliers(facts, policy, figure, enough, "plan_ratio_spread_floor"):
            kept = best.get(found.nurse.nurse_id)
            if abs(found.z) >= limit and (kept is None or abs(found.z) > abs(kept[0].z)):
                best[found.nurse.nurse_id] = (found, recent)
    yield from best.values()


@PEERS.rule(PLAN_RATIO_OUTLIER)
def plan_ratio_outlier(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose doses, as a ratio of their plans', are an outlier in her role,
    over the scan window or over its last days."""
    limit = policy.value("administered_z")
    for found, recent in _plan_outliers(facts, policy):
        nurse = found.nurse
        direction = "above" if found.z > 0 else "below"
        check = ("whether her patients received what she recorded, and where the rest of "
                 "each vial went" if direction == "below" else
                 "who asked for more than the plans set, and the patients' responses")
        if recent:
            assert nurse.recent_since is not None
            since = nurse.recent_since.date().isoformat()
            doses = f"over her {nurse.recent_planned_doses} doses since {since}"
            figures = {"recent_since": since, "planned_doses": nurse.recent_planned_doses,
                       "planned_given_ug": nurse.recent_planned_given_ug,
                       "planned_ug": nurse.recent_planned_ug}
        else:
            doses = f"over {nurse.planned_doses} doses"
            figures = {"planned_doses": nurse.planned_doses,
                       "planned_given_ug": nurse.planned_given_ug,
                       "planned_ug": nurse.planned_ug}
        yield PLAN_RATIO_OUTLIER.finding(
            Subject(SubjectKind.NURSE, nurse.nurse_id),
            f"The nurse's doses came to {_percent(found.value)} of what their own plans set, "
            f"{doses}, {direction} the median of {_percent(found.peer_median)} among "
            f"{_against(found)} ({_score(found, f'±{limit}')}). Each dose is set against its "
            f"own plan, so the prescribers' doses do not enter. Check her doses against their "
            f"plans: {check}.",
            {**_evidence(found, "plan_ratio", "administered_z", "plan_ratio_spread_floor",
                         policy, places=4),
             "direction": direction, "window": "recent" if recent else "scan", **figures})


LOW_ACTIVITY = RuleMeta(
    id="activity.low_outlier", version=2, title="Far fewer visits per day worked than peers",
    severity=Severity.MEDIUM,
    rationale="Hours on the clock with little recorded work can hide time spent elsewhere; "
              "hospital systems flag unusually low activity as well as high.",
    source="CLINICAL.md Diversion: count per day worked (Epstein, Anesth Analg 2007), "
           f"unusually low activity counts too (Omnicell; Bluesight IRIS); {METHOD}",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@PEERS.rule(LOW_ACTIVITY)
def low_activity(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose visits per day worked are a low outlier among her role's."""
    limit = policy.value("activity_low_z")
    least = policy.value("peer_min_days_worked")
    for found in _outliers(facts, policy, lambda n: n.visits_per_day_worked,
                           lambda n: n.days_worked >= max(least, 1), "activity_spread_floor"):
        if found.z > -limit:
            continue
        yield LOW_ACTIVITY.finding(
            Subject(SubjectKind.NURSE, found.nurse.nurse_id),
            f"The nurse made {rounded(found.value, 2)} visits per day over "
            f"{found.nurse.days_worked} days worked, against a median of "
            f"{rounded(found.peer_median, 2)} among {_against(found)} "
            f"({_score(found, f'-{limit}')}). Check her schedule and check-ins for those "
            f"days: visits cancelled or moved, long gaps, travel.",
            _evidence(found, "visits_per_day", "activity_low_z", "activity_spread_floor",
                      policy, places=2))
