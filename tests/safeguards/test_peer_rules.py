"""Peer outliers: waste per visit and against what the plans left, doses against their plans,
visits per day, and a nurse's recent waste against her own history, each at and around its
thresholds."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from safeguards import NurseActivity
from safeguards.rules.peers import PEERS
from tests.safeguards.factories import AS_OF, facts, found, ids

# Twenty peers around a median of 1000 whose MAD is 67.45 and whose mean absolute deviation
# is small enough (1.253314 x it stays under 100 up to a nurse 394 away), so that the modified
# z-score of a nurse above all of them is exactly (x - 1000) / 100: 3.5 at 1350. Every spread
# floor (at most 10% of the median) is at most 100 too.
SPREAD = Fraction("67.45")
PEER_VALUES = [1000 - SPREAD] * 10 + [Fraction(1000)] + [1000 + SPREAD] * 9
# The same peers mirrored, for a nurse below all of them: z is (x - 1000) / 100 again.
LOW_PEER_VALUES = [2000 - value for value in PEER_VALUES]
SAMPLE = 20
RECENT_SINCE = AS_OF - timedelta(days=14)


def whole(value: Fraction) -> int:
    assert value.denominator == 1, value
    return int(value)


def wasting(nurse_id: str, per_visit: Fraction, visits: int = SAMPLE,
            role: str = "nurse") -> NurseActivity:
    return NurseActivity(nurse_id, role, visits=visits, days_worked=10, doses=visits,
                         administered_ug=35_000 * visits, wastes=visits,
                         wasted_ug=whole(per_visit * visits))


def sharing(nurse_id: str, per_mille: Fraction, doses: int = SAMPLE,
            role: str = "nurse") -> NurseActivity:
    """A nurse who wastes per_mille / 1000 of what her doses' plans left in their containers."""
    return NurseActivity(nurse_id, role, visits=doses, days_worked=10, doses=doses,
                         administered_ug=1000 * doses, wastes=doses,
                         wasted_ug=whole(per_mille * doses), planned_remainder_ug=1000 * doses)


def planning(nurse_id: str, per_mille: Fraction, doses: int = SAMPLE,
             role: str = "nurse") -> NurseActivity:
    """A nurse whose doses come to per_mille / 1000 of what their plans set."""
    return NurseActivity(nurse_id, role, visits=doses, days_worked=10, doses=doses,
                         administered_ug=whole(per_mille * doses), wastes=0, wasted_ug=0,
                         planned_doses=doses, planned_given_ug=whole(per_mille * doses),
                         planned_ug=1000 * doses)


def rising(nurse_id: str, per_mille: Fraction, recent: int = 20, earlier: int = 40,
           role: str = "nurse") -> NurseActivity:
    """A nurse who wasted what her plans left before and per_mille / 1000 of it recently."""
    earlier_ug, recent_ug = 1000 * earlier, 1000 * recent
    return NurseActivity(nurse_id, role, visits=recent + earlier, days_worked=10,
                         doses=recent + earlier, administered_ug=earlier_ug + recent_ug,
                         wastes=recent + earlier,
                         wasted_ug=earlier_ug + whole(per_mille * recent),
                         recent_since=RECENT_SINCE, recent_doses=recent,
                         recent_administered_ug=recent_ug,
                         recent_wasted_ug=whole(per_mille * recent),
                         planned_remainder_ug=earlier_ug + recent_ug,
                         recent_planned_remainder_ug=recent_ug)


def working(nurse_id: str, per_day: Fraction, days: int = SAMPLE) -> NurseActivity:
    # Visits per day worked around 1000 keeps the same exact figures; only ratios matter.
    return NurseActivity(nurse_id, "nurse", visits=whole(per_day * days), days_worked=days,
                         doses=100, administered_ug=3_500_000, wastes=100, wasted_ug=1_500_000)


def team(make: Callable[..., NurseActivity], target: Fraction,
         values: list[Fraction] = PEER_VALUES, **target_fields) -> tuple[NurseActivity, ...]:
    """Return the peers at `values` and nurse-x at `target`."""
    peers = [make(f"peer-{n}", value) for n, value in enumerate(values)]
    return (*peers, make("nurse-x", target, **target_fields))


def flagged(rule_id: str, activity: tuple, overrides: dict | None = None) -> set[str]:
    return {f.subject.id for f in found(PEERS, facts(activity=activity), overrides)
            if f.rule_id == rule_id}


def one(rule_id: str, activity: tuple, overrides: dict | None = None):
    [finding] = [f for f in found(PEERS, facts(activity=activity), overrides)
                 if f.rule_id == rule_id]
    return finding


# The thresholds every peer rule shares, run on each rule's figure: (rule, make, sample field).
HIGH_RULES = [
    ("waste.rate_outlier", wasting, "visits", "waste_rate_z", "peer_min_visits"),
    ("waste.share_outlier", sharing, "doses", "waste_share_z", "peer_min_doses"),
    ("dosing.plan_ratio_outlier", planning, "doses", "administered_z", "peer_min_doses"),
]


def shared_cases(make, sample, limit, least):
    return [
        ("z exactly 3.5", team(make, Fraction(1350)), {}, True),
        ("z just under 3.5", team(make, Fraction(26_999, 20)), {}, False),
        ("z just over 3.5", team(make, Fraction(27_001, 20)), {}, True),
        ("z 3.5, limit raised", team(make, Fraction(1350)), {limit: Decimal("3.6")}, False),
        ("19 of the sample", team(make, Fraction(1350), **{sample: 19}), {}, False),
        ("20 of the sample", team(make, Fraction(1350), **{sample: 20}), {}, True),
        ("minimum sample lowered", team(make, Fraction(1350), **{sample: 19}), {least: 19},
         True),
        # peer_min_peers 8: with 8 others the scale is the floor or the mean deviation, and a
        # nurse twice the median stands out either way.
        ("8 peers", team(make, Fraction(2000), values=PEER_VALUES[6:14]), {}, True),
        ("7 peers", team(make, Fraction(2000), values=PEER_VALUES[6:13]), {}, False),
        ("7 peers, minimum lowered", team(make, Fraction(2000), values=PEER_VALUES[6:13]),
         {"peer_min_peers": 7}, True),
        ("another role's peers", team(make, Fraction(2000), role="lead"), {}, False),
        ("at the median", team(make, Fraction(1000)), {}, False),
    ]


@pytest.mark.parametrize(
    ("rule_id", "activity", "overrides", "expected"),
    [(rule_id, *case[1:]) for rule_id, make, sample, limit, least in HIGH_RULES
     for case in shared_cases(make, sample, limit, least)],
    ids=[f"{rule_id}: {case[0]}" for rule_id, make, sample, limit, least in HIGH_RULES
         for case in shared_cases(make, sample, limit, least)])
def test_high_outlier_thresholds(rule_id, activity, overrides, expected):
    assert ("nurse-x" in flagged(rule_id, activity, overrides)) is expected


@pytest.mark.parametrize(("rule_id", "make", "expected"), [
    ("waste.rate_outlier", wasting, False),
    ("waste.share_outlier", sharing, False),
    # Doses far below their plans are the skimmer's signature.
    ("dosing.plan_ratio_outlier", planning, True),
])
def test_far_below_is_flagged_only_for_doses_against_plans(rule_id, make, expected):
    activity = team(make, Fraction(100), values=LOW_PEER_VALUES)
    assert ("nurse-x" in flagged(rule_id, activity)) is expected


PLAN_LOW_CASES = [
    # administered_z 3.5 either way on the ratio of doses to their plans
    ("z exactly -3.5", Fraction(650), True),
    ("z just over -3.5", Fraction(13_001, 20), False),
    ("z just under -3.5", Fraction(12_999, 20), True),
]


@pytest.mark.parametrize(("target", "expected"), [c[1:] for c in PLAN_LOW_CASES],
                         ids=[c[0] for c in PLAN_LOW_CASES])
def test_plan_ratio_outlier_below(target, expected):
    activity = team(planning, target, values=LOW_PEER_VALUES)
    assert ("nurse-x" in flagged("dosing.plan_ratio_outlier", activity)) is expected


def test_one_prescribers_high_plans_make_no_honest_nurse_an_outlier():
    # Half the team's patients have plans at twice the dose; every nurse gives what her
    # patients' plans set, so every ratio is 1 however her patients are shared out.
    nurses = []
    for n in range(12):
        high = min(n * 4, 40)  # of her 40 doses, 0 to 40 under the high prescriber
        planned = 35_000 * (40 - high) + 70_000 * high
        nurses.append(NurseActivity(f"nurse-{n}", "nurse", visits=40, days_worked=20,
                                    doses=40, administered_ug=planned, wastes=40,
                                    wasted_ug=40 * 200_000 - planned, planned_doses=40,
                                    planned_given_ug=planned, planned_ug=planned))
    assert flagged("dosing.plan_ratio_outlier", tuple(nurses)) == set()


def test_plan_ratio_summary_and_evidence():
    finding = one("dosing.plan_ratio_outlier", team(planning, Fraction(650),
                                                    values=LOW_PEER_VALUES))
    assert finding.rule_version == 1
    assert finding.evidence["direction"] == "below"
    assert finding.evidence["plan_ratio"] == Decimal("0.6500")
    assert finding.evidence["peer_median_plan_ratio"] == Decimal("1.0000")
    assert finding.evidence["robust_z"] == Decimal("-3.50")
    assert finding.evidence["spread_basis"] == "mad"
    assert finding.evidence["planned_doses"] == 20
    assert finding.evidence["window"] == "scan"
    assert finding.summary.startswith(
        "The nurse's doses came to 65.0% of what their own plans set, over 20 doses, below "
        "the median of 100.0% among the 21 nurses in her role (nurse)")
    assert "Check her doses against their plans" in finding.summary


def planning_lately(nurse_id: str, per_mille: Fraction, recent: int = 20,
                    role: str = "nurse") -> NurseActivity:
    """A nurse who gave her plans' doses for 80 doses, then per_mille / 1000 of them lately."""
    earlier = planning(nurse_id, Fraction(1000), doses=80, role=role)
    given = whole(per_mille * recent)
    return replace(earlier, doses=80 + recent, planned_doses=80 + recent,
                   planned_given_ug=earlier.planned_given_ug + given,
                   planned_ug=earlier.planned_ug + 1000 * recent, recent_since=RECENT_SINCE,
                   recent_planned_doses=recent, recent_planned_given_ug=given,
                   recent_planned_ug=1000 * recent)


RECENT_PLAN_CASES = [
    # administered_z 3.5 on the recent ratio, peers' recent ratios around 1 (scale 0.1); her
    # whole window stays within 15% of the median, so only the recent doses can tell.
    ("recent z exactly -3.5", Fraction(650), {}, True),
    ("recent z just over -3.5", Fraction(13_001, 20), {}, False),
    ("recent z exactly 3.5", Fraction(1350), {}, True),
    # plan_ratio_min_recent_doses 5
    ("4 recent doses", Fraction(300), {"recent": 4}, False),
    ("5 recent doses", Fraction(300), {"recent": 5}, True),
]


@pytest.mark.parametrize(("target", "fields", "expected"), [c[1:] for c in RECENT_PLAN_CASES],
                         ids=[c[0] for c in RECENT_PLAN_CASES])
def test_recent_doses_against_their_plans(target, fields, expected):
    values = PEER_VALUES if target > 1000 else LOW_PEER_VALUES
    activity = team(planning_lately, target, values=values, **fields)
    assert ("nurse-x" in flagged("dosing.plan_ratio_outlier", activity)) is expected


def test_a_week_of_short_doses_shows_in_the_recent_window():
    # Twenty nurses who give their plans to within a dose's rounding; one who, for the last
    # 4 of her 7 recent doses, gave 65%: 98.6% over the window, 80% over the last days.
    peers = [planning_lately(f"peer-{n}", Fraction(1000 + 5 * (n % 3) - 5), recent=7)
             for n in range(20)]
    nurse = replace(planning_lately("nurse-x", Fraction(1000), recent=7),
                    planned_given_ug=80_000 + 5_600, recent_planned_given_ug=5_600)
    finding = one("dosing.plan_ratio_outlier", (*peers, nurse))
    assert finding.subject.id == "nurse-x"
    assert finding.evidence["window"] == "recent"
    assert finding.evidence["plan_ratio"] == Decimal("0.8000")
    assert finding.evidence["spread_basis"] == "floor"
    assert finding.summary.startswith(
        "The nurse's doses came to 80.0% of what their own plans set, over her 7 doses since "
        "2026-11-17, below the median of 100.0%")


def test_waste_share_summary_and_evidence():
    finding = one("waste.share_outlier", team(sharing, Fraction(1350)))
    assert finding.rule_version == 2
    assert finding.evidence["waste_of_remainder"] == Decimal("1.350")
    assert finding.evidence["peer_median_waste_of_remainder"] == Decimal("1.000")
    assert finding.evidence["planned_remainder_ug"] == 20_000
    assert finding.evidence["wasted_ug"] == 27_000
    assert finding.evidence["robust_z"] == Decimal("3.50")
    assert finding.summary.startswith(
        "The nurse wasted 27000 µg in 20 wastes over 20 doses, where those doses' plans left "
        "20000 µg in their containers: 135.0% of what the plans left, against a median of "
        "100.0% of what the plans left among the 21 nurses")
    assert "Check her wastes against the vials" in finding.summary
    assert finding.summary.endswith("with their witnesses.")


def test_waste_share_needs_something_left_by_the_plans():
    activity = (*team(sharing, Fraction(1000))[:-1],
                NurseActivity("nurse-x", "nurse", visits=20, days_worked=10, doses=20,
                              administered_ug=20_000, wastes=20, wasted_ug=50_000))
    assert flagged("waste.share_outlier", activity) == set()


def _vials(nurse_id: str, doses: list[int], planned: list[int] | None = None,
           extra_ug: int = 0, vial: int = 200_000) -> NurseActivity:
    """A nurse who draws each dose from a 200 mg vial and wastes the rest (plus `extra_ug`)."""
    planned = planned or doses
    left = sum(vial - plan for plan in planned)
    return NurseActivity(nurse_id, "nurse", visits=len(doses), days_worked=20,
                         doses=len(doses), administered_ug=sum(doses), wastes=len(doses),
                         wasted_ug=sum(vial - dose for dose in doses) + extra_ug,
                         planned_remainder_ug=left)


# waste_share_z 3.5 on the waste over what the plans left: honest nurses sit at 1 whatever
# their patients weigh, with the spread floor (8% of the median) as the scale.
HONEST_DOSES = [35_000, 33_000, 37_000, 36_000]
LIGHT = [14_000, 15_000, 16_000, 13_000]   # light patients: most of each vial left
PLAN_CASES = [
    ("light patients, honest waste", _vials("nurse-x", LIGHT * 10), set()),
    ("heavy patients, honest waste", _vials("nurse-x", [70_000] * 40), set()),
    # 40 doses of a 165 mg remainder: 6 600 mg left. z 3.5 at 1.28, 1 848 mg extra.
    ("an extra 9 vials (1.27)", _vials("nurse-x", [35_000] * 40, extra_ug=1_782_000), set()),
    ("at the limit (1.28)", _vials("nurse-x", [35_000] * 40, extra_ug=1_848_000),
     {"nurse-x"}),
    ("an extra 10 vials (1.30)", _vials("nurse-x", [35_000] * 40, extra_ug=2_000_000),
     {"nurse-x"}),
    # Gives 60% of a 35 mg plan and wastes the rest of the vial: 14 mg over each remainder.
    ("short doses, rest wasted", _vials("nurse-x", [21_000] * 40, [35_000] * 40), set()),
    ("short doses, rest wasted, light plans",
     _vials("nurse-x", [8_000] * 40, [20_000] * 40), set()),
]


@pytest.mark.parametrize(("nurse", "expected"), [c[1:] for c in PLAN_CASES],
                         ids=[c[0] for c in PLAN_CASES])
def test_waste_is_set_against_what_each_dose_plan_left(nurse, expected):
    peers = tuple(_vials(f"nurse-{n}", [HONEST_DOSES[(n + k) % 4] for k in range(40)])
                  for n in range(12))
    assert flagged("waste.share_outlier", (*peers, nurse)) == expected


def test_light_patients_and_honest_waste_raise_nothing_where_the_raw_share_did():
    # The simulator's false positive: her patients are light, so she wastes more of each vial.
    # Against her peers' µg wasted per µg given she stood out (z 3.75); against what the
    # plans left she wastes exactly it, like them.
    peers = tuple(_vials(f"nurse-{n}", [HONEST_DOSES[(n + k) % 4] for k in range(40)])
                  for n in range(12))
    light = _vials("nurse-x", LIGHT * 10)
    assert light.waste_of_remainder == 1
    assert light.wasted_per_given > 2 * peers[0].wasted_per_given
    assert flagged("waste.share_outlier", (*peers, light)) == set()
    assert flagged("waste.share_rise", (*peers, light)) == set()


def test_the_skimmer_of_the_simulator_is_caught_by_her_waste_against_the_plans():
    # A 200 mg vial a visit for a 35 mg dose: honest nurses waste what the plans leave, 165 mg;
    # one who gives 65% of the dose and wastes the rest wastes 177 mg of it, 7% more: too
    # little on its own, which dosing.plan_ratio_outlier catches. Wasting whole extra vials
    # besides, a vial every four visits, she stands out.
    rng = random.Random(3)
    nurses = []
    for n in range(20):
        doses = [35_000 + rng.randint(-2_500, 2_500) for _ in range(40)]
        nurses.append(_vials(f"nurse-{n}", doses))
    skimmer = _vials("skimmer", [22_750] * 40, [35_000] * 40, extra_ug=10 * 200_000)
    assert flagged("waste.share_outlier", (*nurses, skimmer)) == {"skimmer"}
    assert flagged("waste.share_outlier", tuple(nurses)) == set()


RISE_CASES = [
    # waste_share_rise_z 3.5 on her rise among her role's rises (median 1, scale 0.1)
    ("z exactly 3.5", team(rising, Fraction(1350)), {}, True),
    ("z just under 3.5", team(rising, Fraction(26_999, 20)), {}, False),
    ("z just over 3.5", team(rising, Fraction(27_001, 20)), {}, True),
    ("limit raised", team(rising, Fraction(1350)), {"waste_share_rise_z": Decimal("3.6")},
     False),
    # waste_share_rise_min 0.25: the rise over her own earlier figure must be real too
    ("rise 1.35, minimum rise 0.35", team(rising, Fraction(1350)),
     {"waste_share_rise_min": Decimal("0.35")}, True),
    ("rise 1.35, minimum rise 0.36", team(rising, Fraction(1350)),
     {"waste_share_rise_min": Decimal("0.36")}, False),
    # waste_share_min_recent_doses 5 and waste_share_min_earlier_doses 10
    ("4 recent doses", team(rising, Fraction(2000), recent=4), {}, False),
    ("5 recent doses", team(rising, Fraction(2000), recent=5), {}, True),
    ("9 earlier doses", team(rising, Fraction(2000), earlier=9), {}, False),
    ("10 earlier doses", team(rising, Fraction(2000), earlier=10), {}, True),
    ("7 peers", team(rising, Fraction(2000), values=PEER_VALUES[6:13]), {}, False),
    ("a fall is not a rise", team(rising, Fraction(500)), {}, False),
]


@pytest.mark.parametrize(("activity", "overrides", "expected"), [c[1:] for c in RISE_CASES],
                         ids=[c[0] for c in RISE_CASES])
def test_waste_share_rise_thresholds(activity, overrides, expected):
    assert ("nurse-x" in flagged("waste.share_rise", activity, overrides)) is expected


def test_a_rise_needs_the_recent_split_and_an_earlier_waste():
    peers = team(rising, Fraction(2000))[:-1]
    unsplit = replace(rising("nurse-x", Fraction(2000)), recent_since=None)
    assert flagged("waste.share_rise", (*peers, unsplit)) == set()
    nothing_before = replace(rising("nurse-x", Fraction(2000)), wasted_ug=40_000)
    assert nothing_before.earlier_waste_of_remainder == 0
    assert flagged("waste.share_rise", (*peers, nothing_before)) == set()


def test_a_team_wide_rise_is_no_one_nurses_rise():
    # Everyone's vials got bigger: every rise is 1.5, no one stands out from her peers.
    everyone = tuple(rising(f"nurse-{n}", Fraction(1500)) for n in range(12))
    assert flagged("waste.share_rise", everyone) == set()


def test_waste_share_rise_summary_and_evidence():
    finding = one("waste.share_rise", team(rising, Fraction(2000)))
    assert finding.evidence["recent_since"] == RECENT_SINCE.date().isoformat()
    assert finding.evidence["rise"] == Decimal("2.000")
    assert finding.evidence["recent_doses"] == 20
    assert finding.evidence["earlier_doses"] == 40
    assert finding.rule_version == 2
    assert finding.evidence["recent_waste_of_remainder"] == Decimal("2.000")
    assert finding.evidence["earlier_waste_of_remainder"] == Decimal("1.000")
    assert finding.evidence["recent_planned_remainder_ug"] == 20_000
    assert finding.summary.startswith(
        "The nurse wasted 200.0% of what the plans left in their containers over her 20 doses "
        "since 2026-11-17, against 100.0% of what the plans left over her 40 doses before: "
        "2.00 times her own earlier figure, where the median change among the 21 nurses")
    assert "Check her doses and wastes since 2026-11-17" in finding.summary


MIN_DIFFERENCE_CASES = [
    # Peers nearly identical (MAD 0) and the spread floor at its lowest: the z-score is large
    # over nothing, and peer_min_difference 0.15 of the median decides.
    ("15% over", Fraction(1150), True),
    ("just under 15%", Fraction(22_999, 20), False),
    ("10% over", Fraction(1100), False),
]
LOWEST_FLOORS = {"waste_rate_spread_floor": Decimal("0.01"),
                 "waste_share_spread_floor": Decimal("0.01"),
                 "plan_ratio_spread_floor": Decimal("0.01")}


@pytest.mark.parametrize(("rule_id", "make"), [rule[:2] for rule in HIGH_RULES],
                         ids=[rule[0] for rule in HIGH_RULES])
@pytest.mark.parametrize(("target", "expected"), [c[1:] for c in MIN_DIFFERENCE_CASES],
                         ids=[c[0] for c in MIN_DIFFERENCE_CASES])
def test_a_large_z_over_a_small_difference_is_not_an_outlier(rule_id, make, target, expected):
    alike = [Fraction(1000)] * 19 + [Fraction(1001)]
    activity = team(make, target, values=alike)
    assert ("nurse-x" in flagged(rule_id, activity, LOWEST_FLOORS)) is expected


FLOOR_CASES = [
    # Peers within 0.1% of one another: MAD / 0.6745 is about 1.5 and the mean deviation
    # barely more, so the spread floor (8% of the median, 80) is the scale. A nurse 30% over
    # scores z 3.75; one 27% over, z 3.375, is an ordinary difference.
    ("30% over", Fraction(1300), {}, True),
    ("28% over: z 3.5 on the floor", Fraction(1280), {}, True),
    ("27% over", Fraction(1270), {}, False),
    ("27% over, floor lowered to 5%", Fraction(1270), {"waste_rate_spread_floor":
                                                       Decimal("0.05")}, True),
]


@pytest.mark.parametrize(("target", "overrides", "expected"), [c[1:] for c in FLOOR_CASES],
                         ids=[c[0] for c in FLOOR_CASES])
def test_the_spread_floor_under_a_tiny_mad(target, overrides, expected):
    alike = [Fraction(999)] * 7 + [Fraction(1000)] * 6 + [Fraction(1001)] * 7
    activity = team(wasting, target, values=alike)
    assert ("nurse-x" in flagged("waste.rate_outlier", activity, overrides)) is expected
    if expected and not overrides:
        finding = one("waste.rate_outlier", activity)
        assert finding.evidence["spread_basis"] == "floor"
        assert finding.evidence["spread"] == Decimal("80.0000")


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


TINY_MAD_CASES = [
    # The case seen on a real run: 1.55 visits a day against peers at 1.91 whose MAD was
    # tiny scored z -27. The spread floor (10% of the median, 0.191) makes it z -1.9.
    ("1.55 against 1.91", Fraction(155, 100), {}, False),
    ("1.55, floor at its lowest", Fraction(155, 100), {"activity_spread_floor":
                                                       Decimal("0.01")}, True),
    # Half the peers' rate is still found: z -5 on the floor.
    ("0.955 against 1.91", Fraction(955, 1000), {}, True),
    # z exactly -3.5 on the floor: 1.91 - 3.5 x 0.191
    ("z -3.5 on the floor", Fraction(191, 100) - Fraction(7, 2) * Fraction(191, 1000), {},
     True),
    ("just over z -3.5 on the floor",
     Fraction(191, 100) - Fraction(7, 2) * Fraction(191, 1000) + Fraction(1, 1000), {},
     False),
]


@pytest.mark.parametrize(("target", "overrides", "expected"),
                         [c[1:] for c in TINY_MAD_CASES], ids=[c[0] for c in TINY_MAD_CASES])
def test_a_tiny_mad_cannot_make_an_ordinary_difference_extreme(target, overrides, expected):
    days = 2000  # enough days worked for every rate below to be a whole number of visits
    peers = [working(f"peer-{n}", Fraction(1910 + (n % 3) - 1, 1000), days=days)
             for n in range(20)]
    nurse = working("nurse-x", target, days=days)
    assert ("nurse-x" in flagged("activity.low_outlier", (*peers, nurse), overrides)) is expected


def test_the_activity_summary_says_what_against_what_and_what_to_check():
    finding = one("activity.low_outlier", team(working, Fraction(650), values=LOW_PEER_VALUES))
    assert finding.rule_version == 2
    assert finding.summary.startswith(
        "The nurse made 650.00 visits per day over 20 days worked, against a median of "
        "1000.00 among the 21 nurses in her role (nurse) with enough activity (modified z "
        "-3.5, limit -3.5). Check her schedule")


def test_waste_rate_evidence_and_key():
    finding = one("waste.rate_outlier", team(wasting, Fraction(1350)))
    assert finding.rule_version == 2
    assert finding.evidence["nurse_id"] == "nurse-x"
    assert finding.evidence["robust_z"] == Decimal("3.50")
    assert finding.evidence["wasted_ug_per_visit"] == Decimal("1350.000")
    assert finding.evidence["peer_median_wasted_ug_per_visit"] == Decimal("1000.000")
    assert finding.evidence["peers"] == 20
    assert finding.evidence["spread_basis"] == "mad"
    assert finding.evidence["spread_floor"] == Decimal("0.08")
    assert "Check her wastes" in finding.summary
    again = one("waste.rate_outlier", team(wasting, Fraction(1360), visits=40))
    assert again.dedup_key == finding.dedup_key


def test_identical_peers_give_no_finding():
    for make, rule_id in ((wasting, "waste.rate_outlier"), (sharing, "waste.share_outlier"),
                          (planning, "dosing.plan_ratio_outlier"),
                          (rising, "waste.share_rise")):
        assert flagged(rule_id, team(make, Fraction(1000), values=[Fraction(1000)] * 20)) == set()


def test_no_activity_no_finding():
    assert found(PEERS, facts()) == []


def honest_team(rng: random.Random, nurses: int, visits: int,
                over_waste: float = 1.0) -> tuple[NurseActivity, ...]:
    """Return nurses whose wastes vary at random; nurse-0 wastes `over_waste` times more."""
    team = []
    for n in range(nurses):
        factor = over_waste if n == 0 else 1.0
        wasted = sum(int(max(rng.gauss(15_000, 5_000), 0) * factor) for _ in range(visits))
        recent = visits // 6
        recent_wasted = int(wasted * recent / visits * rng.gauss(1, 0.1))
        days = rng.randint(visits // 3, visits // 2)
        given = sum(round(rng.gauss(35_000, 300)) for _ in range(visits))
        team.append(NurseActivity(f"nurse-{n}", "nurse", visits=visits, days_worked=days,
                                  doses=visits, administered_ug=given, wastes=visits,
                                  wasted_ug=wasted, planned_doses=visits,
                                  planned_given_ug=given, planned_ug=35_000 * visits,
                                  recent_since=RECENT_SINCE, recent_doses=recent,
                                  recent_administered_ug=given * recent // visits,
                                  recent_wasted_ug=recent_wasted,
                                  planned_remainder_ug=15_000 * visits,
                                  recent_planned_remainder_ug=15_000 * recent))
    return tuple(team)


def test_an_honest_team_raises_no_peer_finding_but_a_30_percent_over_waster_is_caught():
    rng = random.Random(7)
    for _ in range(25):
        assert found(PEERS, facts(activity=honest_team(rng, nurses=40, visits=150))) == []
    findings = found(PEERS, facts(activity=honest_team(rng, 40, 150, over_waste=1.3)))
    assert ids(findings) == ["waste.rate_outlier", "waste.share_outlier"]
    assert {finding.subject.id for finding in findings} == {"nurse-0"}
