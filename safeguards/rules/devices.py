"""Device rules: a phone whose clock is off distorts every time it records."""

from __future__ import annotations

from collections.abc import Iterator

from safeguards.facts import Facts
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Cadence, Mode, Registry, RuleMeta
from safeguards.rules.evidence import evidence

DEVICES = Registry()

CLOCK_DRIFT = RuleMeta(
    id="device.clock_drift", version=1, title="A phone's clock is off", severity=Severity.MEDIUM,
    rationale="Dose times, intervals between doses and monitoring minutes come from the "
              "phone's clock; one that is off, or set on purpose, makes them say anything.",
    source="DESIGN.md Data that must never be wrong: occurred_at is the device's clock, never "
           "used for ordering; CLINICAL.md Frequency: minimum 48 h between doses",
    mode=Mode.ENABLED, cadence=Cadence.POPULATION)


@DEVICES.rule(CLOCK_DRIFT)
def clock_drift(facts: Facts, policy: Policy) -> Iterator[Finding]:
    """Flag a phone whose clock ran ahead of the server, or reports an offset, beyond policy."""
    limit = policy.value("clock_drift_max_seconds")
    for clock in facts.clocks:
        offset = clock.reported_offset_seconds
        worst = max(clock.max_lead_seconds, abs(offset) if offset is not None else 0)
        if worst <= limit:
            continue
        yield CLOCK_DRIFT.finding(
            Subject(SubjectKind.DEVICE, clock.device_id),
            f"The phone's clock is off by up to {worst} s over {clock.events} events (at most "
            f"{limit} s allowed): its dose and observation times are that far out. Check the "
            "phone's time settings with the nurse, and the times between the doses it "
            "recorded.",
            evidence(device_id=clock.device_id, nurse_id=clock.nurse_id, events=clock.events,
                     max_lead_seconds=clock.max_lead_seconds,
                     reported_offset_seconds=offset, limit_seconds=limit,
                     last_event_id=clock.last_event_id,
                     last_received_at=clock.last_received_at))
