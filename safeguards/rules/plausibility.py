"""Plausibility of the inputs a dose depends on: weights and the readings of a session.

A dose in mg is the plan's mg/kg times the weight recorded, so a weight taken on trust is a
dose taken on trust: these rules question weights that move faster than a body does, a weight
raised by the dosing nurse just before her dose, doses whose mg rise while mg/kg stays flat,
and readings that never vary from one session to the next.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

from safeguards.facts import (
    Dose,
    DoseTally,
    Facts,
    SeriesDose,
    SessionReadings,
    Vitals,
    Weighing,
)
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Number, Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.rules.indexes import Kept, dose_series, kept
from safeguards.stats import binomial_upper_tail, median, median_of_counts, rounded, significant

PLAUSIBILITY = Registry()
WEEK = timedelta(days=7)


def _kg(grams: int | Fraction) -> Decimal:
    return rounded(Fraction(grams) / 1000, 1)


def _percent(ratio: Number) -> Decimal:
    return rounded(Fraction(ratio) * 100, 1)


def weighings_by_patient(facts: Facts) -> dict[str, list[Weighing]]:
    """Return each patient's weighings, oldest first."""
    found: dict[str, list[Weighing]] = defaultdict(list)
    for weighing in sorted(facts.weighings, key=lambda w: (w.measured_at, w.id)):
        found[weighing.patient_id].append(weighing)
    return found


WEIGHT_CHANGE = RuleMeta(
    id="plausibility.weight_change", version=1,
    title="Weight changing faster than a body does", severity=Severity.MEDIUM,
    rationale="Every mg/kg dose is worked out from the latest weight: a weight that moves "
              "faster than physiology allows is an entry error or a weight made up to move "
              "the dose.",
    source="CLINICAL.md Orders and plausibility: weight plausibility, 2% in a week is "
           "clinically significant (ASPEN/Academy, White et al. JPEN 2012); the 5% a week "
           "judged over at least a week is practice",
    mode=Mode.ENABLED)


@dataclass(frozen=True)
class Change:
    """A weighing against the one before it, and the most a body could have changed."""

    before: Weighing
    after: Weighing
    allowed_g: Fraction

    @property
    def change_g(self) -> int:
        """Return the weight gained (negative: lost) between the two weighings."""
        return self.after.weight_g - self.before.weight_g

    @property
    def days(self) -> Decimal:
        """Return the days between the two weighings, to a tenth."""
        seconds = (self.after.measured_at - self.before.measured_at) // timedelta(seconds=1)
        return rounded(Fraction(seconds, 86_400), 1)


def _changes(weighings: list[Weighing], policy: Policy) -> Iterator[Change]:
    per_week = Fraction(policy.value("weight_max_change_per_week"))
    least = policy.value("weight_min_change_g")
    for before, after in pairwise(weighings):
        # A day's fluid shift is not a week's trend: the time is counted as a week at least.
        elapsed = (after.measured_at - before.measured_at) // timedelta(seconds=1)
        weeks = max(Fraction(elapsed, WEEK // timedelta(seconds=1)), Fraction(1))
        change = Change(before, after, before.weight_g * per_week * weeks)
        if abs(change.change_g) >= least and abs(change.change_g) > change.allowed_g:
            yield change


@PLAUSIBILITY.rule(WEIGHT_CHANGE)
def weight_change(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a patient whose weight changed faster than the policy's % a week allows."""
    for patient_id, weighings in weighings_by_patient(facts).items():
        changes = list(_changes(weighings, policy))
        if not changes:
            continue
        latest = changes[-1]
        share = Fraction(latest.change_g, latest.before.weight_g)
        yield WEIGHT_CHANGE.finding(
            Subject(SubjectKind.PATIENT, patient_id),
            f"The patient's recorded weight went from {_kg(latest.before.weight_g)} kg to "
            f"{_kg(latest.after.weight_g)} kg ({rounded(share * 100, 1):+}%) in "
            f"{latest.days} days, more than the {_kg(latest.allowed_g)} kg a body can change "
            f"in that time ({_percent(policy.value('weight_max_change_per_week'))}% a week, judged "
            f"over a week at least); {len(changes)} such change(s) among the patient's weighings. "
            "Check the weighing with the nurse who recorded it and the patient's other "
            "records before a dose is worked out from it.",
            evidence(patient_id=patient_id, nurse_id=latest.after.recorded_by_id,
                     weighing_id=latest.after.id, previous_weighing_id=latest.before.id,
                     weight_g=latest.after.weight_g, previous_weight_g=latest.before.weight_g,
                     change_g=latest.change_g, days=latest.days,
                     allowed_change_g=int(latest.allowed_g),
                     max_change_per_week=policy.value("weight_max_change_per_week"),
                     implausible_changes=len(changes), visit_id=latest.after.visit_id,
                     measured_at=latest.after.measured_at),
            severity=Severity.HIGH if len(changes) >= 3 else None)


WEIGHT_BEFORE_DOSE = RuleMeta(
    id="plausibility.weight_before_dose", version=1,
    title="Weight raised by the dosing nurse just before her dose", severity=Severity.MEDIUM,
    rationale="A nurse who records a heavier weight at the visit where she gives the dose "
              "raises the dose in mg while its mg/kg looks right; the extra can be kept.",
    source="CLINICAL.md Orders and plausibility: weight plausibility, a larger change between "
           "two doses days apart is more likely an entry error or manipulation (practice), "
           "White et al. JPEN 2012; Drugs: dose per kg, Krystal et al. 2019",
    mode=Mode.ENABLED)


@dataclass(frozen=True)
class Raised:
    """A dose given after its nurse recorded a weight above the patient's usual one."""

    dose: Dose
    weighing: Weighing
    usual_g: Fraction
    prior: int

    @property
    def rise(self) -> Fraction:
        """Return the weighing's rise over the usual weight, as a ratio."""
        return self.weighing.weight_g / self.usual_g - 1


def _raised(dose: Dose, weighings: list[Weighing], policy: Policy) -> Raised | None:
    since = dose.given_at - timedelta(hours=int(policy.value("weight_before_dose_hours")))
    own = [w for w in weighings if w.recorded_by_id == dose.nurse_id
           and since <= w.measured_at <= dose.given_at]
    prior = [w for w in weighings if w.measured_at < since][-policy.value("weight_prior_count"):]
    if not own or not prior:
        return None
    usual = median([w.weight_g for w in prior])
    found = Raised(dose, own[-1], usual, len(prior))
    if (own[-1].weight_g - usual < policy.value("weight_min_change_g")
            or found.rise <= Fraction(policy.value("weight_before_dose_rise"))):
        return None
    return found


@PLAUSIBILITY.rule(WEIGHT_BEFORE_DOSE)
def weight_before_dose(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose own weighing just before her dose raised the patient's weight."""
    weighings = weighings_by_patient(facts)
    # One case per nurse and patient: every check that reads the patient sees all of it.
    cases: dict[tuple[str, str], list[Raised]] = defaultdict(list)
    for dose in sorted(facts.doses, key=lambda dose: (dose.given_at, dose.id)):
        found = _raised(dose, weighings.get(dose.patient_id, []), policy)
        if found is not None:
            cases[dose.nurse_id, dose.patient_id].append(found)
    for (nurse_id, patient_id), found in cases.items():
        latest = found[-1]
        yield WEIGHT_BEFORE_DOSE.finding(
            Subject(SubjectKind.NURSE, nurse_id),
            f"The nurse recorded the patient at {_kg(latest.weighing.weight_g)} kg just "
            f"before giving {_kg(latest.dose.quantity_ug)} mg, {_percent(latest.rise)}% "
            f"above the {_kg(latest.usual_g)} kg median of the patient's {latest.prior} "
            f"weighings before (at most {_percent(policy.value('weight_before_dose_rise'))}% "
            f"and {policy.value('weight_min_change_g')} g allowed); {len(found)} of her doses "
            "to this patient followed such a weighing. Check the weight against another "
            "nurse's weighing, and whether the extra mg was given or kept.",
            evidence(nurse_id=nurse_id, patient_id=patient_id,
                     dose_id=latest.dose.id, visit_id=latest.dose.visit_id,
                     weighing_id=latest.weighing.id, weight_g=latest.weighing.weight_g,
                     usual_weight_g=int(latest.usual_g), rise=rounded(latest.rise, 3),
                     max_rise=policy.value("weight_before_dose_rise"),
                     prior_weighings=latest.prior, dose_ug=latest.dose.quantity_ug,
                     doses=len(found), dose_ids=",".join(r.dose.id for r in found[-10:]),
                     given_at=latest.dose.given_at),
            key=(patient_id,), severity=Severity.HIGH if len(found) >= 2 else None)


MG_RISE_FLAT_PER_KG = RuleMeta(
    id="plausibility.mg_rise_flat_per_kg", version=1,
    title="Doses in mg rising while mg/kg stays flat", severity=Severity.MEDIUM,
    rationale="When a patient's doses grow in mg but not in mg/kg, the weight behind them grew: "
              "against the plan (dosing.creep) nothing moved, yet more drug went out. Real "
              "weight gain of that size is rare between doses.",
    source="CLINICAL.md Orders and plausibility: weight plausibility, more than 5% in a month "
           "is significant (White et al. JPEN 2012); Drugs: dose per kg, Krystal et al. 2019; "
           "the rise and the tolerance are practice",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@dataclass(frozen=True)
class Medians:
    """The median dose in µg, in µg/kg, and the weight they imply, of a run of doses."""

    ug: Fraction
    ug_per_kg: Fraction

    @classmethod
    def of(cls, counted: list[tuple[SeriesDose | DoseTally, int]]) -> Medians:
        """Return the medians of the doses, each taken as often as counted, with its µg/kg."""
        return cls(median_of_counts([(d.quantity_ug, count) for d, count in counted]),
                   median_of_counts([(Fraction(d.ug_per_kg or 0), count)
                                     for d, count in counted]))

    @property
    def weight_g(self) -> Fraction:
        """Return the weight the medians imply, in grams."""
        return self.ug * 1000 / self.ug_per_kg


def _per_kg(dose: SeriesDose | DoseTally) -> bool:
    return bool(dose.ug_per_kg)


@PLAUSIBILITY.rule(MG_RISE_FLAT_PER_KG)
def mg_rise_flat_per_kg(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a patient whose recent doses rose in mg while their mg/kg stayed flat."""
    recent_count = int(policy.value("weight_dose_recent_doses"))
    least = max(int(policy.value("weight_dose_min_doses")), recent_count + 1)
    for series in dose_series(facts):
        weighed = kept(series, _per_kg, recent_count)
        if weighed.count < least:
            continue
        before = Medians.of(weighed.earlier)
        now = Medians.of([(dose, 1) for dose in weighed.recent])
        rise = now.ug / before.ug - 1
        drift = now.ug_per_kg / before.ug_per_kg - 1
        if (rise <= Fraction(policy.value("weight_dose_min_rise"))
                or abs(drift) > Fraction(policy.value("weight_dose_flat_tolerance"))):
            continue
        yield _flat_per_kg_finding(policy, series.patient_id, weighed, before, now, rise, drift,
                                   recent_count)


def _flat_per_kg_finding(policy: Policy, patient_id: str, weighed: Kept,
                         before: Medians, now: Medians, rise: Fraction, drift: Fraction,
                         recent_count: int) -> Finding:
    recent = weighed.recent
    return MG_RISE_FLAT_PER_KG.finding(
        Subject(SubjectKind.PATIENT, patient_id),
        f"The patient's last {recent_count} doses have a median of "
        f"{rounded(now.ug / 1000, 1)} mg, {rounded(rise * 100, 0)}% above the "
        f"{rounded(before.ug / 1000, 1)} mg of the {weighed.count - recent_count} doses "
        f"before, while their mg/kg moved {rounded(drift * 100, 1)}% (within "
        f"{_percent(policy.value('weight_dose_flat_tolerance'))}%): the weight behind them went "
        f"from {_kg(before.weight_g)} kg to {_kg(now.weight_g)} kg. Check the weighings "
        "those doses used, who recorded them, and the vials drawn against the doses given.",
        evidence(patient_id=patient_id, nurse_id=recent[-1].nurse_id,
                 recent_median_ug=rounded(now.ug, 0), earlier_median_ug=rounded(before.ug, 0),
                 rise=rounded(rise, 3), min_rise=policy.value("weight_dose_min_rise"),
                 recent_median_ug_per_kg=rounded(now.ug_per_kg, 1),
                 earlier_median_ug_per_kg=rounded(before.ug_per_kg, 1),
                 per_kg_drift=rounded(drift, 3),
                 flat_tolerance=policy.value("weight_dose_flat_tolerance"),
                 recent_weight_g=int(now.weight_g), earlier_weight_g=int(before.weight_g),
                 doses=weighed.count, recent_dose_ids=",".join(d.id for d in recent),
                 last_dose_at=recent[-1].given_at))


FLAT_READINGS = RuleMeta(
    id="plausibility.flat_readings", version=2,
    title="Readings that never vary across a nurse's sessions", severity=Severity.MEDIUM,
    rationale="Blood pressure, pulse and oxygen differ from one person and one day to the "
              "next, and rise after ketamine; dissociation varies widely. The same readings "
              "session after session, for several patients, were written rather than taken, "
              "and the monitoring they vouch for may not have happened.",
    source="CLINICAL.md Monitoring: blood pressure rises after the dose (Spravato label), "
           "CADSS after IV ketamine mean ~7.7, SD 9.2 (Bremner 2024); Diversion: against peers "
           "in the same role (Omnicell; Bluesight IRIS); exact binomial tail at her peers' "
           "rate of the same reading; the shares are practice",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


# A session that has the measure but whose value no other session can share.
MOVES = "moves"


def _vital_set(vitals: Vitals | None) -> tuple[int | None, ...] | None:
    if vitals is None:
        return None
    values = (vitals.systolic, vitals.diastolic, vitals.heart_rate, vitals.spo2)
    return None if None in values else values


def _pre_dose_vitals(readings: SessionReadings) -> Hashable | None:
    return _vital_set(readings.pre_dose)


def _unchanging_session(readings: SessionReadings) -> Hashable | None:
    sets = [_vital_set(v) for v in (readings.pre_dose, *readings.after_dose)]
    complete = [one for one in sets if one is not None]
    if len(complete) < 3:
        return None
    return "unchanging" if len(set(complete)) == 1 else MOVES


def _cadss_after_dose(readings: SessionReadings) -> Hashable | None:
    totals = tuple(v.cadss_total for v in readings.after_dose if v.cadss_total is not None)
    # One score repeats by chance (a peak of 2 is common); a whole course rarely does.
    return totals if len(totals) >= 2 else None


def _vitals_words(value: tuple) -> str:
    systolic, diastolic, heart_rate, spo2 = value
    return f"{systolic}/{diastolic} mmHg, HR {heart_rate}, SpO2 {spo2}%"


def _cadss_words(value: tuple) -> str:
    return "CADSS " + ", ".join(str(total) for total in value)


Measure = Callable[[SessionReadings], Hashable | None]
# Each measure: what a reviewer reads, the session's value, and the value in words.
MEASURES: dict[str, tuple[str, Measure, Callable[[tuple], str]]] = {
    "pre_dose_vitals": ("the same pre-dose vital signs", _pre_dose_vitals, _vitals_words),
    "unchanging_session": ("sessions whose readings never changed from pre-dose to "
                           "discharge", _unchanging_session,
                           lambda _: "every reading of the session the same"),
    "cadss_after_dose": ("the same dissociation scores (CADSS) after the dose, reading by "
                         "reading", _cadss_after_dose, _cadss_words),
}


@dataclass(frozen=True)
class Flatness:
    """A nurse's most repeated value of one measure: over how many sessions and patients."""

    nurse_id: str
    value: Hashable
    identical: int
    sessions: int
    patients: int
    visit_ids: tuple[str, ...]

    @property
    def share(self) -> Fraction:
        """Return the share of her sessions with that value."""
        return Fraction(self.identical, self.sessions)


def _flatness(nurse_id: str, sessions: list[SessionReadings], measure: Measure,
              latest: int) -> Flatness | None:
    """Return her most repeated value of `measure` over her `latest` sessions that have it,
    or None with fewer."""
    valued = [(one, value) for one in sessions if (value := measure(one)) is not None]
    if len(valued) < latest:
        return None
    # Her latest sessions alone: a new habit shows at once, not diluted by her months before.
    valued = valued[-latest:]
    counts = Counter(value for _, value in valued if value != MOVES)
    if not counts:
        return Flatness(nurse_id, MOVES, 0, len(valued), 0, ())
    top, identical = max(counts.items(), key=lambda item: (item[1], repr(item[0])))
    same = [one for one, value in valued if value == top]
    return Flatness(nurse_id, top, identical, len(valued),
                    len({one.patient_id for one in same}), tuple(one.visit_id for one in same))


@dataclass(frozen=True)
class Judged:
    """A nurse's flatness on one measure against her peers' readings, when she has enough."""

    measure: str
    found: Flatness
    peers: int
    # How often her peers recorded the same value (add-one smoothed), and the chance she
    # recorded it so often at that rate; None when she has too few peers to compare with.
    peer_rate: Fraction | None
    p_value: Fraction | None


@PLAUSIBILITY.rule(FLAT_READINGS)
def flat_readings(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse who records one identical reading at flat_min_share or more of her latest
    sessions (the share is the policy's minimum to review, reached at exactly it), for
    several patients, far more often than her peers record that reading."""
    by_nurse: dict[str, list[SessionReadings]] = defaultdict(list)
    for readings in sorted(facts.readings, key=lambda r: (r.recorded_at, r.visit_id)):
        by_nurse[readings.nurse_id].append(readings)
    flat: dict[str, list[Judged]] = defaultdict(list)
    for name, (_, measure, _) in MEASURES.items():
        for judged in _judged(name, measure, by_nurse, policy):
            if _flat(judged, policy):
                flat[judged.found.nurse_id].append(judged)
    # One case per nurse: the flattest measure leads, the others are named beside it.
    for measures in flat.values():
        measures.sort(key=lambda judged: -judged.found.share)
        yield _flat_finding(policy, measures)


def _judged(name: str, measure: Measure,
            by_nurse: dict[str, list[SessionReadings]], policy: Policy) -> Iterator[Judged]:
    latest = int(policy.value("flat_min_sessions"))
    values = {nurse_id: [value for one in sessions if (value := measure(one)) is not None]
              for nurse_id, sessions in by_nurse.items()}
    everyone = Counter(value for own in values.values() for value in own)
    recorded = sum(len(own) for own in values.values())
    found = [flatness for nurse_id, sessions in by_nurse.items()
             if (flatness := _flatness(nurse_id, sessions, measure, latest)) is not None]
    for one in found:
        own, peers = values[one.nurse_id], len(found) - 1
        if peers < policy.value("peer_min_peers"):
            yield Judged(name, one, peers, None, None)
            continue
        # Small scores repeat by chance (a CADSS of 2 is common): what counts is how often
        # her peers record the same value, not that it repeats.
        rate = Fraction(everyone[one.value] - own.count(one.value) + 1,
                        recorded - len(own) + 2)
        yield Judged(name, one, peers, rate,
                     binomial_upper_tail(one.identical, one.sessions, rate))


def _flat(judged: Judged, policy: Policy) -> bool:
    found = judged.found
    if (found.share < Fraction(policy.value("flat_min_share"))
            or found.patients < policy.value("flat_min_patients")):
        return False
    # A form that fills a default for everyone is a form to fix, not a nurse to review.
    return (judged.p_value is None
            or judged.p_value <= Fraction(policy.value("flat_max_p_value")))


def _flat_finding(policy: Policy, measures: list[Judged]) -> Finding:
    lead = measures[0]
    found, max_p = lead.found, policy.value("flat_max_p_value")
    words, _, described = MEASURES[lead.measure]
    if lead.p_value is None:
        compared = (f"; with {lead.peers} peers (fewer than "
                    f"{policy.value('peer_min_peers')}) she is judged on her own")
    else:
        compared = (f"; her {lead.peers} peers record it at {_percent(lead.peer_rate)}% of "
                    f"their sessions, so {found.identical} of {found.sessions} by chance is "
                    f"{significant(lead.p_value)} (at most {max_p})")
    also = "".join(f"; also {MEASURES[more.measure][0]} at {_percent(more.found.share)}% of "
                   "her latest sessions" for more in measures[1:])
    return FLAT_READINGS.finding(
        Subject(SubjectKind.NURSE, found.nurse_id),
        f"The nurse recorded {words} ({described(found.value)}) at "
        f"{found.identical} of her latest {found.sessions} sessions "
        f"({rounded(found.share * 100, 0)}%), for {found.patients} patients, where honest "
        f"readings vary and the policy reviews one reading at "
        f"{_percent(policy.value('flat_min_share'))}% of her sessions or more"
        f"{compared}{also}. Check whether the readings were taken: compare them with the "
        "monitor's own record and ask the patients about the visits.",
        evidence(nurse_id=found.nurse_id, measure=lead.measure,
                 measures=",".join(judged.measure for judged in measures),
                 reading=described(found.value), identical_sessions=found.identical,
                 sessions=found.sessions, share=rounded(found.share, 3),
                 patients=found.patients, min_share=policy.value("flat_min_share"),
                 peers=lead.peers,
                 peer_rate=None if lead.peer_rate is None else rounded(lead.peer_rate, 4),
                 p_value=None if lead.p_value is None else significant(lead.p_value),
                 max_p_value=max_p, visit_ids=",".join(found.visit_ids[-10:])))
