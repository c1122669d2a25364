"""Time rules: work at hours no home-infusion service keeps, and a nurse's hours that change.

Both read a nurse's work as occasions in the organisation's own timezone: a visit counts once,
from its earliest check-in, dose or bag movement, however many of them it had; a bag movement
without a visit (a return to the vault) is an occasion of its own, judged against the service
hours widened by the time a bag may be filled before the first visit or brought back after the
last. One case per nurse and per patient, whose severity rises as the occasions repeat.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from safeguards.facts import Facts, WorkEvent
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence
from safeguards.stats import binomial_upper_tail, rounded, significant

HOURS = Registry()
DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class Occasion:
    """One piece of a nurse's work: a visit's events together, or one bag movement alone."""

    id: str
    nurse_id: str
    patient_id: str | None
    visit_id: str | None
    started_at: datetime
    # Minutes after local midnight in the organisation's timezone.
    local_minute: int
    kinds: tuple[str, ...]
    has_reason: bool

    @property
    def at_vault(self) -> bool:
        """Tell whether this is a bag movement outside any visit."""
        return self.visit_id is None and "dose" not in self.kinds


class _LocalMinutes:
    """Minutes after local midnight in one timezone, its UTC offset looked up once an hour."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        # By UTC hour: that hour's offset in seconds, or None when the offset changes within it.
        self.offsets: dict[int, int | None] = {}

    def __call__(self, at: datetime) -> int:
        """Return how many minutes after local midnight `at` (aware) is."""
        seconds = at.timestamp()
        hour = int(seconds // 3600)
        if hour not in self.offsets:
            start = datetime.fromtimestamp(hour * 3600, UTC)
            offsets = {moment.astimezone(self.zone).utcoffset() for moment in
                       (start, start + timedelta(seconds=3599, microseconds=999_999))}
            self.offsets[hour] = (int(offsets.pop().total_seconds()) if len(offsets) == 1
                                  else None)
        offset = self.offsets[hour]
        if offset is None:
            local = at.astimezone(self.zone)
            return local.hour * 60 + local.minute
        return int((seconds + offset) // 60) % DAY_MINUTES


# The facts last read into occasions, weakly, and their occasions: both hours rules read them.
_read: tuple[weakref.ref[Facts], tuple[Occasion, ...]] | None = None


def occasions(facts: Facts) -> tuple[Occasion, ...]:
    """Return the facts' work events as occasions, each visit's events as one, oldest first."""
    global _read
    last = _read
    if last is not None and last[0]() is facts:
        return last[1]
    local_minute = _LocalMinutes(ZoneInfo(facts.timezone))
    grouped: dict[str, list[WorkEvent]] = defaultdict(list)
    for event in facts.work_events:
        grouped[event.visit_id or f"event:{event.id}"].append(event)
    found = []
    for key, events in grouped.items():
        if len(events) == 1:
            # The scan's loader sends each visit's first event alone: nothing to gather.
            first = events[0]
            patient_id, kinds, has_reason = first.patient_id, (first.kind,), bool(first.has_reason)
        else:
            events.sort(key=lambda event: (event.occurred_at, event.id))
            first = events[0]
            patient_id = next((e.patient_id for e in events if e.patient_id), None)
            kinds = tuple(sorted({event.kind for event in events}))
            has_reason = any(event.has_reason for event in events)
        found.append(Occasion(
            id=key, nurse_id=first.nurse_id, patient_id=patient_id or None,
            visit_id=first.visit_id, started_at=first.occurred_at,
            local_minute=local_minute(first.occurred_at), kinds=kinds, has_reason=has_reason))
    result = tuple(sorted(found, key=lambda occasion: (occasion.started_at, occasion.id)))
    _read = (weakref.ref(facts), result)
    return result


@dataclass(frozen=True)
class ServiceHours:
    """The organisation's service hours, in local minutes, and the grace a bag movement has."""

    start: int
    end: int
    vault_grace: int

    @classmethod
    def of(cls, policy: Policy) -> ServiceHours:
        """Return the service hours `policy` sets."""
        return cls(int(policy.value("service_hours_start")) * 60,
                   int(policy.value("service_hours_end")) * 60,
                   int(policy.value("service_hours_vault_grace_minutes")))

    @property
    def span(self) -> int:
        """Return how many minutes the service day lasts (a day when start and end meet)."""
        return (self.end - self.start) % DAY_MINUTES or DAY_MINUTES

    def off_hours(self, occasion: Occasion) -> bool:
        """Tell whether the occasion began outside the hours (a bag movement, their widening
        by its grace before and after)."""
        grace = self.vault_grace if occasion.at_vault else 0
        span, since_start = self.span + 2 * grace, occasion.local_minute - self.start + grace
        return span < DAY_MINUTES and since_start % DAY_MINUTES >= span

    def late(self, occasion: Occasion, margin: int) -> bool:
        """Tell whether the occasion began within `margin` minutes of the end of the hours."""
        offset = (occasion.local_minute - self.start) % DAY_MINUTES
        return offset < self.span and self.span - offset <= margin

    def label(self) -> str:
        """Return the hours as a reader sees them, e.g. 07:00-21:00."""
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


OUTSIDE_SERVICE_HOURS = RuleMeta(
    id="hours.outside_service_hours", version=1,
    title="Repeated work outside service hours", severity=Severity.MEDIUM,
    rationale="Home-infusion visits are booked in daytime hours; doses, check-ins and bag "
              "movements again and again at night, by one nurse or at one home, are where "
              "stock can be used or taken unseen. One with a reason is not a case.",
    source="CLINICAL.md Orders and plausibility: service hours, doses outside the "
           "organisation's stated hours need a reason (practice, per organisation in its "
           "timezone); Diversion: per-person activity over a period (Epstein 2007)",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


def _severity(count: int, least: int) -> Severity:
    return Severity.HIGH if count >= 2 * least else OUTSIDE_SERVICE_HOURS.severity


def _grouped(found: Iterable[Occasion],
             subject: Callable[[Occasion], str | None]) -> dict[str, list[Occasion]]:
    grouped: dict[str, list[Occasion]] = defaultdict(list)
    for occasion in found:
        if (key := subject(occasion)) is not None:
            grouped[key].append(occasion)
    return grouped


def _local(facts: Facts, at: datetime) -> str:
    return at.astimezone(ZoneInfo(facts.timezone)).strftime("%Y-%m-%d %H:%M")


@HOURS.rule(OUTSIDE_SERVICE_HOURS)
def outside_service_hours(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse, and a patient, with repeated work outside the service hours in the window."""
    hours, least = ServiceHours.of(policy), int(policy.value("off_hours_min_events"))
    days = int(policy.value("off_hours_window_days"))
    since = facts.as_of - timedelta(days=days)
    off = [occasion for occasion in occasions(facts)
           if since < occasion.started_at <= facts.as_of and hours.off_hours(occasion)]
    for kind, subject in ((SubjectKind.NURSE, lambda o: o.nurse_id),
                          (SubjectKind.PATIENT, lambda o: o.patient_id)):
        for subject_id, found in _grouped(off, subject).items():
            if len(found) < least:
                continue
            yield _outside_finding(facts, kind, subject_id, found, hours, least, days)


def _outside_finding(facts: Facts, kind: SubjectKind, subject_id: str, found: list[Occasion],
                     hours: ServiceHours, least: int, days: int) -> Finding:
    latest, visits = found[-1], sum(not occasion.at_vault for occasion in found)
    reasons = sum(occasion.has_reason for occasion in found)
    who = ("The nurse worked" if kind is SubjectKind.NURSE
           else "Work was recorded at the patient's home or for the patient")
    people = len({o.patient_id if kind is SubjectKind.NURSE else o.nurse_id
                  for o in found} - {None})
    others = f"{people} {'nurse' if kind is SubjectKind.PATIENT else 'patient'}" + (
        "s" if people != 1 else "")
    return OUTSIDE_SERVICE_HOURS.finding(
        Subject(kind, subject_id),
        f"{who} {len(found)} times outside the organisation's service hours "
        f"({hours.label()} {facts.timezone}) in the last {days} days ({visits} visits or "
        f"doses, {len(found) - visits} bag movements; {reasons} with a recorded reason; "
        f"{others}), the latest at {_local(facts, latest.started_at)} local; "
        f"the policy makes {least} in {days} days a case. Check each against the "
        "roster and the visit notes, whether the patient expected the visit, and whether the "
        "doses and bag movements really happened then.",
        evidence(nurse_id=latest.nurse_id, patient_id=latest.patient_id,
                 occasions=len(found), visits=visits, bag_movements=len(found) - visits,
                 with_reason=reasons, min_occasions=least, window_days=days,
                 service_hours=hours.label(), timezone=facts.timezone,
                 latest_visit_id=latest.visit_id, latest_at=latest.started_at,
                 occasion_ids=",".join(occasion.id for occasion in found[-10:])),
        severity=_severity(len(found), least))


PATTERN_SHIFT = RuleMeta(
    id="hours.pattern_shift", version=1, title="A nurse's hours shifted late suddenly",
    severity=Severity.LOW,
    rationale="A nurse whose visits move from her usual hours to late evening or night, "
              "against her own history, may be fitting unseen work around them; a roster "
              "change explains it, and a reviewer should know which.",
    source="CLINICAL.md Orders and plausibility: service hours (practice); Diversion: her own "
           "usual activity (Bluesight IRIS), per-person activity (Epstein 2007); exact "
           "binomial tail against her history's rate with add-one smoothing",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@dataclass(frozen=True)
class Shift:
    """How many of a nurse's occasions were late or off hours, recently and before."""

    recent: int
    recent_late: int
    history: int
    history_late: int

    @property
    def rise(self) -> Fraction:
        """Return the recent share less the history's share."""
        return Fraction(self.recent_late, self.recent) - Fraction(self.history_late,
                                                                  self.history)

    @property
    def p_value(self) -> Fraction:
        """Return the chance of so many recent late occasions at her history's (smoothed) rate."""
        rate = Fraction(self.history_late + 1, self.history + 2)
        return binomial_upper_tail(self.recent_late, self.recent, rate)


@HOURS.rule(PATTERN_SHIFT)
def pattern_shift(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse whose recent share of late or off-hours visits rose far above her own."""
    hours, margin = ServiceHours.of(policy), int(policy.value("hours_late_margin_minutes"))
    recent_since = facts.as_of - timedelta(days=int(policy.value("hours_shift_recent_days")))
    visits = [o for o in occasions(facts) if not o.at_vault and o.started_at <= facts.as_of]
    for nurse_id, found in _grouped(visits, lambda o: o.nurse_id).items():
        late = [hours.off_hours(o) or hours.late(o, margin) for o in found]
        recent = [flag for o, flag in zip(found, late, strict=True) if o.started_at > recent_since]
        before = late[:len(late) - len(recent)]
        if (len(recent) < policy.value("hours_shift_min_recent")
                or len(before) < policy.value("hours_shift_min_history")):
            continue
        shift = Shift(len(recent), sum(recent), len(before), sum(before))
        if (shift.rise < Fraction(policy.value("hours_shift_min_rise"))
                or shift.p_value > Fraction(policy.value("hours_shift_max_p_value"))):
            continue
        yield _shift_finding(facts, policy, nurse_id, shift, hours, recent_since)


def _shift_finding(facts: Facts, policy: Policy, nurse_id: str, shift: Shift,
                   hours: ServiceHours, recent_since: datetime) -> Finding:
    recent_share = Fraction(shift.recent_late, shift.recent)
    history_share = Fraction(shift.history_late, shift.history)
    return PATTERN_SHIFT.finding(
        Subject(SubjectKind.NURSE, nurse_id),
        f"Since {_local(facts, recent_since)[:10]} {shift.recent_late} of the nurse's "
        f"{shift.recent} visits ({rounded(recent_share * 100, 0)}%) began late or outside "
        f"the service hours ({hours.label()} {facts.timezone}), against "
        f"{shift.history_late} of her {shift.history} before ({rounded(history_share * 100, 0)}"
        f"%; chance at her usual rate {significant(shift.p_value)}, at most "
        f"{policy.value('hours_shift_max_p_value')}). Check whether her roster or patients "
        "changed, and if not, what the late visits were for.",
        evidence(nurse_id=nurse_id, recent_visits=shift.recent,
                 recent_late=shift.recent_late, history_visits=shift.history,
                 history_late=shift.history_late, recent_share=rounded(recent_share, 3),
                 history_share=rounded(history_share, 3), rise=rounded(shift.rise, 3),
                 min_rise=policy.value("hours_shift_min_rise"),
                 p_value=significant(shift.p_value),
                 max_p_value=policy.value("hours_shift_max_p_value"),
                 recent_since=recent_since, service_hours=hours.label(),
                 late_margin_minutes=int(policy.value("hours_late_margin_minutes"))))
