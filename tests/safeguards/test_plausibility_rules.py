"""Plausibility rules: weights that move too fast or rise before a dose, mg rising on flat
mg/kg, and readings that never vary."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from safeguards.facts import SessionReadings, Vitals, Weighing
from safeguards.findings import Severity
from safeguards.rules.plausibility import PLAUSIBILITY
from tests.safeguards.factories import T0, dose, doses_every, facts, found

DAY = timedelta(days=1)


def weighing(number: int, at, grams: int, **fields) -> Weighing:
    """Return weighing `number` of patient-1, recorded by nurse-2."""
    defaults = dict(id=f"weight-{number}", patient_id="patient-1", weight_g=grams,
                    measured_at=at, recorded_by_id="nurse-2")
    return Weighing(**{**defaults, **fields})


def findings_of(rule_id: str, overrides: dict | None = None, **given) -> list:
    """Return `rule_id`'s findings over facts with `given`."""
    return [f for f in found(PLAUSIBILITY, facts(**given), overrides) if f.rule_id == rule_id]


def pair(grams: int, days: float, first: int = 80_000) -> tuple[Weighing, ...]:
    """Return two weighings `days` apart, the second `grams` heavier."""
    return (weighing(1, T0, first), weighing(2, T0 + days * DAY, first + grams))


@pytest.mark.parametrize(("case", "weighings", "overrides", "flagged"), [
    ("no weighings", (), None, False),
    ("one weighing", (weighing(1, T0, 80_000),), None, False),
    ("honest drift", pair(300, 7), None, False),
    # weight_max_change_per_week 0.05: 4,000 g a week for 80 kg, a week at least.
    ("+4000 g in 7 days", pair(4_000, 7), None, False),
    ("+4001 g in 7 days", pair(4_001, 7), None, True),
    ("-4001 g in 7 days", pair(-4_001, 7), None, True),
    ("+4001 g in 2 days", pair(4_001, 2), None, True),
    ("+3999 g in 1 day", pair(3_999, 1), None, False),
    ("+7999 g in 14 days", pair(7_999, 14), None, False),
    ("+8001 g in 14 days", pair(8_001, 14), None, True),
    ("+4001 g in 7 days, 10% allowed", pair(4_001, 7),
     {"weight_max_change_per_week": Decimal("0.10")}, False),
    # weight_min_change_g 1500: a 20 kg child's 5% a week is 1,000 g.
    ("+1499 g in 7 days at 20 kg", pair(1_499, 7, 20_000), None, False),
    ("+1500 g in 7 days at 20 kg", pair(1_500, 7, 20_000), None, True),
])
def test_weight_change_thresholds(case, weighings, overrides, flagged):
    assert bool(findings_of("plausibility.weight_change", overrides,
                            weighings=weighings)) is flagged


def test_weight_change_is_one_case_per_patient_rising_with_repetition():
    seesaw = tuple(weighing(n, T0 + n * 7 * DAY, 80_000 + 6_000 * (n % 2)) for n in range(4))
    finding, = findings_of("plausibility.weight_change", weighings=seesaw)
    assert finding.severity is Severity.HIGH
    assert finding.evidence["implausible_changes"] == 3
    once, = findings_of("plausibility.weight_change", weighings=seesaw[:2])
    assert once.severity is Severity.MEDIUM and once.dedup_key == finding.dedup_key
    assert "from 80.0 kg to 86.0 kg (+7.5%) in 7.0 days" in once.summary
    assert "Check" in once.summary and once.evidence["nurse_id"] == "nurse-2"


PRIOR = tuple(weighing(n, T0 - (21 - 7 * n) * DAY, 80_000) for n in range(3))


def before_dose(grams: int, hours_before: float = 1, prior=PRIOR, **fields) -> dict:
    """Return prior weighings, nurse-1's weighing `hours_before` her dose, and the dose."""
    own = weighing(9, T0 - timedelta(hours=hours_before), grams,
                   **{"recorded_by_id": "nurse-1", **fields})
    return dict(weighings=(*prior, own), doses=(dose(1, T0),))


@pytest.mark.parametrize(("case", "given", "overrides", "flagged"), [
    ("usual weight", before_dose(80_200), None, False),
    # weight_before_dose_rise 0.03: 82,400 g is 3% over 80 kg.
    ("+3.0%", before_dose(82_400), None, False),
    ("+3.0% and a gram", before_dose(82_401), None, True),
    ("+3.0% and a gram, 5% allowed", before_dose(82_401),
     {"weight_before_dose_rise": Decimal("0.05")}, False),
    # weight_min_change_g 1500 for a 40 kg patient, where 3% is 1,200 g.
    ("+1499 g at 40 kg", before_dose(41_499, prior=tuple(
        replace(w, weight_g=40_000) for w in PRIOR)), None, False),
    ("+1500 g at 40 kg", before_dose(41_500, prior=tuple(
        replace(w, weight_g=40_000) for w in PRIOR)), None, True),
    # weight_before_dose_hours 12.
    ("weighed 12 h before", before_dose(90_000, 12), None, True),
    ("weighed 13 h before", before_dose(90_000, 13), None, False),
    ("weighed after the dose", before_dose(90_000, -1), None, False),
    ("weighed by another nurse", before_dose(90_000, recorded_by_id="nurse-2"), None, False),
    ("no prior weighing", before_dose(90_000, prior=()), None, False),
    # weight_prior_count 3: the usual weight is the median of the last three.
    ("one odd prior weighing", before_dose(82_401, prior=(
        *PRIOR[:2], replace(PRIOR[2], weight_g=90_000))), None, True),
])
def test_weight_before_dose_thresholds(case, given, overrides, flagged):
    assert bool(findings_of("plausibility.weight_before_dose", overrides, **given)) is flagged


def test_weight_before_dose_is_one_case_per_nurse_and_patient_rising_with_repetition():
    given = before_dose(88_000)
    finding, = findings_of("plausibility.weight_before_dose", **given)
    assert (finding.subject.kind, finding.severity) == ("nurse", Severity.MEDIUM)
    assert "10.0% above the 80.0 kg median of the patient's 3 weighings" in finding.summary
    again = weighing(10, T0 + 7 * DAY - timedelta(hours=1), 88_500, recorded_by_id="nurse-1")
    twice, = findings_of("plausibility.weight_before_dose",
                         weighings=(*given["weighings"], again),
                         doses=(dose(1, T0), dose(2, T0 + 7 * DAY)))
    assert twice.severity is Severity.HIGH and twice.dedup_key == finding.dedup_key
    assert twice.evidence["doses"] == 2
    elsewhere = [replace(w, patient_id="patient-2") for w in given["weighings"]]
    two = findings_of("plausibility.weight_before_dose", weighings=(*given["weighings"],
                                                                    *elsewhere),
                      doses=(dose(1, T0), dose(2, T0, patient_id="patient-2")))
    assert sorted(f.evidence["patient_id"] for f in two) == ["patient-1", "patient-2"]
    assert {f.severity for f in two} == {Severity.MEDIUM}


def inflating(recent_ug: int, recent_per_kg: str = "500", count: int = 6) -> list:
    """Return `count` doses at 40 mg and 0.5 mg/kg, the last three at `recent_ug`."""
    doses = doses_every(3.5, count, quantity_ug=40_000)
    return [replace(d, quantity_ug=recent_ug, ug_per_kg=Decimal(recent_per_kg))
            if n >= count - 3 else d for n, d in enumerate(doses)]


@pytest.mark.parametrize(("case", "doses", "overrides", "flagged"), [
    ("steady", inflating(40_000), None, False),
    # weight_dose_min_rise 0.10 over the earlier median of 40 mg.
    ("+10% mg", inflating(44_000), None, False),
    ("+10% mg and a µg", inflating(44_001), None, True),
    ("+10% mg and a µg, 20% allowed", inflating(44_001),
     {"weight_dose_min_rise": Decimal("0.20")}, False),
    # weight_dose_flat_tolerance 0.05 on the earlier 500 µg/kg.
    ("mg/kg +5%", inflating(48_000, "525"), None, True),
    ("mg/kg +5.2%", inflating(48_000, "526"), None, False),
    ("mg/kg -5%", inflating(48_000, "475"), None, True),
    ("a prescribed step up in mg/kg", inflating(48_000, "600"), None, False),
    # weight_dose_min_doses 6.
    ("5 doses", inflating(48_000, count=5), None, False),
    ("6 doses", inflating(48_000, count=6), None, True),
    ("no weights", [replace(d, ug_per_kg=None) for d in inflating(48_000)], None, False),
])
def test_mg_rise_flat_per_kg_thresholds(case, doses, overrides, flagged):
    assert bool(findings_of("plausibility.mg_rise_flat_per_kg", overrides,
                            doses=tuple(doses))) is flagged


def test_mg_rise_flat_per_kg_names_the_weight_behind_it():
    finding, = findings_of("plausibility.mg_rise_flat_per_kg", doses=tuple(inflating(48_000)))
    assert "from 80.0 kg to 96.0 kg" in finding.summary and "Check" in finding.summary
    assert finding.evidence["recent_weight_g"] == 96_000


def honest(number: int, nurse: str, patient: int) -> SessionReadings:
    """Return a session whose readings vary as real ones do, different for each number."""
    wobble = (number * 7 + patient * 3) % 11
    pre = Vitals(systolic=112 + wobble, diastolic=70 + wobble % 5, heart_rate=64 + wobble % 9,
                 spo2=96 + wobble % 4, cadss_total=0)
    after = tuple(Vitals(systolic=pre.systolic + 10 + m + wobble % 3,
                         diastolic=pre.diastolic + 5 + m, heart_rate=pre.heart_rate + m,
                         spo2=97, cadss_total=(number * 5 + m + patient) % 13)
                  for m in range(4))
    return SessionReadings(visit_id=f"{nurse}-visit-{number}", nurse_id=nurse,
                           patient_id=f"patient-{patient}", recorded_at=T0 + number * DAY,
                           pre_dose=pre, after_dose=after)


def copied(number: int, nurse: str, patient: int, measure: str) -> SessionReadings:
    """Return an honest session with one measure written the same as every other time."""
    session = honest(number, nurse, patient)
    if measure == "pre_dose_vitals":
        return replace(session, pre_dose=Vitals(systolic=120, diastolic=80, heart_rate=72,
                                                spo2=98))
    if measure == "unchanging_session":
        return replace(session, after_dose=(session.pre_dose,) * 4)
    return replace(session, after_dose=tuple(replace(v, cadss_total=4)
                                             for v in session.after_dose))


def nurse(name: str, sessions: int = 12, flat: int = 0, measure: str = "pre_dose_vitals",
          patients: int = 4) -> list[SessionReadings]:
    """Return a nurse's sessions over `patients` patients, the latest `flat` copied."""
    return [copied(n, name, n % patients, measure) if n >= sessions - flat
            else honest(n, name, n % patients) for n in range(sessions)]


def peers(count: int = 8, flat: int = 0) -> list[SessionReadings]:
    """Return `count` honest nurses' sessions, the latest `flat` of each copied."""
    return [s for n in range(count) for s in nurse(f"peer-{n}", flat=flat)]


def flat(readings: list[SessionReadings], overrides: dict | None = None) -> list:
    """Return plausibility.flat_readings' findings over `readings`."""
    return findings_of("plausibility.flat_readings", overrides, readings=tuple(readings))


@pytest.mark.parametrize(("case", "readings", "overrides", "flagged"), [
    ("no sessions", [], None, []),
    ("honest team", peers() + nurse("nurse-x"), None, []),
    # flat_min_share 0.6 of her 10 sessions.
    ("5 of 10 the same", peers() + nurse("nurse-x", 10, 5), None, []),
    ("6 of 10 the same", peers() + nurse("nurse-x", 10, 6), None, ["pre_dose_vitals"]),
    ("6 of 10, 70% asked", peers() + nurse("nurse-x", 10, 6),
     {"flat_min_share": Decimal("0.7")}, []),
    # flat_min_sessions 10.
    ("9 of 9 the same", peers() + nurse("nurse-x", 9, 9), None, []),
    ("10 of 10 the same", peers() + nurse("nurse-x", 10, 10), None, ["pre_dose_vitals"]),
    # flat_min_patients 2: one patient's steady readings are hers.
    ("one patient", peers() + nurse("nurse-x", 10, 10, patients=1), None, []),
    ("two patients", peers() + nurse("nurse-x", 10, 10, patients=2), None,
     ["pre_dose_vitals"]),
    # flat_max_p_value 0.0001 at her 8 peers' rate of the same reading, add-one smoothed:
    # 10 of 10 at (8c + 1) / 98 when each peer copied it at c of her 12 sessions.
    ("everyone the same", peers(flat=12) + nurse("nurse-x", 12, 12), None, []),
    ("peers 4 of 12 the same: p 0.00002", peers(flat=4) + nurse("nurse-x", 12, 10), None,
     ["pre_dose_vitals"]),
    ("peers 5 of 12 the same: p 0.00017", peers(flat=5) + nurse("nurse-x", 12, 10), None,
     []),
    ("peers 5 of 12, p 0.001 allowed", peers(flat=5) + nurse("nurse-x", 12, 10),
     {"flat_max_p_value": Decimal("0.001")}, ["pre_dose_vitals"]),
    # flat_min_sessions 10: her latest ten, however many came before.
    ("30 sessions, the latest 5 the same", peers() + nurse("nurse-x", 30, 5), None, []),
    ("30 sessions, the latest 6 the same", peers() + nurse("nurse-x", 30, 6), None,
     ["pre_dose_vitals"]),
    ("30 sessions, 10 the same before her latest 10", peers() + [
        replace(s, pre_dose=honest(n + 40, "nurse-x", n % 4).pre_dose) if n >= 20 else s
        for n, s in enumerate(nurse("nurse-x", 30, 20))], None, []),
    ("seven peers all the same", peers(7, flat=12) + nurse("nurse-x", 12, 12), None,
     "all"),
    ("alone and flat", nurse("nurse-x", 10, 10), None, ["pre_dose_vitals"]),
    ("sessions that never change", peers() + nurse("nurse-x", 10, 10, "unchanging_session"),
     None, ["unchanging_session,cadss_after_dose"]),
    ("the same CADSS course", peers() + nurse("nurse-x", 10, 10, "cadss_after_dose"), None,
     ["cadss_after_dose"]),
    ("the same peak, courses that differ", [
        replace(s, after_dose=tuple(Vitals(cadss_total=total) for total in course))
        for s, course in zip(nurse("nurse-x", 10), [
            (0, 2, 1), (1, 2, 0), (2, 1, 1), (1, 2, 2), (0, 1, 2)] * 2, strict=True)], None,
     []),
])
def test_flat_readings_thresholds(case, readings, overrides, flagged):
    findings = flat(readings, overrides)
    if flagged == "all":
        # Too few peers to compare with: each flat nurse is judged on her own.
        assert len({f.subject.id for f in findings}) == 8
        return
    assert sorted(f.evidence["measures"] for f in findings
                  if f.subject.id == "nurse-x") == flagged
    assert {f.subject.id for f in findings} <= {"nurse-x"}


def test_flat_readings_say_what_was_the_same_against_what():
    finding, = flat(peers() + nurse("nurse-x", 10, 10))
    assert "(120/80 mmHg, HR 72, SpO2 98%) at 10 of her latest 10 sessions (100%), for 4 " \
        "patients" in finding.summary
    assert "her 8 peers record it at 1.0% of their sessions" in finding.summary


def test_flat_readings_summary_states_the_limit_it_applies():
    # flat_min_share 0.6 is the least share reviewed: 6 of 10 is reviewed, and the summary
    # says "or more", not "at most", so its words match the comparison.
    finding, = flat(peers() + nurse("nurse-x", 10, 6))
    assert "at 6 of her latest 10 sessions (60%)" in finding.summary
    assert "the policy reviews one reading at 60.0% of her sessions or more" in finding.summary
    assert "at most" not in finding.summary.split("; her")[0]
    assert "Check" in finding.summary
    assert (finding.evidence["peers"], finding.evidence["peer_rate"]) == (8, Decimal("0.0102"))


def test_a_course_her_peers_often_record_is_not_flat():
    # Peers record the same CADSS course at half their sessions: 7 of her 10 is no surprise.
    common = [s for n in range(8) for s in nurse(f"peer-{n}", 12, 6, "cadss_after_dose")]
    assert flat(common + nurse("nurse-x", 12, 7, "cadss_after_dose")) == []
    assert flat(peers() + nurse("nurse-x", 12, 7, "cadss_after_dose")) != []
