"""Peer outliers: waste per visit, mg/kg per dose and visits per day against a role's nurses."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import pytest

from safeguards import NurseActivity
from safeguards.rules.peers import PEERS
from tests.safeguards.factories import facts, found, ids

# Twenty peers around a median of 1000 whose MAD is 67.45, so that the modified z-score of a
# nurse above all of them is exactly (x - 1000) / 100: 3.5 at 1350.
SPREAD = Fraction("67.45")
PEER_VALUES = ([1000 - 4 * SPREAD] * 5 + [1000 - SPREAD] * 5 + [Fraction(1000)]
               + [1000 + SPREAD] * 5 + [1000 + 4 * SPREAD] * 4)
# The same peers mirrored, for a nurse below all of them: z is (x - 1000) / 100 again.
LOW_PEER_VALUES = [2000 - value for value in PEER_VALUES]
SAMPLE = 20


def wasting(nurse_id: str, per_visit: Fraction, visits: int = SAMPLE,
            role: str = "nurse") -> NurseActivity:
    return NurseActivity(nurse_id, role, visits=visits, days_worked=10, doses=visits,
                         administered_ug=35_000 * visits, wastes=visits,
                         wasted_ug=int(per_visit * visits),
                         ug_per_kg_total=Decimal(500 * visits))


def dosing(nurse_id: str, per_dose: Fraction, doses: int = SAMPLE) -> NurseActivity:
    total = per_dose * doses
    return NurseActivity(nurse_id, "nurse", visits=doses, days_worked=10, doses=doses,
                         administered_ug=35_000 * doses, wastes=doses, wasted_ug=15_000 * doses,
                         ug_per_kg_total=Decimal(total.numerator) / total.denominator)


def working(nurse_id: str, per_day: Fraction, days: int = SAMPLE) -> NurseActivity:
    # Visits per day worked around 1000 keeps the same exact figures; only ratios matter.
    return NurseActivity(nurse_id, "nurse", visits=int(per_day * days), days_worked=days,
                         doses=100, administered_ug=3_500_000, wastes=100, wasted_ug=1_500_000,
                         ug_per_kg_total=Decimal(50_000))


def team(make: Callable[..., NurseActivity], target: Fraction,
         values: list[Fraction] = PEER_VALUES, **target_fields) -> tuple[NurseActivity, ...]:
    """Return the peers at `values` and nurse-x at `target`."""
    peers = [make(f"peer-{n}", value) for n, value in enumerate(values)]
    return (*peers, make("nurse-x", target, **target_fields))


def flagged(rule_id: str, activity: tuple, overrides: dict | None = None) -> set[str]:
    return {f.subject.id for f in found(PEERS, facts(activity=activity), overrides)
            if f.rule_id == rule_id}


RATE_CASES = [
    # waste_rate_z 3.5: 1350 µg per visit is z 3.5; 20 visits make the micrograms whole.
    ("z exactly 3.5", team(wasting, Fraction(1350)), {}, True),
    ("z just under 3.5", team(wasting, Fraction(26_999, 20)), {}, False),
    ("z just over 3.5", team(wasting, Fraction(27_001, 20)), {}, True),
    ("z 3.5, limit raised", team(wasting, Fraction(1350)), {"waste_rate_z": Decimal("3.6")},
     False),
    # peer_min_visits 20
    ("19 visits", team(wasting, Fraction(2000), visits=19), {}, False),
    ("min visits lowered", team(wasting, Fraction(2000), visits=19), {"peer_min_visits": 19},
     True),
    # peer_min_peers 8
    ("8 peers", team(wasting, Fraction(2000), values=PEER_VALUES[6:14]), {}, True),
    ("7 peers", team(wasting, Fraction(2000), values=PEER_VALUES[6:13]), {}, False),
    ("another role's peers", team(wasting, Fraction(2000), role="lead"), {}, False),
    ("far below is not over-wasting", team(wasting, Fraction(100)), {}, False),
]


@pytest.mark.parametrize(("activity", "overrides", "expected"), [c[1:] for c in RATE_CASES],
                         ids=[c[0] for c in RATE_CASES])
def test_waste_rate_outlier_thresholds(activity, overrides, expected):
    assert ("nurse-x" in flagged("waste.rate_outlier", activity, overrides)) is expected


MIN_DIFFERENCE_CASES = [
    # Peers nearly identical (MAD 0): peer_min_difference 0.15 of the median decides.
    ("15% over", Fraction(1150), True),
    ("just under 15%", Fraction(22_999, 20), False),
    ("10% over", Fraction(1100), False),
]


@pytest.mark.parametrize(("target", "expected"), [c[1:] for c in MIN_DIFFERENCE_CASES],
                         ids=[c[0] for c in MIN_DIFFERENCE_CASES])
def test_a_large_z_over_a_small_difference_is_not_an_outlier(target, expected):
    alike = [Fraction(1000)] * 19 + [Fraction(1001)]
    activity = team(wasting, target, values=alike)
    assert ("nurse-x" in flagged("waste.rate_outlier", activity)) is expected


def test_identical_peers_give_no_score_and_no_finding():
    assert flagged("waste.rate_outlier", team(wasting, Fraction(1000),
                                              values=[Fraction(1000)] * 20)) == set()


def test_waste_rate_evidence_and_key():
    [finding] = found(PEERS, facts(activity=team(wasting, Fraction(1500))))
    assert finding.evidence["nurse_id"] == "nurse-x"
    assert finding.evidence["robust_z"] == Decimal("5.00")
    assert finding.evidence["wasted_ug_per_visit"] == Decimal("1500.000")
    assert finding.evidence["peer_median_wasted_ug_per_visit"] == Decimal("1000.000")
    assert finding.evidence["peers"] == 20
    [again] = found(PEERS, facts(activity=team(wasting, Fraction(1800), visits=40)))
    assert again.dedup_key == finding.dedup_key


ADMINISTERED_CASES = [
    # administered_z 3.5 either way, on µg/kg per dose
    ("z exactly 3.5", Fraction(1350), True),
    ("z just under 3.5", Fraction(26_999, 20), False),
    ("z exactly -3.5", Fraction(650), True),
    ("z just over -3.5", Fraction(13_001, 20), False),
    ("z just under -3.5", Fraction(12_999, 20), True),
]



@pytest.mark.parametrize(("target", "expected"), [c[1:] for c in ADMINISTERED_CASES],
                         ids=[c[0] for c in ADMINISTERED_CASES])
def test_administered_outlier_thresholds_high_and_low(target, expected):
    activity = team(dosing, target, values=LOW_PEER_VALUES if target < 1000 else PEER_VALUES)
    assert ("nurse-x" in flagged("dosing.administered_outlier", activity)) is expected


def test_administered_outlier_needs_enough_doses():
    activity = team(dosing, Fraction(2000), doses=19)
    assert flagged("dosing.administered_outlier", activity) == set()
    [finding] = found(PEERS, facts(activity=team(dosing, Fraction(500), values=LOW_PEER_VALUES)))
    assert finding.evidence["direction"] == "below"
    assert finding.summary.startswith("The nurse gave 0.500 mg/kg per dose over 20 doses, below")


ACTIVITY_CASES = [
    # activity_low_z 3.5 below: 650 visits per day is z -3.5 in these units
    ("z exactly -3.5", Fraction(650), {}, True),
    ("z just over -3.5", Fraction(13_001, 20), {}, False),
    ("high activity is not this rule's", Fraction(2000), {}, False),
    ("limit raised", Fraction(650), {"activity_low_z": Decimal("3.6")}, False),
]


@pytest.mark.parametrize(("target", "overrides", "expected"),
                         [c[1:] for c in ACTIVITY_CASES], ids=[c[0] for c in ACTIVITY_CASES])
def test_low_activity_thresholds(target, overrides, expected):
    activity = team(working, target, values=LOW_PEER_VALUES)
    assert ("nurse-x" in flagged("activity.low_outlier", activity, overrides)) is expected


@pytest.mark.parametrize(("days", "expected"), [(9, False), (10, True), (11, True)])
def test_low_activity_needs_the_minimum_days_worked(days, expected):
    # peer_min_days_worked 10
    activity = team(working, Fraction(500), values=LOW_PEER_VALUES, days=days)
    assert ("nurse-x" in flagged("activity.low_outlier", activity)) is expected


def honest_team(rng: random.Random, nurses: int, visits: int,
                over_waste: float = 1.0) -> tuple[NurseActivity, ...]:
    """Return nurses whose wastes vary at random; nurse-0 wastes `over_waste` times more."""
    team = []
    for n in range(nurses):
        factor = over_waste if n == 0 else 1.0
        wasted = sum(int(max(rng.gauss(15_000, 5_000), 0) * factor) for _ in range(visits))
        days = rng.randint(visits // 3, visits // 2)
        ug_per_kg = sum(Decimal(round(rng.gauss(500, 25))) for _ in range(visits))
        team.append(NurseActivity(f"nurse-{n}", "nurse", visits=visits, days_worked=days,
                                  doses=visits, administered_ug=35_000 * visits, wastes=visits,
                                  wasted_ug=wasted, ug_per_kg_total=ug_per_kg))
    return tuple(team)


def test_an_honest_team_raises_no_peer_finding_but_a_30_percent_over_waster_is_caught():
    rng = random.Random(7)
    for _ in range(25):
        assert found(PEERS, facts(activity=honest_team(rng, nurses=40, visits=150))) == []
    findings = found(PEERS, facts(activity=honest_team(rng, 40, 150, over_waste=1.3)))
    assert ids(findings) == ["waste.rate_outlier"]
    assert findings[0].subject.id == "nurse-0"
