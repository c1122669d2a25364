"""Unwitnessed, late and impossible waste, and witnesses chosen far more often than chance."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards import DeviceClock, WitnessAttestation, WitnessPair
from safeguards.rules.waste import WASTE
from tests.safeguards.factories import T0, dose, facts, found, ids, waste

SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(("witnesses", "expected"), [
    ((), True),
    (("nurse-1",), True),  # her own signature witnesses nothing
    (("nurse-2",), False),
    (("nurse-1", "nurse-2"), False),
])
def test_unwitnessed_cases(witnesses, expected):
    findings = found(WASTE, facts(wastes=(waste(witness_ids=witnesses),)))
    assert ("waste.unwitnessed" in ids(findings)) is expected


def test_unwitnessed_names_the_nurse_and_patient_once_per_waste():
    wastes = (waste(1, witness_ids=()), waste(2, witness_ids=()))
    findings = found(WASTE, facts(wastes=wastes))
    assert [f.evidence["waste_id"] for f in findings] == ["waste-1", "waste-2"]
    assert {(f.evidence["nurse_id"], f.evidence["patient_id"]) for f in findings} == {
        ("nurse-1", "patient-1")}
    assert findings[0].dedup_key == found(WASTE, facts(wastes=wastes[:1]))[0].dedup_key


def pair(together: int, wastes: int, available: int) -> WitnessPair:
    return WitnessPair("nurse-1", "nurse-7", together, wastes, available)


WITNESS_CASES = [
    # witness_pair_min_wastes 10
    ("9 of 9", pair(9, 9, 40), {}, False),
    ("10 of 10", pair(10, 10, 40), {}, True),
    # witness_pair_min_share 0.5
    ("5 of 10 of 40 witnesses", pair(5, 10, 40), {}, True),
    ("4 of 10", pair(4, 10, 40), {}, False),
    # witness_pair_max_p_value 0.0001, halved for the two looks; with 2 witnesses
    # P(10 of 10) = 1/1024 = 0.0009765625, so the limit it meets is twice that
    ("10 of 10 of 2 witnesses", pair(10, 10, 2), {}, False),
    ("p exactly at the halved limit", pair(10, 10, 2),
     {"witness_pair_max_p_value": Decimal("0.001953125")}, True),
    ("p just over the halved limit", pair(10, 10, 2),
     {"witness_pair_max_p_value": Decimal("0.001953124")}, False),
    ("p at the unhalved limit is over the halved one", pair(10, 10, 2),
     {"witness_pair_max_p_value": Decimal("0.0009765625")}, False),
    ("only one witness to choose", pair(30, 30, 1), {}, False),
    ("no witnesses known", pair(30, 30, 0), {}, False),
]


@pytest.mark.parametrize(("witnessed", "overrides", "expected"),
                         [c[1:] for c in WITNESS_CASES], ids=[c[0] for c in WITNESS_CASES])
def test_witness_pair_thresholds(witnessed, overrides, expected):
    findings = found(WASTE, facts(witness_pairs=(witnessed,)), overrides)
    assert ("waste.witness_pair" in ids(findings)) is expected


def recent_pair(together: int, wastes: int, available: int = 40) -> WitnessPair:
    """Return a pair the whole window clears (6 of 40 wastes), with `together` of `wastes`
    in the recent period."""
    return WitnessPair("nurse-1", "nurse-7", 6, 40, available, together, wastes)


RECENT_WITNESS_CASES = [
    ("no recent counts", WitnessPair("nurse-1", "nurse-7", 6, 40, 40), {}, False),
    # witness_pair_recent_min_wastes 5
    ("4 of 4 recent", recent_pair(4, 4), {}, False),
    ("5 of 5 recent", recent_pair(5, 5), {}, True),
    ("6 of 6 recent", recent_pair(6, 6), {}, True),
    ("5 of 5 recent, minimum 6", recent_pair(5, 5),
     {"witness_pair_recent_min_wastes": 6}, False),
    # the halved p limit (0.00005) is the gate: 5 of 5 of 8 is 1/8**5 = 0.0000305, of 7 is
    # 1/7**5 = 0.0000595
    ("5 of 5 recent of 8 witnesses", recent_pair(5, 5, 8), {}, True),
    ("5 of 5 recent of 7 witnesses", recent_pair(5, 5, 7), {}, False),
    # witness_pair_min_share 0.5, as the whole window
    ("5 of 10 recent", recent_pair(5, 10), {}, True),
    ("4 of 10 recent", recent_pair(4, 10), {}, False),
    # witness_pair_max_p_value halved; with 2 witnesses P(6 of 6) = 1/64 = 0.015625
    ("6 of 6 recent of 2 witnesses", recent_pair(6, 6, 2), {}, False),
    ("recent p exactly at the halved limit", recent_pair(6, 6, 2),
     {"witness_pair_max_p_value": Decimal("0.03125")}, True),
    ("recent p just over the halved limit", recent_pair(6, 6, 2),
     {"witness_pair_max_p_value": Decimal("0.03124")}, False),
    ("recent, one witness to choose", recent_pair(10, 10, 1), {}, False),
    # 10 of 10 of 8 witnesses: 1/8**10, far under
    ("a small circle, 9 of 10 recent", recent_pair(9, 10, 8), {}, True),
    ("a small circle, 5 of 8 recent", recent_pair(5, 8, 8), {}, False),
]


@pytest.mark.parametrize(("witnessed", "overrides", "expected"),
                         [c[1:] for c in RECENT_WITNESS_CASES],
                         ids=[c[0] for c in RECENT_WITNESS_CASES])
def test_witness_pair_recent_thresholds(witnessed, overrides, expected):
    findings = found(WASTE, facts(witness_pairs=(witnessed,)), overrides)
    assert ("waste.witness_pair" in ids(findings)) is expected


def test_witness_pair_recent_finding_says_the_period_and_keeps_the_key():
    [recent] = found(WASTE, facts(witness_pairs=(recent_pair(9, 10, 8),)))
    assert recent.evidence["period"] == "recent"
    assert (recent.evidence["recent_together"], recent.evidence["recent_wastes"]) == (9, 10)
    assert recent.evidence["recent_days"] == 7
    assert "last 7 days" in recent.summary and "Check" in recent.summary
    [whole] = found(WASTE, facts(witness_pairs=(
        WitnessPair("nurse-1", "nurse-7", 30, 40, 8, 9, 10),)))
    assert whole.evidence["period"] == "window"
    assert whole.dedup_key == recent.dedup_key


def test_witness_pair_evidence_and_key_per_pair():
    [finding] = found(WASTE, facts(witness_pairs=(pair(8, 10, 40),)))
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["witness_id"] == "nurse-7"
    assert finding.evidence["share"] == Decimal("0.800")
    assert finding.evidence["p_value"] < Decimal("1E-10")
    [grown] = found(WASTE, facts(witness_pairs=(pair(40, 50, 40),)))
    assert grown.dedup_key == finding.dedup_key


def witness_pairs(rng: random.Random, nurses: int, wastes: int,
                  friend_share: float = 0.0) -> list[WitnessPair]:
    """Return each nurse's witness counts when nurse-0's friend takes `friend_share` of hers."""
    pairs = []
    for nurse in range(nurses):
        others = [f"nurse-{n}" for n in range(nurses) if n != nurse]
        share = friend_share if nurse == 0 else 0.0
        chosen = Counter("nurse-1" if rng.random() < share else rng.choice(others)
                         for _ in range(wastes))
        pairs += [WitnessPair(f"nurse-{nurse}", witness, together, wastes, len(others))
                  for witness, together in chosen.items()]
    return pairs


def test_an_honest_organisation_raises_no_witness_pair_but_a_friend_on_80_percent_is_caught():
    rng = random.Random(7)
    for _ in range(20):
        honest = witness_pairs(rng, nurses=40, wastes=30)
        assert found(WASTE, facts(witness_pairs=tuple(honest))) == []
    friendly = witness_pairs(rng, nurses=40, wastes=30, friend_share=0.8)
    [finding] = found(WASTE, facts(witness_pairs=tuple(friendly)))
    assert (finding.evidence["nurse_id"], finding.evidence["witness_id"]) == ("nurse-0", "nurse-1")


def attested(after: timedelta, waste_id: str = "waste-1",
             witness_id: str = "nurse-7") -> WitnessAttestation:
    """Return a waste at T0 that the witness's phone (phone-7) confirmed `after` it."""
    return WitnessAttestation(waste_id, "nurse-1", witness_id, "phone-7", T0, T0 + after,
                              patient_id="patient-1", visit_id="visit-1")


def ahead(device_id: str, lead: timedelta) -> DeviceClock:
    return DeviceClock(device_id, "nurse-7", 40, lead // SECOND)


MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
WITNESS_LATE_CASES = [
    # witness_late_minutes 30, less what the witness's phone clock is known to run ahead
    ("confirmed as it happened", attested(2 * MINUTE), (), None),
    ("30 min after: the limit", attested(30 * MINUTE), (), None),
    ("30 min and a second after", attested(30 * MINUTE + SECOND), (), Decimal("30.0")),
    ("confirmed before the waste", attested(-3 * HOUR), (), None),
    ("5 h after", attested(5 * HOUR), (), Decimal("300.0")),
    ("her clock 4 h ahead explains 4 h", attested(4 * HOUR + 20 * MINUTE),
     (ahead("phone-7", 4 * HOUR),), None),
    ("another phone's clock explains nothing", attested(4 * HOUR + 20 * MINUTE),
     (ahead("phone-9", 4 * HOUR),), Decimal("260.0")),
    ("her clock 1 h ahead leaves 4 h", attested(5 * HOUR), (ahead("phone-7", HOUR),),
     Decimal("240.0")),
]


@pytest.mark.parametrize(("confirmed", "clocks", "late"), [c[1:] for c in WITNESS_LATE_CASES],
                         ids=[c[0] for c in WITNESS_LATE_CASES])
def test_witness_late_cases(confirmed, clocks, late):
    findings = [f for f in found(WASTE, facts(attestations=(confirmed,), clocks=clocks))
                if f.rule_id == "waste.witness_late"]
    assert [f.evidence["late_minutes"] for f in findings] == ([late] if late else [])


def test_witness_late_is_one_case_per_nurse_and_witness_with_each_waste_an_occurrence():
    findings = found(WASTE, facts(attestations=(
        attested(2 * HOUR, "waste-1"), attested(3 * HOUR, "waste-2"),
        attested(3 * HOUR, "waste-3", witness_id="nurse-8"), attested(MINUTE, "waste-4"))))
    assert len({f.dedup_key for f in findings}) == 2
    assert sorted((f.evidence["witness_id"], f.occurrence_key) for f in findings) == [
        ("nurse-7", "waste-1"), ("nurse-7", "waste-2"), ("nurse-8", "waste-3")]
    first = findings[0]
    assert (first.subject.id, first.evidence["patient_id"], first.evidence["waste_id"]) == (
        "nurse-1", "patient-1", "waste-1")
    # What was seen, against what, and what to check next.
    assert "Witness nurse-7's phone confirmed the nurse's waste of 2026-11-02T15:00:00+00:00 " \
        "2.0 h after it was recorded; a witness who watches a waste confirms it as it " \
        "happens, within 30.0 min. Check with the witness how she saw it" in first.summary


def test_witness_late_follows_the_policy():
    confirmed = (attested(50 * MINUTE),)
    assert found(WASTE, facts(attestations=confirmed)) != []
    assert found(WASTE, facts(attestations=confirmed), {"witness_late_minutes": 60}) == []


def one_visit(container_ug: int | None, dose_ug: int, *wasted: int) -> dict:
    return {"doses": (dose(quantity_ug=dose_ug, container_ug=container_ug),),
            "wastes": tuple(waste(n, visit_id="visit-1", quantity_ug=q)
                            for n, q in enumerate(wasted, 1))}


REMAINDER_CASES = [
    # 50,000 µg vial, 35,000 µg dose: 15,000 µg may be wasted
    ("waste equals the remainder", one_visit(50_000, 35_000, 15_000), None),
    ("1 µg more", one_visit(50_000, 35_000, 15_001), 1),
    ("two wastes together", one_visit(50_000, 35_000, 10_000, 6_000), 1_000),
    ("container unknown", one_visit(None, 35_000, 60_000), None),
]


@pytest.mark.parametrize(("visit_facts", "excess"), [c[1:] for c in REMAINDER_CASES],
                         ids=[c[0] for c in REMAINDER_CASES])
def test_exceeds_remainder_cases(visit_facts, excess):
    findings = [f for f in found(WASTE, facts(**visit_facts))
                if f.rule_id == "waste.exceeds_remainder"]
    assert [f.evidence["excess_ug"] for f in findings] == ([excess] if excess else [])
    assert all(f.evidence["nurse_id"] == "nurse-1" for f in findings)


ENDED = T0 + timedelta(minutes=40)
LATE_CASES = [
    # waste_late_hours 4 after the infusion ended
    ("4 h after", waste(at=ENDED + timedelta(hours=4)), dose(), False),
    ("4 h and a second after", waste(at=ENDED + timedelta(hours=4) + SECOND), dose(), True),
    ("no end recorded: from the start", waste(at=T0 + timedelta(hours=4) + SECOND),
     dose(infusion_ended_at=None), True),
    ("no dose at the visit", waste(at=ENDED + timedelta(days=1)), dose(visit_id="visit-9"),
     False),
]


@pytest.mark.parametrize(("wasted", "given", "expected"), [c[1:] for c in LATE_CASES],
                         ids=[c[0] for c in LATE_CASES])
def test_late_waste_cases(wasted, given, expected):
    findings = found(WASTE, facts(doses=(given,), wastes=(wasted,)))
    assert ("waste.late" in ids(findings)) is expected


def test_late_waste_policy_can_allow_longer():
    late = waste(at=ENDED + timedelta(hours=5))
    given = facts(doses=(dose(),), wastes=(late,))
    assert found(WASTE, given, {"waste_late_hours": 6}) == []
    [finding] = found(WASTE, given)
    assert str(finding.evidence["hours_after_dose"]) == "5.0"
    assert finding.evidence["patient_id"] == "patient-1"


def circle_pairs(rng: random.Random, nurses: int, circle: int, wastes: int, recent: int,
                 friend_share: float = 0.0) -> list[WitnessPair]:
    """Return each nurse's witness counts over a window of `wastes` whose last `recent` are
    the recent period, each chosen from a circle of `circle` colleagues; nurse-0's friend
    takes `friend_share` of her recent wastes only (a friendship just begun)."""
    pairs = []
    for nurse in range(nurses):
        others = [f"witness-{nurse}-{n}" for n in range(circle)]
        share = friend_share if nurse == 0 else 0.0
        chosen = [rng.choice(others) for _ in range(wastes - recent)]
        late = [others[0] if rng.random() < share else rng.choice(others) for _ in range(recent)]
        whole, last = Counter(chosen + late), Counter(late)
        pairs += [WitnessPair(f"nurse-{nurse}", witness, together, wastes, circle,
                              last[witness], recent) for witness, together in whole.items()]
    return pairs


def test_honest_small_circles_raise_no_recent_witness_pair_but_a_new_friendship_is_caught():
    rng = random.Random(11)
    for _ in range(20):
        honest = circle_pairs(rng, nurses=40, circle=8, wastes=40, recent=10)
        assert found(WASTE, facts(witness_pairs=tuple(honest))) == []
    # A week of a friend on 90% of ten wastes, after three weeks of chance: the window's 40
    # wastes dilute it, the recent period does not.
    friendly = circle_pairs(rng, nurses=40, circle=8, wastes=40, recent=10, friend_share=0.9)
    findings = found(WASTE, facts(witness_pairs=tuple(friendly)))
    assert [(f.evidence["nurse_id"], f.evidence["period"]) for f in findings] == [
        ("nurse-0", "recent")]
