"""Frequency rules: doses far enough apart, within the phase's 7- and 28-day limits, at visits.

The minimum interval is in real hours. The 7- and 28-day limits count calendar days in the
organisation's zone, as the scheduler does: a weekly dose at 10:00 stays weekly across a
daylight-saving change, when the real gap is 167 or 169 hours.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

from safeguards.facts import Dose, Facts, Visit
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence, hours, minutes
from safeguards.rules.indexes import doses_by_patient, plan_policies

FREQUENCY = Registry()
WINDOW_DAYS = (7, 28)
# A visit in one of these did not take place, so a dose recorded against it had no visit.
NOT_VISITED = ("cancelled", "missed", "rescheduled")
# A cancelled or rescheduled visit held no slot: the visit that replaced it counts instead.
VOID = ("cancelled", "rescheduled")


def _overridden(dose: Dose, visits: dict[str, Visit]) -> bool:
    # A prescriber approved this visit outside the frequency rules; clusters of such
    # approvals are frequency.extra_visit_cluster's to judge.
    visit = visits.get(dose.visit_id or "")
    return visit is not None and visit.override


def _counted_from(dose: Dose) -> int:
    """Return the first local day whose doses count toward the dose's phase's 7- and 28-day
    limits, as an ordinal."""
    # A phase's limits are for its own doses, as the scheduler counts them: induction's twice
    # weekly does not fill the 28 days of the weekly maintenance that follows it. Later
    # phases' doses are never in a window that ends on this dose.
    phase = dose.phase
    return (phase.counts_from if phase and phase.counts_from else date.min).toordinal()


def _limits(dose: Dose, policy_of: Callable[[str | None], Policy]) -> tuple[int, int, int]:
    """Return the dose's minimum interval in hours and its 7- and 28-day limits."""
    if dose.phase is not None:
        phase = dose.phase
        return phase.min_interval_hours, phase.max_per_7_days, phase.max_per_28_days
    # With no phase known, only the loosest default phase's limits can be held against it.
    rules = policy_of(dose.plan_version_id)
    return (rules.value("min_interval_hours"), rules.value("induction_max_per_7_days"),
            rules.value("induction_max_per_28_days"))


INTERVAL = RuleMeta(
    id="frequency.interval_below_min", version=2,
    title="Dose sooner after the previous one than the phase allows", severity=Severity.HIGH,
    rationale="The antidepressant effect lasts days; doses closer together add dissociation "
              "and abuse liability, not benefit.",
    source="CLINICAL.md Frequency: minimum 48 h between doses, twice weekly at most, Krystal "
           "et al. 2019",
    mode=Mode.ENABLED)


@FREQUENCY.rule(INTERVAL)
def interval_below_min(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose given sooner after the patient's previous dose than its phase's minimum."""
    visits, policy_of = {visit.id: visit for visit in facts.visits}, plan_policies(facts, policy)
    for patient_id, doses in doses_by_patient(facts).items():
        for previous, dose in pairwise(doses):
            least = _limits(dose, policy_of)[0]
            # Visits are booked the minimum apart; a dose starts a little off its booked time.
            slack = timedelta(minutes=policy_of(dose.plan_version_id).value(
                "interval_tolerance_minutes"))
            gap = dose.given_at - previous.given_at
            if gap >= timedelta(hours=least) - slack or _overridden(dose, visits):
                continue
            yield INTERVAL.finding(
                Subject(SubjectKind.PATIENT, patient_id),
                f"A dose was given {hours(gap)} h after the previous one; the phase requires "
                f"at least {least} h (less {slack // timedelta(minutes=1)} min for timing). "
                "Check the visit schedule and the nurse's notes for why the dose came early.",
                evidence(patient_id=patient_id, nurse_id=dose.nurse_id, dose_id=dose.id,
                         previous_dose_id=previous.id, given_at=dose.given_at,
                         previous_given_at=previous.given_at, hours_apart=hours(gap),
                         min_interval_hours=least,
                         phase=dose.phase.name if dose.phase else None),
                # One case per patient and nurse: each dose too soon is an occurrence of it.
                key=(dose.nurse_id,), occurrence=dose.id)


WINDOW = RuleMeta(
    id="frequency.window_exceeded", version=2,
    title="More doses in 7 or 28 days than the phase allows", severity=Severity.HIGH,
    rationale="Each phase limits doses per week and per four weeks; more is a schedule nobody "
              "prescribed.",
    source="CLINICAL.md Frequency: induction at most 2 doses in any 7 days, maintenance at "
           "most 1, a plan's phases set their own; Krystal et al. 2019; Spravato label",
    mode=Mode.ENABLED)


@FREQUENCY.rule(WINDOW)
def window_exceeded(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag the dose that takes a patient over a phase's doses in 7 or 28 local days."""
    zone, policy_of = ZoneInfo(facts.timezone), plan_policies(facts, policy)
    visits = {visit.id: visit for visit in facts.visits}
    for patient_id, doses in doses_by_patient(facts).items():
        days = [dose.given_at.astimezone(zone).date().toordinal() for dose in doses]
        for index, dose in enumerate(doses):
            if _overridden(dose, visits):
                continue
            limits = dict(zip(WINDOW_DAYS, _limits(dose, policy_of)[1:], strict=True))
            counted_from = _counted_from(dose)
            for span, limit in limits.items():
                # Any window holding too many of a phase's doses ends on or after the last of
                # them: counting the phase's doses in the window that ends on each dose's day,
                # up to that dose, finds every excess.
                first = bisect_left(days, max(days[index] - span + 1, counted_from))
                count = index + 1 - first
                if count <= limit:
                    continue
                yield _window_finding(patient_id, doses[first:index + 1], span, limit,
                                      date.fromordinal(days[index] - span + 1))


def _window_finding(patient_id: str, window: list[Dose], span: int, limit: int,
                    start: date) -> Finding:
    dose = window[-1]
    end = start + timedelta(days=span - 1)
    return WINDOW.finding(
        Subject(SubjectKind.PATIENT, patient_id),
        f"{len(window)} doses were given in the {span} days {start.isoformat()} to "
        f"{end.isoformat()}; the phase allows {limit}. Check the patient's visits in those "
        "days for the extra dose and who booked it.",
        evidence(patient_id=patient_id, nurse_id=dose.nurse_id, dose_id=dose.id,
                 doses=len(window), days=span, limit=limit, window_start=start.isoformat(),
                 window_end=end.isoformat(), dose_ids=",".join(d.id for d in window),
                 phase=dose.phase.name if dose.phase else None),
        # One case per patient, nurse and limit: each dose over it is an occurrence of it.
        key=(dose.nurse_id, span), occurrence=dose.id)


WITHOUT_VISIT = RuleMeta(
    id="frequency.dose_without_visit", version=2, title="Dose with no visit to go with it",
    severity=Severity.HIGH,
    rationale="Every dose is given at a scheduled home visit; a dose recorded without one, at "
              "a visit that did not happen, or hours away from it, may not have been given.",
    source="DESIGN.md Safeguards: dose without a scheduled visit; CLINICAL.md EVV: date, "
           "start and end time of the service (21st Century Cures Act §12006)",
    mode=Mode.ENABLED)


@FREQUENCY.rule(WITHOUT_VISIT)
def dose_without_visit(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a dose with no visit, at a visit that did not happen, or far outside its window."""
    visits, policy_of = {visit.id: visit for visit in facts.visits}, plan_policies(facts, policy)
    for dose in facts.doses:
        visit = visits.get(dose.visit_id) if dose.visit_id is not None else None
        if dose.visit_id is not None and visit is None:
            # The visit is recorded but was not loaded with these facts: nothing to judge.
            continue
        problem, outside = _without_visit(dose, visit, policy_of(
            dose.plan_version_id).value("dose_outside_visit_minutes"))
        if problem is None:
            continue
        yield WITHOUT_VISIT.finding(
            Subject(SubjectKind.NURSE, dose.nurse_id),
            f"A dose of {dose.quantity_ug} µg at {dose.given_at.isoformat()} {problem}; every "
            "dose is given at a scheduled home visit. Check the nurse's visits to this patient "
            "that day, and whether the dose was really given.",
            evidence(nurse_id=dose.nurse_id, patient_id=dose.patient_id, dose_id=dose.id,
                     visit_id=dose.visit_id, given_at=dose.given_at,
                     visit_status=visit.status if visit else None,
                     scheduled_start=visit.scheduled_start if visit else None,
                     scheduled_end=visit.scheduled_end if visit else None,
                     minutes_outside=outside),
            # One case per nurse and patient: each such dose is an occurrence of it.
            key=(dose.patient_id,), occurrence=dose.id)


def _without_visit(dose: Dose, visit: Visit | None,
                   tolerance: int) -> tuple[str | None, Decimal | None]:
    """Return what is wrong with the dose's visit, and how many minutes outside it, if any."""
    if visit is None:
        return "has no visit", None
    if visit.status in NOT_VISITED:
        return f"was recorded against a visit that was {visit.status}", None
    grace = timedelta(minutes=tolerance)
    if dose.given_at < visit.scheduled_start - grace:
        early = minutes(visit.scheduled_start - dose.given_at)
        return (f"was given {early} min before its visit's scheduled start (at most "
                f"{tolerance} min allowed)", early)
    if dose.given_at > visit.scheduled_end + grace:
        late = minutes(dose.given_at - visit.scheduled_end)
        return (f"was given {late} min after its visit's scheduled end (at most {tolerance} "
                "min allowed)", late)
    return None, None


EXTRA_VISITS = RuleMeta(
    id="frequency.extra_visit_cluster", version=1, title="Extra visits clustering",
    severity=Severity.MEDIUM,
    rationale="Visits asked for outside the series, or over a frequency limit, coming close "
              "together are how drug-seeking looks from the schedule.",
    source="CLINICAL.md Frequency: the phases' 7- and 28-day limits; Drugs: abuse liability, "
           "Krystal et al. 2019; the cluster size is practice",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@FREQUENCY.rule(EXTRA_VISITS)
def extra_visit_cluster(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a patient with at least the policy's extra visits inside the policy's days."""
    least, span = (policy.value("extra_visit_cluster_count"),
                   policy.value("extra_visit_cluster_days"))
    extras: dict[str, list[Visit]] = defaultdict(list)
    for visit in sorted(facts.visits, key=lambda visit: (visit.scheduled_start, visit.id)):
        if (visit.override or not visit.series) and visit.status not in VOID:
            extras[visit.patient_id].append(visit)
    for patient_id, visits in extras.items():
        cluster = _busiest(visits, timedelta(days=span))
        if len(cluster) < max(least, 1):
            continue
        yield EXTRA_VISITS.finding(
            Subject(SubjectKind.PATIENT, patient_id),
            f"The patient had {len(cluster)} override or out-of-series visits within {span} "
            f"days ({cluster[0].scheduled_start.date().isoformat()} to "
            f"{cluster[-1].scheduled_start.date().isoformat()}); {least} make a cluster. Check "
            "the reason given for each extra visit and who asked for it.",
            evidence(patient_id=patient_id, nurse_id=cluster[-1].nurse_id,
                     visits=len(cluster), days=span, cluster_count=least,
                     overrides=sum(visit.override for visit in cluster),
                     visit_ids=",".join(visit.id for visit in cluster),
                     first_at=cluster[0].scheduled_start, last_at=cluster[-1].scheduled_start))


def _busiest(visits: list[Visit], span: timedelta) -> list[Visit]:
    """Return the most visits starting less than `span` apart, the latest such run on a tie."""
    best: list[Visit] = []
    first = 0
    for last, visit in enumerate(visits):
        while visit.scheduled_start - visits[first].scheduled_start >= span:
            first += 1
        if last + 1 - first >= len(best):
            best = visits[first:last + 1]
    return best
