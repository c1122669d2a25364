"""Schedule visits within the plan's limits, move them through their life, and verify them (EVV)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from dateutil.rrule import rrulestr
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from backend import changes
from backend.accounts.models import Role, User
from backend.accounts.service import organisation_zone
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.client_ids import stored_twin
from backend.errors import Conflict, Forbidden, InvalidField, NotFound, VigilError
from backend.patients.models import Patient
from backend.patients.service import visible_patient
from backend.plans import service as plans
from backend.plans.models import PlanPhase, PlanVersion
from backend.policy.service import policy_for
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.tenancy import hers, is_assigned, owned
from backend.visits.frequency import Limits, Standing, check_schedule, standings
from backend.visits.models import DOSE_HOLDING, Visit, VisitStatus
from safeguards.policy import Policy

# Frequency windows reach 28 days each way from every dose they touch.
FREQUENCY_HORIZON = timedelta(days=56)
MAX_SERIES = 104


class SchedulingRefused(VigilError):
    """A visit breaks a scheduling rule; the error code names the rule."""

    status = 409

    def __init__(self, rule: str, message: str, details: dict | None = None) -> None:
        super().__init__(message, {"rule": rule, **(details or {})})
        self.code = rule


@dataclass(frozen=True)
class VisitRequest:
    """One visit to schedule; an override reason lets a prescriber pass a frequency limit."""

    patient_id: uuid.UUID
    nurse_id: uuid.UUID
    scheduled_start: datetime
    scheduled_end: datetime | None = None
    override_reason: str | None = None
    visit_id: uuid.UUID | None = None


def _assigned_nurse(session: Session, patient: Patient, nurse_id: uuid.UUID) -> None:
    if not is_assigned(session, nurse_id, patient.id):
        raise InvalidField("nurse_id", "not a nurse currently assigned to this patient")


def _plan_in_force(session: Session, patient: Patient) -> tuple[PlanVersion, DrugProduct]:
    version = plans.active_version(session, patient.id)
    if version is None:
        raise SchedulingRefused("no_active_plan", "The patient has no active treatment plan.")
    product = session.get(DrugProduct, version.product_id)
    if not product.home_administration_allowed:
        raise SchedulingRefused(
            "home_administration_forbidden",
            f"{product.name} may not be administered at home (its REMS forbids it).",
            {"product_id": str(product.id)})
    return version, product


def _check_nurse_free(session: Session, policy: Policy, nurse_id: uuid.UUID, start: datetime,
                      end: datetime, ignore: uuid.UUID | None) -> None:
    buffer = timedelta(minutes=int(policy.value("travel_buffer_minutes")))
    query = select(Visit).where(
        Visit.nurse_id == nurse_id,
        Visit.status.in_([VisitStatus.SCHEDULED, VisitStatus.CHECKED_IN]),
        Visit.scheduled_start < end + buffer, Visit.scheduled_end > start - buffer)
    if ignore is not None:
        query = query.where(Visit.id != ignore)
    clash = session.scalar(query.limit(1))
    if clash is not None:
        raise SchedulingRefused(
            "nurse_double_booked",
            f"The nurse has another visit within {buffer.seconds // 60} min of travel time.",
            {"conflicting_visit_id": str(clash.id),
             "travel_buffer_minutes": buffer.seconds // 60})


def _dose_times(session: Session, patient_id: uuid.UUID, around: datetime,
                ignore: uuid.UUID | None) -> list[datetime]:
    query = select(Visit.scheduled_start).where(
        Visit.patient_id == patient_id, Visit.status.in_(DOSE_HOLDING),
        Visit.scheduled_start > around - FREQUENCY_HORIZON,
        Visit.scheduled_start < around + FREQUENCY_HORIZON)
    if ignore is not None:
        query = query.where(Visit.id != ignore)
    return list(session.scalars(query))


def _limits_at(version: PlanVersion, zone: tzinfo):
    def limits(at: datetime) -> Limits:
        return _phase_limits(version, plans.phase_at(version, at, zone) or version.phases[0])
    return limits


def _lock_calendars(session: Session, patient_id: uuid.UUID, nurse_id: uuid.UUID) -> None:
    """Take the patient's calendar, then the nurse's, so their checks see each other's visits."""
    # Without it, visits scheduled at once for one patient each pass the interval check alone.
    # Always patient first, then nurse: two schedulers never wait on each other in a circle.
    session.execute(select(Patient.id).where(Patient.id == patient_id).with_for_update())
    session.execute(select(User.id).where(User.id == nurse_id).with_for_update())


def _stored(session: Session, caller: Caller, request: VisitRequest) -> Visit | None:
    """Return the visit a retry of `request` already stored; refuse another one under its id."""
    if request.visit_id is None:
        return None
    stored = session.get(Visit, request.visit_id, populate_existing=True)
    asked = (caller.organisation_id, request.patient_id, request.nurse_id,
             request.scheduled_start)
    return stored_twin(stored, asked, content=lambda visit: (
        visit.organisation_id, visit.patient_id, visit.nurse_id, visit.scheduled_start),
        conflict=Conflict("A different visit already has this id.", {"field": "id"}))


def _visit_times(rt: Runtime, policy: Policy, request: VisitRequest) -> tuple[datetime, datetime]:
    start = request.scheduled_start.astimezone(UTC)
    end = (request.scheduled_end.astimezone(UTC) if request.scheduled_end
           else start + timedelta(minutes=int(policy.value("visit_minutes"))))
    if end <= start:
        raise InvalidField("scheduled_end", "must be after scheduled_start")
    if start < rt.clock.now():
        raise InvalidField("scheduled_start", "is in the past")
    return start, end


def schedule(session: Session, rt: Runtime, caller: Caller, request: VisitRequest, *,
             series_id: uuid.UUID | None = None, ignore: uuid.UUID | None = None) -> Visit:
    """Schedule one visit, refusing it with the rule it breaks unless a prescriber overrides."""
    patient = visible_patient(session, caller, request.patient_id)
    _assigned_nurse(session, patient, request.nurse_id)
    version, _ = _plan_in_force(session, patient)
    policy = policy_for(session, caller.organisation_id)
    zone = organisation_zone(session, caller.organisation_id)
    _lock_calendars(session, patient.id, request.nurse_id)
    if (stored := _stored(session, caller, request)) is not None:
        return stored
    start, end = _visit_times(rt, policy, request)
    phase = plans.phase_at(version, start, zone)
    if phase is None:
        raise SchedulingRefused("no_active_plan", "The plan has not started by this date.")
    _check_nurse_free(session, policy, request.nurse_id, start, end, ignore)
    violation = check_schedule(_dose_times(session, patient.id, start, ignore), start,
                               _limits_at(version, zone), zone)
    if violation and not request.override_reason:
        raise SchedulingRefused(violation.rule, violation.message(),
                                {**violation.detail, "at": violation.at.isoformat()})
    if violation and caller.role != Role.PRESCRIBER:
        raise Forbidden("Only a prescriber may override a frequency limit.")
    now = rt.clock.now()
    visit = Visit(id=request.visit_id or uuid.uuid4(), organisation_id=caller.organisation_id,
                  patient_id=patient.id, nurse_id=request.nurse_id, plan_version_id=version.id,
                  phase_ordinal=phase.ordinal, scheduled_start=start, scheduled_end=end,
                  status=VisitStatus.SCHEDULED, series_id=series_id, created_at=now,
                  created_by_id=caller.user_id, updated_at=now)
    if violation:
        visit.override_reason, visit.override_by_id = request.override_reason, caller.user_id
    session.add(visit)
    session.flush()
    audit.record(session, now, caller, "visit.schedule", "visit", visit.id,
                 detail={"override": violation.rule if violation else None})
    if violation:
        # Overrides one by one are a prescriber's call; clustered, they are a pattern to review.
        changes.patient(session, caller.organisation_id, patient.id)
    return visit


def schedule_series(session: Session, rt: Runtime, caller: Caller, plan_id: uuid.UUID, *,
                    nurse_id: uuid.UUID, first_start: datetime, rule: str,
                    duration_minutes: int | None, override_reason: str | None) -> list[Visit]:
    """Schedule every occurrence of an RFC 5545 rule; one refusal refuses the whole series."""
    plan = plans.get(session, caller, plan_id)
    timezone = organisation_zone(session, caller.organisation_id)
    local_first = first_start.astimezone(timezone).replace(tzinfo=None)
    try:
        occurrences = list(rrulestr(rule, dtstart=local_first, cache=False)[:MAX_SERIES + 1])
    except (ValueError, TypeError) as exc:
        raise InvalidField("rrule", f"not a valid RFC 5545 rule: {exc}") from exc
    if len(occurrences) > MAX_SERIES:
        raise InvalidField("rrule", f"more than {MAX_SERIES} occurrences; give COUNT or UNTIL")
    series_id = uuid.uuid4()
    visits = []
    for index, local in enumerate(occurrences):
        # Localise each occurrence: 10:00 stays 10:00 at home across a DST change.
        start = local.replace(tzinfo=timezone).astimezone(UTC)
        end = start + timedelta(minutes=duration_minutes) if duration_minutes else None
        try:
            visits.append(schedule(session, rt, caller, VisitRequest(
                plan.patient_id, nurse_id, start, end, override_reason), series_id=series_id))
        except SchedulingRefused as refused:
            refused.details.update({"occurrence": index, "scheduled_start": start.isoformat()})
            raise
    return visits


def _visible(caller: Caller) -> Select[tuple[Visit]]:
    query = select(Visit).where(Visit.organisation_id == caller.organisation_id)
    if caller.role == Role.NURSE:
        query = query.where(Visit.nurse_id == caller.user_id)
    return query


def get(session: Session, caller: Caller, visit_id: uuid.UUID, *,
        for_update: bool = False) -> Visit:
    """Return a visit the caller may see (a nurse: her own), or raise NotFound."""
    # A state change locks the row, so the missed-visit job and a check-in cannot both win.
    return owned(session, caller, Visit, visit_id, what="visit", for_update=for_update,
                 nurse_sees=hers("nurse_id"))


def own_visit(session: Session, caller: Caller, visit_id: uuid.UUID) -> Visit:
    """Return the caller's own visit, locked to record on it, or raise NotFound."""
    visit = get(session, caller, visit_id, for_update=True)
    # Only the visit's nurse records it, whatever role a future caller may have.
    if visit.nurse_id != caller.user_id:
        raise NotFound("No such visit.")
    return visit


@dataclass(frozen=True)
class VisitFilter:
    """Filters for listing visits."""

    nurse_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def listing(session: Session, caller: Caller, where: VisitFilter) -> list[Visit]:
    """Return the visits the caller may see that match `where`, by start time."""
    query = _visible(caller)
    if where.nurse_id:
        query = query.where(Visit.nurse_id == where.nurse_id)
    if where.patient_id:
        query = query.where(Visit.patient_id == where.patient_id)
    if where.status:
        query = query.where(Visit.status == where.status)
    if where.since:
        query = query.where(Visit.scheduled_end > where.since)
    if where.until:
        query = query.where(Visit.scheduled_start < where.until)
    return list(session.scalars(query.order_by(Visit.scheduled_start).limit(1000)))


def frequency_standings(session: Session, caller: Caller,
                        visits: list[Visit]) -> dict[uuid.UUID, Standing]:
    """Return, by visit id, where each dose-holding visit of one patient stands against the
    frequency limits of the phase it was booked in, judged as the scheduler judges them."""
    holding = sorted((visit for visit in visits if visit.status in DOSE_HOLDING),
                     key=lambda visit: visit.scheduled_start)
    zone = organisation_zone(session, caller.organisation_id)
    limits = {visit.scheduled_start: _booked_limits(
                  session.get(PlanVersion, visit.plan_version_id), visit.phase_ordinal)
              for visit in holding}
    found = standings([visit.scheduled_start for visit in holding], limits.__getitem__, zone)
    return {visit.id: standing for visit, standing in zip(holding, found, strict=True)}


def _booked_limits(version: PlanVersion, ordinal: int) -> Limits:
    return _phase_limits(version, next((p for p in version.phases if p.ordinal == ordinal),
                                       version.phases[0]))


def _phase_limits(version: PlanVersion, phase: PlanPhase) -> Limits:
    return Limits(phase.min_interval_hours, phase.max_per_7_days, phase.max_per_28_days,
                  *plans.counted_dates(version, phase))


def require_status(visit: Visit, *allowed: VisitStatus) -> None:
    if visit.status not in allowed:
        raise Conflict(f"The visit is {visit.status}; this needs {' or '.join(allowed)}.",
                       {"rule": "visit_state", "status": visit.status})


def cancel(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID,
           reason: str) -> Visit:
    """Cancel a scheduled visit with a reason."""
    visit = get(session, caller, visit_id, for_update=True)
    require_status(visit, VisitStatus.SCHEDULED)
    now = rt.clock.now()
    visit.status, visit.status_reason, visit.updated_at = VisitStatus.CANCELLED, reason, now
    # The reason is free text: it stays on the visit, encrypted, not in the audit trail.
    audit.record(session, now, caller, "visit.cancel", "visit", visit.id)
    return visit


def reschedule(session: Session, rt: Runtime, caller: Caller, visit_id: uuid.UUID, *,
               scheduled_start: datetime, scheduled_end: datetime | None,
               nurse_id: uuid.UUID | None, override_reason: str | None) -> Visit:
    """Replace a scheduled visit with a new one; the old stays, marked rescheduled."""
    old = get(session, caller, visit_id, for_update=True)
    require_status(old, VisitStatus.SCHEDULED)
    new = schedule(session, rt, caller, VisitRequest(
        old.patient_id, nurse_id or old.nurse_id, scheduled_start, scheduled_end,
        override_reason), series_id=old.series_id, ignore=old.id)
    new.rescheduled_from_id = old.id
    old.status, old.updated_at = VisitStatus.RESCHEDULED, rt.clock.now()
    old.status_reason = f"rescheduled as {new.id}"
    return new
