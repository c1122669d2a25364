"""Visit verification rules: at the home, there long enough, and never at two homes at once."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from safeguards.facts import EvvEvent, Facts
from safeguards.findings import EvidenceValue, Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence, minutes
from safeguards.rules.indexes import doses_by_visit, plan_policies

EVV = Registry()
# The mean Earth radius (IUGG), as the backend uses for the distance it stores.
EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: Decimal, lon1: Decimal, lat2: Decimal, lon2: Decimal) -> int:
    """Return the great-circle (haversine) distance in whole metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return round(2 * EARTH_RADIUS_M * math.asin(math.sqrt(a)))


def _out_of_range_meta(kind: str) -> RuleMeta:
    words = kind.replace("_", "-")
    return RuleMeta(
        id=f"evv.{kind}_out_of_range", version=2, title=f"{words.capitalize()} far from home",
        severity=Severity.MEDIUM,
        rationale=f"A {words} away from the patient's home does not show the nurse was there; "
                  "one with a reason goes to review at low severity. One nurse at one home is "
                  "one case: each such visit is an occurrence, and repetition raises it.",
        source="CLINICAL.md EVV: location at check-in and check-out against the home with a "
               "tolerance, out of range allowed with a reason and reviewed (HHAeXchange; "
               "Sandata); 21st Century Cures Act §12006",
        mode=Mode.ENABLED)


def _out_of_range(meta: RuleMeta, kind: str, facts: Facts) -> Iterator[Finding]:
    for event in facts.evv:
        if event.kind != kind or (
                event.distance_m is not None and event.distance_m <= event.radius_m):
            continue
        where = (f"{event.distance_m} m from home (radius {event.radius_m} m)"
                 if event.distance_m is not None else "with no recorded home location")
        why = f"nurse's reason: {event.reason}" if event.reason else "no reason given"
        # A reason is what EVV vendors ask for, and a reviewer can weigh it: less urgent. The
        # root cause is the nurse at this patient's home (a wrong address, or visits not made):
        # one case per nurse and patient, each check-in an occurrence of it.
        yield meta.finding(
            Subject(SubjectKind.NURSE, event.nurse_id),
            f"{kind.replace('_', '-').capitalize()} {where}; {why}. Check the home's recorded "
            "location and the nurse's other visits to this patient.",
            evidence(evv_event_id=event.id, visit_id=event.visit_id, nurse_id=event.nurse_id,
                     patient_id=event.patient_id, device_id=event.device_id,
                     distance_m=event.distance_m, radius_m=event.radius_m,
                     accuracy_m=event.accuracy_m, reason=event.reason,
                     occurred_at=event.occurred_at),
            key=(event.patient_id,), occurrence=event.id,
            severity=Severity.LOW if event.reason else None)


CHECK_IN_OUT_OF_RANGE = _out_of_range_meta("check_in")
CHECK_OUT_OUT_OF_RANGE = _out_of_range_meta("check_out")


@EVV.rule(CHECK_IN_OUT_OF_RANGE)
def check_in_out_of_range(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each check-in outside the home's radius, or at a home with no location."""
    return _out_of_range(CHECK_IN_OUT_OF_RANGE, "check_in", facts)


@EVV.rule(CHECK_OUT_OUT_OF_RANGE)
def check_out_out_of_range(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag each check-out outside the home's radius, or at a home with no location."""
    return _out_of_range(CHECK_OUT_OUT_OF_RANGE, "check_out", facts)


TOO_SHORT = RuleMeta(
    id="evv.visit_too_short", version=3, title="Visit too short for the dose and its monitoring",
    severity=Severity.MEDIUM,
    rationale="A dosed visit lasts at least the monitoring window, which starts with the dose "
              "and holds the infusion; a shorter one means the patient was left unmonitored, "
              "or the dose was not given there. One nurse leaving one patient early is one "
              "case: each such visit is an occurrence, and repetition raises it.",
    source="CLINICAL.md Drugs: 0.5 mg/kg over 40 min, Krystal et al. 2019; Monitoring: at "
           "least 2 h, Spravato REMS; EVV: start and end time",
    mode=Mode.ENABLED)


@EVV.rule(TOO_SHORT)
def visit_too_short(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a dosed visit checked out sooner after check-in than the monitoring window."""
    doses, policy_of = doses_by_visit(facts), plan_policies(facts, policy)
    phone = {(event.visit_id, event.kind): event.occurred_at for event in facts.evv}
    for visit in facts.visits:
        if visit.checked_in_at is None or visit.checked_out_at is None or visit.id not in doses:
            continue
        rules = policy_of(doses[visit.id][0].plan_version_id)
        # The window runs from the start of the dose, after check-in, and the infusion runs
        # inside it (monitoring.early_discharge counts the same way): it is the least a visit
        # can last.
        required = rules.value("monitoring_window_minutes")
        arrived, left = phone.get((visit.id, "check_in")), phone.get((visit.id, "check_out"))
        # Both times from one phone clock: its offset cancels, and a visit recorded offline
        # and synced later still shows how long it lasted; the server's receipt would not.
        measured_by = "phone" if arrived and left else "server"
        stayed = left - arrived if arrived and left else \
            visit.checked_out_at - visit.checked_in_at
        if stayed >= timedelta(minutes=required):
            continue
        yield TOO_SHORT.finding(
            Subject(SubjectKind.NURSE, visit.nurse_id),
            f"The nurse checked out {minutes(stayed)} min after checking in; a dosed visit "
            f"takes at least the {required} min monitoring window from the dose. Check the "
            "session's monitoring record and her other visits to this patient.",
            evidence(visit_id=visit.id, nurse_id=visit.nurse_id, patient_id=visit.patient_id,
                     checked_in_at=visit.checked_in_at, checked_out_at=visit.checked_out_at,
                     minutes_present=minutes(stayed), measured_by=measured_by,
                     required_minutes=required,
                     dose_ids=",".join(
                         dose.id for dose in doses[visit.id])),
            key=(visit.patient_id,), occurrence=visit.id)


@dataclass(frozen=True)
class Stay:
    """A nurse at one visit: where and when she checked in, and out if she has."""

    arrived: EvvEvent
    left: EvvEvent | None


def _stays(facts: Facts) -> dict[str, list[Stay]]:
    """Return each nurse's stays, in the order she arrived."""
    arrivals: dict[str, EvvEvent] = {}
    departures: dict[str, EvvEvent] = {}
    for event in sorted(facts.evv, key=lambda event: (event.occurred_at, event.id)):
        # The first check-in and the last check-out bound the time she was there.
        if event.kind == "check_in":
            arrivals.setdefault(event.visit_id, event)
        elif event.kind == "check_out":
            departures[event.visit_id] = event
    stays: dict[str, list[Stay]] = defaultdict(list)
    for visit_id, arrived in arrivals.items():
        stays[arrived.nurse_id].append(Stay(arrived, departures.get(visit_id)))
    return stays


def _apart_m(first: EvvEvent, second: EvvEvent) -> int:
    """Return how far apart two positions are beyond what their GPS accuracy explains."""
    apart = distance_m(first.latitude, first.longitude, second.latitude, second.longitude)
    return max(apart - first.accuracy_m - second.accuracy_m, 0)


IMPOSSIBLE_TRAVEL = RuleMeta(
    id="evv.impossible_travel", version=1, title="One nurse at two homes at once",
    severity=Severity.HIGH,
    rationale="A nurse cannot be at two homes at overlapping times, or drive between them "
              "faster than roads allow: one of the visits was not made as recorded.",
    source="DESIGN.md Safeguards: overlapping visits by one nurse; CLINICAL.md EVV: location, "
           "start and end time of each visit; the speed is practice",
    mode=Mode.ENABLED)


@EVV.rule(IMPOSSIBLE_TRAVEL)
def impossible_travel(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a nurse's visits that overlap at different homes, or too far apart for the time."""
    fastest = policy.value("travel_max_kmh")
    for nurse_id, stays in _stays(facts).items():
        present: list[Stay] = []
        previous: Stay | None = None
        for stay in stays:
            # Visits she left before this arrival leave `present`; the last of them is the
            # one she travelled from.
            for other in [other for other in present
                          if other.left.occurred_at <= stay.arrived.occurred_at]:
                present.remove(other)
                if previous is None or other.left.occurred_at > previous.left.occurred_at:
                    previous = other
            for other in present:
                if _apart_m(other.arrived, stay.arrived):
                    yield _overlap(nurse_id, other, stay)
            if previous is not None and _too_fast(previous.left, stay.arrived, fastest):
                yield _travel(nurse_id, previous, stay, fastest)
            if stay.left is not None:
                present.append(stay)


def _too_fast(left: EvvEvent, arrived: EvvEvent, fastest: int) -> bool:
    """Tell whether the distance between two positions needs more than `fastest` km/h."""
    took = (arrived.occurred_at - left.occurred_at) // timedelta(microseconds=1)
    # metres / seconds > km/h * 1000 / 3600, in whole numbers (microseconds) to stay exact.
    return _apart_m(left, arrived) * 3600 * 1_000_000 > fastest * 1000 * took


def _pair(nurse_id: str, first: Stay, second: Stay, summary: str,
          **figures: EvidenceValue | datetime) -> Finding:
    # One finding per pair of visits, whichever of them a scan sees first.
    key = tuple(sorted((first.arrived.visit_id, second.arrived.visit_id)))
    return IMPOSSIBLE_TRAVEL.finding(
        Subject(SubjectKind.NURSE, nurse_id), summary,
        evidence(nurse_id=nurse_id, first_visit_id=first.arrived.visit_id,
                 first_patient_id=first.arrived.patient_id,
                 second_visit_id=second.arrived.visit_id,
                 second_patient_id=second.arrived.patient_id, **figures),
        key=key)


def _overlap(nurse_id: str, first: Stay, second: Stay) -> Finding:
    apart = distance_m(first.arrived.latitude, first.arrived.longitude,
                       second.arrived.latitude, second.arrived.longitude)
    return _pair(
        nurse_id, first, second,
        f"The nurse checked in at a home {apart} m away at "
        f"{second.arrived.occurred_at.isoformat()}, before checking out of the previous one "
        f"at {first.left.occurred_at.isoformat()}: she cannot be at two homes at once. "
        "Check both visits' check-in and check-out places and times, and whether both were "
        "made.",
        distance_m=apart, first_checked_in_at=first.arrived.occurred_at,
        first_checked_out_at=first.left.occurred_at,
        second_checked_in_at=second.arrived.occurred_at)


def _travel(nurse_id: str, first: Stay, second: Stay, fastest: int) -> Finding:
    apart = distance_m(first.left.latitude, first.left.longitude,
                       second.arrived.latitude, second.arrived.longitude)
    took = second.arrived.occurred_at - first.left.occurred_at
    return _pair(
        nurse_id, first, second,
        f"The nurse checked in {apart} m away {minutes(took)} min after checking out of the "
        f"previous home: faster than the {fastest} km/h a road allows. Check both visits' "
        "check-in and check-out places and times, and whether both were made.",
        distance_m=apart, minutes_between=minutes(took), max_kmh=fastest,
        first_checked_out_at=first.left.occurred_at,
        second_checked_in_at=second.arrived.occurred_at)
