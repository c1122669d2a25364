"""Monitoring and dosing rules over one visit's session: pre-dose, dose, observations, discharge."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

from safeguards.facts import SessionFacts, Vitals
from safeguards.findings import EvidenceValue, Finding, Severity
from safeguards.policy import Policy
from safeguards.registry import Mode, Registry, RuleMeta

MONITORING = Registry()

# The schema asks for these before a dose: CLINICAL.md wants BP before dosing, and the REMS
# form asks whether vitals were acceptable before it.
PRE_DOSE_VITALS = ("systolic", "diastolic", "heart_rate", "spo2", "respiratory_rate")


def _above(value: int | None, limit: int) -> bool:
    return value is not None and value > limit


def _over_hold(vitals: Vitals, policy: Policy) -> bool:
    """Tell whether the blood pressure is above the pre-dose hold threshold."""
    return (_above(vitals.systolic, policy.value("bp_hold_systolic"))
            or _above(vitals.diastolic, policy.value("bp_hold_diastolic")))


def _minutes(delta: timedelta) -> Decimal:
    # Evidence is exact: a tenth of a minute is as fine as a reviewer needs.
    return (Decimal(delta // timedelta(seconds=1)) / 60).quantize(Decimal("0.1"))


def _evidence(facts: SessionFacts, **values: EvidenceValue | None) -> dict[str, EvidenceValue]:
    # A reading that was never taken is left out rather than reported as a number.
    return {"visit_id": facts.visit_id,
            **{name: value for name, value in values.items() if value is not None}}


def _meta(rule_id: str, title: str, severity: Severity, rationale: str,
          source: str) -> RuleMeta:
    return RuleMeta(id=rule_id, version=1, title=title, severity=severity,
                    rationale=rationale, source=source, mode=Mode.ENABLED)


BP_HOLD = _meta(
    "monitoring.bp_hold_without_justification", "Dosed over the blood-pressure hold",
    Severity.HIGH, "Ketamine raises blood pressure; dosing over the hold needs a written reason.",
    "CLINICAL.md Monitoring: pre-dose hold above 140/90, hold or document why (practice)")


@MONITORING.rule(BP_HOLD)
def bp_hold_without_justification(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose given over the pre-dose blood-pressure hold with no justification."""
    pre = facts.pre_dose
    if not facts.dosed or pre is None or not _over_hold(pre, policy):
        return
    if (facts.bp_justification or "").strip():
        return
    systolic, diastolic = policy.value("bp_hold_systolic"), policy.value("bp_hold_diastolic")
    yield BP_HOLD.finding(
        facts.subject,
        f"Dosed at a pre-dose blood pressure of {pre.systolic}/{pre.diastolic} mmHg, over the "
        f"{systolic}/{diastolic} mmHg hold, with no justification recorded. Check the "
        "session's notes for why the dose was given over the hold, and ask the nurse.",
        _evidence(facts, systolic=pre.systolic, diastolic=pre.diastolic,
                  hold_systolic=systolic, hold_diastolic=diastolic))


NO_PRE_DOSE = _meta(
    "monitoring.dose_without_pre_dose_vitals", "Dosed without pre-dose vitals", Severity.HIGH,
    "Without a baseline nobody can tell whether dosing was safe or the patient recovered.",
    "CLINICAL.md Monitoring: blood pressure before dosing; REMS form: vitals acceptable pre")


@MONITORING.rule(NO_PRE_DOSE)
def dose_without_pre_dose_vitals(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose with no pre-dose vitals, some missing, or vitals taken after it began."""
    pre = facts.pre_dose
    # A phone may send the dose before the pre-dose record: wait for either it or the discharge.
    if not facts.dosed or (pre is None and facts.discharged_at is None):
        return
    missing = [name for name in PRE_DOSE_VITALS if pre is None or getattr(pre, name) is None]
    late = (facts.pre_dose_at is not None and facts.infusion_started_at is not None
            and facts.pre_dose_at > facts.infusion_started_at)
    if not missing and not late:
        return
    reasons = ([f"missing {', '.join(missing)}"] if missing else []) + (
        ["taken after the dose began"] if late else [])
    yield NO_PRE_DOSE.finding(
        facts.subject,
        f"A dose was given without pre-dose vitals: {'; '.join(reasons)}; blood pressure, "
        "heart rate, SpO2 and respiratory rate are required before every dose. Check the "
        "session's record for vitals taken but not entered, and ask the nurse why she dosed.",
        _evidence(facts, missing=", ".join(missing) or None,
                  pre_dose_recorded="yes" if pre is not None else "no",
                  pre_dose_minutes_after_start=_minutes(
                      facts.pre_dose_at - facts.infusion_started_at) if late else None))


ABOVE_PLAN = _meta(
    "dosing.above_plan_max", "Dose above the plan's maximum", Severity.HIGH,
    "The prescriber set a maximum dose; more than that was given.",
    "DESIGN.md Safeguards: dosing above plan")


@MONITORING.rule(ABOVE_PLAN)
def above_plan_max(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose of more micrograms than the plan version's maximum."""
    if not facts.dosed or facts.plan_max_dose_ug is None:
        return
    if facts.dose_ug <= facts.plan_max_dose_ug:
        return
    yield ABOVE_PLAN.finding(
        facts.subject,
        f"A dose of {facts.dose_ug} µg was given; the plan allows at most "
        f"{facts.plan_max_dose_ug} µg. Check the dose against the prescriber's order and the "
        "visit's waste, and ask the nurse why more was given.",
        _evidence(facts, dose_ug=facts.dose_ug, plan_max_dose_ug=facts.plan_max_dose_ug))


ABOVE_CEILING = _meta(
    "dosing.above_ceiling", "Racemic IV dose above the mg/kg ceiling", Severity.CRITICAL,
    "Above 1.0 mg/kg racemic ketamine IV adds dissociation and no antidepressant benefit.",
    "CLINICAL.md Drugs: 1.0 mg/kg, Krystal et al. 2019 (Neuron 101:774); Fava 2017")


def _within_justified_plan(facts: SessionFacts) -> bool:
    """Tell whether the dose is within a plan written above the protocol dose with a reason.

    That plan was flagged when it was written (`prescriber.above_protocol`): its doses follow
    from it, and one flag per dose would bury that one cause. A dose above the plan's own
    maximum is still flagged, by `dosing.above_plan_max`.
    """
    return (facts.plan_dose_justified and facts.plan_max_dose_ug is not None
            and facts.dose_ug is not None and facts.dose_ug <= facts.plan_max_dose_ug)


@MONITORING.rule(ABOVE_CEILING)
def above_ceiling(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag racemic ketamine given IV above the absolute mg/kg ceiling."""
    if not facts.dosed or facts.ug_per_kg is None:
        return
    # Esketamine and other routes have their own doses; this ceiling is racemic IV's.
    if (facts.active_ingredient or "").lower() != "ketamine" or (
            facts.route or "").upper() != "IV":
        return
    ceiling = policy.value("max_mg_per_kg_racemic_iv")
    if facts.ug_per_kg <= ceiling * 1000 or _within_justified_plan(facts):
        return
    yield ABOVE_CEILING.finding(
        facts.subject,
        f"Racemic ketamine IV at {facts.ug_per_kg / 1000} mg/kg, above the {ceiling} mg/kg "
        "ceiling. Check the weight and the dose recorded, and the patient's observations "
        "after it.",
        _evidence(facts, ug_per_kg=facts.ug_per_kg, mg_per_kg=facts.ug_per_kg / 1000,
                  ceiling_mg_per_kg=ceiling, dose_ug=facts.dose_ug, weight_g=facts.weight_g))


INFUSION_SHORT = _meta(
    "monitoring.infusion_short", "Infusion shorter than planned", Severity.MEDIUM,
    "A faster infusion gives a higher peak level and more dissociation than the plan meant.",
    "CLINICAL.md Drugs: 0.5 mg/kg over 40 min, Krystal et al. 2019; tolerance is practice")


@MONITORING.rule(INFUSION_SHORT)
def infusion_short(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag an infusion that ran shorter than the plan's minutes less the tolerance."""
    if not facts.dosed or facts.infusion_ended_at is None or facts.plan_infusion_minutes is None:
        return
    tolerance = policy.value("infusion_tolerance_minutes")
    shortest = timedelta(minutes=max(facts.plan_infusion_minutes - tolerance, 0))
    ran = facts.infusion_ended_at - facts.infusion_started_at
    if ran >= shortest:
        return
    yield INFUSION_SHORT.finding(
        facts.subject,
        f"The infusion ran {_minutes(ran)} min; the plan says {facts.plan_infusion_minutes} "
        f"min, and {tolerance} min less is the shortest allowed. Check the infusion's start "
        "and end times and the patient's observations during it.",
        _evidence(facts, infusion_minutes=_minutes(ran),
                  plan_infusion_minutes=facts.plan_infusion_minutes,
                  tolerance_minutes=tolerance))


EARLY_DISCHARGE = _meta(
    "monitoring.early_discharge", "Discharged before the monitoring window ended",
    Severity.HIGH, "Sedation, dissociation and blood-pressure rises can last for hours.",
    "CLINICAL.md Monitoring: at least 2 h after a dose, Spravato REMS")


@MONITORING.rule(EARLY_DISCHARGE)
def early_discharge(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag a discharge sooner after the dose began than the monitoring window."""
    if not facts.dosed or facts.discharged_at is None:
        return
    window = policy.value("monitoring_window_minutes")
    monitored = facts.discharged_at - facts.infusion_started_at
    if monitored >= timedelta(minutes=window):
        return
    yield EARLY_DISCHARGE.finding(
        facts.subject,
        f"Discharged {_minutes(monitored)} min after the dose began; monitoring lasts at "
        f"least {window} min. Check the discharge observations, and ask the nurse why she "
        "left early.",
        _evidence(facts, minutes_monitored=_minutes(monitored), window_minutes=window))


NOT_RECOVERED = _meta(
    "monitoring.discharge_not_recovered", "Discharged before recovering", Severity.HIGH,
    "Monitoring lasts until sedation, dissociation and blood pressure are back to baseline.",
    "CLINICAL.md Monitoring: until sedation and dissociation resolve, Spravato REMS; any "
    "MOAA/S drop is sedation, Spravato label; CADSS delta and BP hold are practice")


@MONITORING.rule(NOT_RECOVERED)
def discharge_not_recovered(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag a discharge still sedated, dissociated or over the blood-pressure hold."""
    end = facts.discharge
    if not facts.dosed or end is None:
        return
    pre = facts.pre_dose or Vitals()
    # No pre-dose CADSS means no known dissociation before the dose.
    cadss_limit = (pre.cadss_total or 0) + policy.value("cadss_discharge_delta")
    reasons = []
    if end.moaas is not None and pre.moaas is not None and end.moaas < pre.moaas:
        reasons.append(f"MOAA/S {end.moaas} below the pre-dose {pre.moaas}")
    if _above(end.cadss_total, cadss_limit):
        reasons.append(f"CADSS {end.cadss_total} above {cadss_limit}")
    if _over_hold(end, policy):
        reasons.append(f"blood pressure {end.systolic}/{end.diastolic} mmHg over the hold")
    if not reasons:
        return
    yield NOT_RECOVERED.finding(
        facts.subject,
        f"Discharged before recovering: {'; '.join(reasons)}; sedation, dissociation and blood "
        "pressure must be back near the pre-dose readings. Check the discharge observations "
        "and the nurse's notes for why the patient was left.",
        _evidence(facts, moaas=end.moaas, pre_dose_moaas=pre.moaas,
                  cadss_total=end.cadss_total, cadss_limit=cadss_limit,
                  systolic=end.systolic, diastolic=end.diastolic,
                  hold_systolic=policy.value("bp_hold_systolic"),
                  hold_diastolic=policy.value("bp_hold_diastolic")))


MISSING_OBSERVATIONS = _meta(
    "monitoring.missing_observations", "Observations missing", Severity.MEDIUM,
    "Unrecorded minutes are unmonitored minutes, and the BP peak is when a rise shows.",
    "CLINICAL.md Monitoring: every 15 min after the dose and BP ~40 min after, Spravato "
    "label; Emory series")


@MONITORING.rule(MISSING_OBSERVATIONS)
def missing_observations(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag too few observations for the time monitored, or no BP reading near the peak."""
    if not facts.dosed or facts.discharged_at is None:
        return
    monitored = max((facts.discharged_at - facts.infusion_started_at) // timedelta(minutes=1), 0)
    interval = policy.value("observation_interval_minutes")
    required = monitored // interval if interval else 0
    taken = [o for o in facts.observations if o.minutes is not None and 0 <= o.minutes <= monitored]
    peak, tolerance = policy.value("bp_peak_minutes"), policy.value("bp_peak_tolerance_minutes")
    peak_bp = any(peak - tolerance <= o.minutes <= peak + tolerance for o in taken
                  if o.vitals.systolic is not None and o.vitals.diastolic is not None)
    reasons = ([f"{len(taken)} observations in {monitored} min, {required} required"]
               if len(taken) < required else [])
    if not peak_bp:
        reasons.append(f"no blood pressure between {peak - tolerance} and "
                       f"{peak + tolerance} min")
    if not reasons:
        return
    yield MISSING_OBSERVATIONS.finding(
        facts.subject,
        f"Observations missing: {'; '.join(reasons)} (one is due every {interval} min, and a "
        f"blood pressure near the {peak}-min peak). Check the session's record for "
        "observations taken but not entered, and ask the nurse how the patient was watched.",
        _evidence(facts, observations=len(taken), required=required,
                  minutes_monitored=monitored, interval_minutes=interval,
                  bp_at_peak="yes" if peak_bp else "no"))


WEIGHT_STALE = _meta(
    "monitoring.weight_stale", "Dose worked out from an old or missing weight", Severity.MEDIUM,
    "mg/kg is only as right as the weight; an old weight can hide an overdose.",
    "Vigil practice default (no published rule); CLINICAL.md Drugs: doses are per kg")


@MONITORING.rule(WEIGHT_STALE)
def weight_stale(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose whose weight is missing or older than the policy allows."""
    if not facts.dosed:
        return
    oldest = policy.value("weight_max_age_days")
    if facts.weight_g is None or facts.weight_measured_at is None:
        yield WEIGHT_STALE.finding(
            facts.subject,
            f"A dose was given with no weight recorded, so its mg/kg is unknown; a weight at "
            f"most {oldest} days old is required. Check the patient's chart for a current "
            "weight and the dose against it.",
            _evidence(facts, max_age_days=oldest))
        return
    age = facts.infusion_started_at - facts.weight_measured_at
    if age <= timedelta(days=oldest):
        return
    yield WEIGHT_STALE.finding(
        facts.subject,
        f"The weight used was {age.days} days old at the dose; at most {oldest} days allowed. "
        "Check the patient's chart for a current weight and the dose against it.",
        _evidence(facts, weight_g=facts.weight_g, weight_age_days=age.days,
                  max_age_days=oldest))


ALARMING = _meta(
    "monitoring.alarming_vitals", "Alarming vital signs", Severity.HIGH,
    "Readings that are plausible but dangerous need a clinician's eyes, whatever came next.",
    "CLINICAL.md Monitoring: BP rise >= +40/+25 (Spravato label), severe hypertension (Yale "
    "series 2024); absolute cut-offs are practice")

# (reading, comparison, its sign, threshold): each alarms when `comparison(value, limit)`.
LIMITS: tuple[tuple[str, Callable[[int, int], bool], str, str], ...] = (
    ("systolic", operator.ge, "≥", "alarm_systolic"),
    ("diastolic", operator.ge, "≥", "alarm_diastolic"),
    ("spo2", operator.lt, "<", "alarm_spo2"),
    ("respiratory_rate", operator.lt, "<", "alarm_respiratory_rate"),
    ("heart_rate", operator.gt, ">", "alarm_heart_rate_high"),
    ("heart_rate", operator.lt, "<", "alarm_heart_rate_low"),
)
RISES = (("systolic", "bp_rise_systolic"), ("diastolic", "bp_rise_diastolic"))


def _alarms(vitals: Vitals, baseline: Vitals | None,
            policy: Policy) -> list[tuple[str, int, str]]:
    """Return (reading, value, why) for each alarming value in `vitals`."""
    found = []
    for name, compare, sign, threshold in LIMITS:
        value, limit = getattr(vitals, name), policy.value(threshold)
        if value is not None and compare(value, limit):
            found.append((name, value, f"{sign} {limit}"))
    for name, threshold in RISES:
        value, before = getattr(vitals, name), getattr(baseline, name, None)
        limit = policy.value(threshold)
        if value is not None and before is not None and value - before >= limit:
            found.append((name, value, f"+{value - before} over pre-dose, ≥ +{limit}"))
    return found


def _readings(facts: SessionFacts) -> Iterator[tuple[str, str, Vitals, Vitals | None]]:
    """Yield (evidence label, words, vitals, baseline) for every set of readings."""
    if facts.pre_dose is not None:
        yield "pre_dose", "pre-dose", facts.pre_dose, None
    for number, observed in enumerate(facts.observations, 1):
        when = f" at {observed.minutes} min" if observed.minutes is not None else ""
        yield f"observation_{number}", f"observation {number}{when}", observed.vitals, \
            facts.pre_dose
    if facts.discharge is not None:
        yield "discharge", "discharge", facts.discharge, facts.pre_dose


@MONITORING.rule(ALARMING)
def alarming_vitals(facts: SessionFacts, policy: Policy) -> Iterator[Finding]:
    """Flag, once per session, every alarming vital sign recorded at the visit."""
    evidence: dict[str, EvidenceValue] = {}
    words = []
    for label, place, vitals, baseline in _readings(facts):
        for name, value, why in _alarms(vitals, baseline, policy):
            evidence[f"{label}.{name}"] = value
            words.append(f"{place} {name} {value} ({why})")
    if not words:
        return
    yield ALARMING.finding(
        facts.subject,
        f"Alarming vital signs: {'; '.join(words)}. Check the session's notes for what the "
        "nurse did about them, and the patient's readings at discharge.",
        _evidence(facts, alarms=len(words), **evidence))
