"""Run the schedule on APScheduler in `vigil scheduler`, with one scheduler active at a time.

Every scheduler process fires every job, but only the one holding the database lock does the
work: a PostgreSQL advisory lock, or on SQLite a lease row. Each run first claims its slot in
`job_run`, so that even two schedulers that both believe they hold the lock do a slot once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, delete, or_, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from backend import boundary, logs
from backend.clock import Clock
from backend.db import Database, upsert
from backend.jobs import service
from backend.jobs.models import JobRun, SchedulerLease
from backend.runtime import Runtime
from backend.scan import service as scan
from backend.sync import checks, tombstones

log = logging.getLogger(__name__)

# "vigilsch" read as a 64-bit integer: a key no other advisory lock user is likely to pick.
ADVISORY_KEY = int.from_bytes(b"vigilsch", "big")
LEASE_NAME = "scheduler"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class JobSpec:
    """A job on the schedule: its name, its period, and the service function it runs."""

    name: str
    seconds: int
    body: service.JobBody


SCHEDULE: tuple[JobSpec, ...] = (
    JobSpec("heartbeat", 3600, service.heartbeat),
    JobSpec("visit_reminders", 900, service.send_visit_reminders),
    JobSpec("missed_visits", 300, service.mark_missed_visits),
    JobSpec("bag_reconciliation", 900, service.reconcile_bags),
    JobSpec("loss_deadlines", 3600, service.track_loss_deadlines),
    # Every minute: entries after the last checkpoint are vouched for by their own signatures
    # alone, and removing the newest ones (with the head rewound) shows only at a checkpoint.
    JobSpec("ledger_checkpoint", 60, service.sign_checkpoints),
    # Nightly: the peer statistics compare whole days, and the slot is one UTC day.
    JobSpec("population_scan", 86400, scan.nightly_scan),
    JobSpec("sync_tombstones", 86400, tombstones.prune),
    # Sessions that came by sync are judged here, soon after the push answered.
    JobSpec("sync_checks", 60, checks.judge_pending),
)


def with_periods(schedule: tuple[JobSpec, ...],
                 periods: Mapping[str, int]) -> tuple[JobSpec, ...]:
    """Return `schedule` with the named jobs' periods replaced."""
    if unknown := periods.keys() - {spec.name for spec in schedule}:
        raise ValueError(f"no job named {', '.join(sorted(unknown))}")
    if any(seconds < 1 for seconds in periods.values()):
        raise ValueError("a period is at least 1 second")
    return tuple(replace(spec, seconds=periods.get(spec.name, spec.seconds))
                 for spec in schedule)


def slot_of(at: datetime, seconds: int) -> str:
    """Return the start of the period that `at` falls in, counted from the epoch, in ISO form."""
    start = int(at.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(start, UTC).isoformat()


def holder_id() -> str:
    """Return this process's name as a lock holder: host, pid and a random part."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class Lock(Protocol):
    """What makes one scheduler the active one."""

    def acquire(self) -> bool:
        """Take the lock or keep it; return whether this process holds it."""
        ...

    def held(self) -> bool:
        """Tell whether this process holds the lock now."""
        ...

    def release(self) -> None:
        """Give the lock up."""
        ...


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection kept for the process's life.

    The lock lives as long as the database session: if the process dies, its connection closes
    and PostgreSQL frees the lock at once for a standby to take.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._held = False

    def acquire(self) -> bool:
        """Take the lock if it is free, or check that ours still stands."""
        try:
            if self._connection is None:
                self._connection = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            if self._held:
                # Only the end of our session frees a session lock: a live session still holds it.
                self._connection.exec_driver_sql("SELECT 1")
            else:
                self._held = bool(self._connection.scalar(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}))
        except DBAPIError:
            log.warning("the scheduler's lock connection failed", exc_info=True)
            self.release()
        return self._held

    def held(self) -> bool:
        """Tell whether this process holds the lock."""
        return self._held

    def release(self) -> None:
        """Unlock, and end the lock's session, which would free the lock anyway."""
        held, self._held = self._held, False
        if self._connection is not None:
            if held:
                # Unlock at once: the server frees a closed session's locks only when its
                # backend has noticed the closed socket, which can lag under load.
                with contextlib.suppress(DBAPIError):
                    self._connection.scalar(text("SELECT pg_advisory_unlock(:key)"),
                                            {"key": ADVISORY_KEY})
            # Invalidate, not return to the pool, where the session and its lock would live on.
            self._connection.invalidate()
            self._connection.close()
            self._connection = None


class LeaseLock:
    """A lease row that lapses unless its holder renews it; a standby takes a lapsed lease."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, holder: str,
                 seconds: float) -> None:
        self.sessions = sessions
        self.clock = clock
        self.holder = holder
        self.seconds = seconds
        self._until: datetime | None = None

    def acquire(self) -> bool:
        """Take the lease if it is missing, lapsed or ours, for another `seconds`."""
        now = self.clock.now()
        until = now + timedelta(seconds=self.seconds)
        try:
            # The lease is the scheduler's own boundary, outside any job's unit of work.
            with self.sessions.begin() as session:
                won = session.execute(self._claim(session, now, until)).first() is not None
        except DBAPIError:
            # Keep what we had: the lease is ours until it lapses, renewed or not.
            log.warning("could not renew the scheduler lease", exc_info=True)
            return self.held()
        self._until = until if won else None
        return won

    def _claim(self, session: Session, now: datetime, until: datetime):
        # One statement decides, so two schedulers claiming together cannot both win; it
        # returns a row only when it inserted or updated.
        lease = SchedulerLease.__table__
        claim = upsert(session, lease).values(
            name=LEASE_NAME, holder=self.holder, expires_at=until)
        return claim.on_conflict_do_update(
            index_elements=[lease.c.name], set_={"holder": self.holder, "expires_at": until},
            where=or_(lease.c.holder == self.holder, lease.c.expires_at < now),
        ).returning(lease.c.holder)

    def held(self) -> bool:
        """Tell whether this process holds an unlapsed lease."""
        return self._until is not None and self.clock.now() < self._until

    def release(self) -> None:
        """Give the lease up, so that a standby need not wait for it to lapse."""
        if self._until is None:
            return
        self._until = None
        lease = SchedulerLease.__table__
        try:
            with self.sessions.begin() as session:
                session.execute(delete(lease).where(lease.c.name == LEASE_NAME,
                                                    lease.c.holder == self.holder))
        except DBAPIError:
            log.warning("could not give the scheduler lease up; it will lapse", exc_info=True)


def lock_for(database: Database, clock: Clock, holder: str, lease_seconds: float) -> Lock:
    """Return the advisory lock on PostgreSQL, else the lease."""
    if database.engine.dialect.name == "postgresql":
        return AdvisoryLock(database.engine)
    return LeaseLock(database.sessions, clock, holder, lease_seconds)


def keep_lock(lock: Lock, holder: str) -> None:
    """Take or renew the lock, and say when this scheduler becomes active or stands by."""
    was_active = lock.held()
    active = lock.acquire()
    if active != was_active:
        log.info("scheduler %s %s", holder, "is active" if active else "stands by")


def run_job(sessions: sessionmaker[Session], rt: Runtime, spec: JobSpec, lock: Lock,
            holder: str) -> JobRun | None:
    """Run `spec` for the current slot if this scheduler is the active one; return the run."""
    if not lock.held():
        return None
    # APScheduler 3 does not pass the fire time. Triggers fire on period boundaries from the
    # epoch, and a run later than its grace (under one period) is dropped as misfired, so the
    # boundary at or before now is the fire time.
    slot = slot_of(rt.clock.now(), spec.seconds)
    started = time.perf_counter()
    with logs.context(job=spec.name, slot=slot, holder=holder):
        try:
            with boundary.unit(sessions, rt) as session:
                run = service.run_slot(session, rt, spec.name, slot, holder, spec.body)
        except Exception:
            log.exception("job %s slot %s failed", spec.name, slot,
                          extra={"duration_ms": _since(started)})
            raise
        if run is None:
            log.info("job %s slot %s already ran", spec.name, slot)
        else:
            log.info("job %s slot %s ran by %s: %s", spec.name, slot, holder, run.outcome,
                     extra={"duration_ms": _since(started), "outcome": run.outcome})
    return run


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class Stop(Exception):
    """The process was asked to stop."""


def _stop(_signum: int, _frame: object) -> None:
    raise Stop


def run(sessions: sessionmaker[Session], rt: Runtime, lock: Lock, holder: str,
        schedule: tuple[JobSpec, ...] = SCHEDULE, *, retry_seconds: float = 5.0,
        run_for: float | None = None,
        listener: Callable[[JobExecutionEvent], None] | None = None) -> None:
    """Run `schedule` until stopped, doing the work only while this process holds `lock`.

    `listener` hears each job's end: what it returned, or what it raised.
    """
    scheduler = BlockingScheduler(timezone=UTC)
    if listener is not None:
        scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.add_job(keep_lock, IntervalTrigger(seconds=retry_seconds, timezone=UTC),
                      args=(lock, holder), id="lock", coalesce=True, max_instances=1)
    for spec in schedule:
        scheduler.add_job(
            run_job, IntervalTrigger(seconds=spec.seconds, start_date=EPOCH, timezone=UTC),
            args=(sessions, rt, spec, lock, holder), id=spec.name, name=spec.name,
            coalesce=True, max_instances=1, misfire_grace_time=max(1, spec.seconds - 1))
    # Each run is logged as a JobRun and above; the executor's lines would only repeat them.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _stop)
    if run_for:
        signal.signal(signal.SIGALRM, _stop)
        signal.setitimer(signal.ITIMER_REAL, run_for)
    log.info("scheduler %s started; jobs: %s", holder,
             ", ".join(f"{spec.name} every {spec.seconds} s" for spec in schedule))
    keep_lock(lock, holder)
    try:
        scheduler.start()
    except (Stop, KeyboardInterrupt):
        log.info("scheduler %s stopping", holder)
    finally:
        if scheduler.running:
            scheduler.shutdown()
        lock.release()
