"""Scheduled jobs' work (each slot once, reminders, missed visits, bags, loss deadlines), reads."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import changes
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.custody import checkpoints, shifts
from backend.custody.models import LossReport
from backend.custody.verify import record_verified, verify
from backend.db import new_id
from backend.errors import Conflict, NotFound
from backend.jobs.models import JobRun, Notification
from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.scan import judge, loaders
from backend.visits.models import Visit, VisitStatus

JobBody = Callable[[Session, Runtime], dict[str, Any]]

VISIT_REMINDER = "visit.reminder"
# A verify of one organisation's ledger that someone asked for; its outcome names the
# organisation (the run table spans them all) and says how far it got.
LEDGER_VERIFY = "ledger_verify"
REQUESTED, DONE, FAILED = "requested", "done", "failed"
# A requested verify still unfinished after this long was lost with its process.
VERIFY_LOST_AFTER = timedelta(hours=1)


def run_slot(session: Session, rt: Runtime, job: str, slot: str, holder: str,
             body: JobBody) -> JobRun | None:
    """Run `body` for `job`'s `slot` unless that slot already ran; return the run, or None."""
    run = JobRun(job=job, slot=slot, holder=holder, started_at=rt.clock.now(), outcome={})
    try:
        # A concurrent runner of the same slot waits on the unique key until we commit or fail.
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        return None
    run.outcome = body(session, rt)
    run.finished_at = rt.clock.now()
    session.flush()
    return run


def heartbeat(session: Session, rt: Runtime) -> dict[str, Any]:
    """Do nothing: the run's own row shows that the scheduler is alive."""
    return {}


def _organisations_with(session: Session, *conditions: Any) -> list[uuid.UUID]:
    return list(session.scalars(select(Visit.organisation_id).where(*conditions).distinct()))


def send_visit_reminders(session: Session, rt: Runtime) -> dict[str, Any]:
    """Queue one reminder to the nurse of each scheduled visit that starts within the lead time."""
    now = rt.clock.now()
    upcoming = (Visit.status == VisitStatus.SCHEDULED, Visit.scheduled_start > now)
    queued = 0
    for organisation_id in _organisations_with(session, *upcoming):
        lead = timedelta(hours=int(policy_for(session, organisation_id).value(
            "reminder_lead_hours")))
        visits = list(session.scalars(select(Visit).where(
            Visit.organisation_id == organisation_id, *upcoming,
            Visit.scheduled_start <= now + lead)))
        keys = {_reminder_key(visit): visit for visit in visits}
        sent = set(session.scalars(select(Notification.dedup_key).where(
            Notification.dedup_key.in_(list(keys)))))
        for key in keys.keys() - sent:
            session.add(_reminder(keys[key], key, now))
            queued += 1
    session.flush()
    return {"queued": queued}


def _reminder_key(visit: Visit) -> str:
    return f"{VISIT_REMINDER}:{visit.id}"


def _reminder(visit: Visit, key: str, now: datetime) -> Notification:
    # Ids and times only: the outbox leaves the database, so it carries no PHI.
    return Notification(
        organisation_id=visit.organisation_id, recipient_id=visit.nurse_id,
        kind=VISIT_REMINDER, subject_type="visit", subject_id=str(visit.id), dedup_key=key,
        body={"visit_id": str(visit.id), "patient_id": str(visit.patient_id),
              "scheduled_start": visit.scheduled_start.isoformat(),
              "scheduled_end": visit.scheduled_end.isoformat()},
        created_at=now)


def mark_missed_visits(session: Session, rt: Runtime) -> dict[str, Any]:
    """Mark each scheduled visit unstarted past its end and grace as missed; audit and flag it."""
    now = rt.clock.now()
    ended = (Visit.status == VisitStatus.SCHEDULED, Visit.scheduled_end < now)
    marked = 0
    for organisation_id in _organisations_with(session, *ended):
        grace = int(policy_for(session, organisation_id).value("missed_visit_grace_minutes"))
        # Skip a visit that a check-in is changing right now: it is not missed.
        overdue = list(session.scalars(select(Visit).where(
            Visit.organisation_id == organisation_id, *ended,
            Visit.scheduled_end < now - timedelta(minutes=grace),
        ).with_for_update(skip_locked=True)))
        for visit in overdue:
            _mark_missed(session, rt, visit, grace)
            marked += 1
    return {"marked_missed": marked}


def _mark_missed(session: Session, rt: Runtime, visit: Visit, grace: int) -> None:
    now = rt.clock.now()
    visit.status = VisitStatus.MISSED
    visit.status_reason = (f"No check-in by {visit.scheduled_end.isoformat()} "
                           f"plus {grace} min grace.")
    visit.updated_at = now
    audit.record(session, now, None, "visit.missed", "visit", visit.id,
                 organisation_id=visit.organisation_id,
                 detail={"scheduled_end": visit.scheduled_end.isoformat(),
                         "grace_minutes": grace})
    changes.patient(session, visit.organisation_id, visit.patient_id)


def reconcile_bags(session: Session, rt: Runtime) -> dict[str, Any]:
    """Flag each nurse whose bag was not back to zero by the deadline after her day's visits."""
    now = rt.clock.now()
    raised = []
    for organisation_id in _organisations_with(
            session, Visit.status.in_(shifts.SHIFT_OVER),
            Visit.scheduled_start >= now - shifts.LOOKBACK, Visit.scheduled_start <= now):
        given = loaders.facts_of(session, organisation_id, now,
                                 shifts=tuple(shifts.ended_shifts(session, organisation_id, now)))
        raised += judge.judge(session, now, organisation_id, given, recurring=True)
    return {"flagged": len(raised)}


def track_loss_deadlines(session: Session, rt: Runtime) -> dict[str, Any]:
    """Flag each DEA loss-report deadline that passed without its filing."""
    now = rt.clock.now()
    raised = []
    for organisation_id in session.scalars(select(LossReport.organisation_id).where(
            LossReport.form_106_filed_at.is_(None)).distinct()):
        given = loaders.facts_of(session, organisation_id, now,
                                 losses=tuple(loaders.open_losses(session, organisation_id)))
        raised += judge.judge(session, now, organisation_id, given, recurring=True)
    return {"flagged": len(raised)}


def notifications_for(session: Session, caller: Caller, since: datetime | None = None,
                      limit: int = 100, offset: int = 0) -> list[Notification]:
    """Return the caller's own outbox items, newest first."""
    query = select(Notification).where(Notification.organisation_id == caller.organisation_id,
                                       Notification.recipient_id == caller.user_id)
    if since:
        query = query.where(Notification.created_at >= since)
    query = query.order_by(Notification.created_at.desc(), Notification.id)
    return list(session.scalars(query.limit(limit).offset(offset)))


def list_runs(session: Session, job: str | None = None, since: datetime | None = None,
              limit: int = 100, offset: int = 0) -> list[JobRun]:
    """Return job runs, newest first, optionally of one job and since a time."""
    query = select(JobRun)
    if job:
        query = query.where(JobRun.job == job)
    if since:
        query = query.where(JobRun.started_at >= since)
    query = query.order_by(JobRun.started_at.desc(), JobRun.slot.desc())
    return list(session.scalars(query.limit(limit).offset(offset)))


def sign_checkpoints(session: Session, rt: Runtime) -> dict[str, Any]:
    """Sign every custody chain head that moved since its last checkpoint."""
    return {"signed": checkpoints.sign_all(session, rt, rt.checkpoint_dir)}


def _verifies_of(organisation_id: uuid.UUID) -> Select:
    return select(JobRun).where(
        JobRun.job == LEDGER_VERIFY,
        JobRun.outcome["organisation_id"].as_string() == str(organisation_id))


def ledger_verifies(session: Session, caller: Caller, limit: int = 1) -> list[JobRun]:
    """Return the caller's organisation's ledger verifies, newest first."""
    return list(session.scalars(_verifies_of(caller.organisation_id)
                                .order_by(JobRun.started_at.desc(), JobRun.id).limit(limit)))


def ledger_verify(session: Session, caller: Caller, run_id: uuid.UUID) -> JobRun:
    """Return one of the caller's organisation's ledger verifies, or raise NotFound."""
    run = session.scalar(_verifies_of(caller.organisation_id).where(JobRun.id == run_id))
    if run is None:
        raise NotFound("No such ledger verify.")
    return run


def request_ledger_verify(session: Session, rt: Runtime, caller: Caller,
                          holder: str) -> JobRun:
    """Record a request to verify the caller's organisation's ledger, for `run_ledger_verify`."""
    now = rt.clock.now()
    running = session.scalar(_verifies_of(caller.organisation_id).where(
        JobRun.finished_at.is_(None), JobRun.started_at > now - VERIFY_LOST_AFTER).limit(1))
    if running is not None:
        raise Conflict("A verify of this ledger is already running; its result shows here "
                       "when it is done.", {"job_run_id": str(running.id)})
    run_id = new_id()
    run = JobRun(id=run_id, job=LEDGER_VERIFY, slot=str(run_id), holder=holder, started_at=now,
                 outcome={"organisation_id": str(caller.organisation_id),
                          "requested_by": str(caller.user_id), "status": REQUESTED})
    session.add(run)
    session.flush()
    audit.record(session, now, caller, "ledger.verify_requested", "job_run", run.id)
    return run


def run_ledger_verify(session: Session, rt: Runtime, run_id: uuid.UUID) -> JobRun | None:
    """Verify the ledger a requested run names; keep the report as the run's outcome."""
    run = session.get(JobRun, run_id, with_for_update=True)
    if run is None or run.job != LEDGER_VERIFY or run.finished_at is not None:
        return run
    organisation_id = uuid.UUID(run.outcome["organisation_id"])
    report = verify(session, organisation_id, rt.keys.verifying_keys(), rt.checkpoint_dir)
    # The nightly scan's incremental walk starts where this full one found the chain whole.
    record_verified(session, rt.clock.now(), report)
    problem = report.problem
    _finish_verify(session, rt, run, DONE, ok=report.ok, entries=report.entries,
                   checkpoints=report.checkpoints,
                   problem=None if problem is None else {"seq": problem.seq,
                                                         "message": problem.message})
    return run


def fail_ledger_verify(session: Session, rt: Runtime, run_id: uuid.UUID, error: str) -> None:
    """Record that a requested verify could not run to its end, and why."""
    run = session.get(JobRun, run_id, with_for_update=True)
    if run is not None and run.finished_at is None:
        _finish_verify(session, rt, run, FAILED, error=error)


def _finish_verify(session: Session, rt: Runtime, run: JobRun, status: str,
                   **outcome: Any) -> None:
    now = rt.clock.now()
    # A new dict: the JSON column does not see changes made inside the old one.
    run.outcome = {**run.outcome, "status": status, **outcome}
    run.finished_at = now
    session.flush()
    audit.record(session, now, None, "ledger.verify", "job_run", run.id,
                 organisation_id=uuid.UUID(run.outcome["organisation_id"]),
                 detail={"status": status, "ok": outcome.get("ok")})
