"""The scheduler's jobs: each slot once, reminders once per visit, missed visits marked once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.cli import cli
from backend.flags.models import Flag
from backend.jobs import scheduler, service
from backend.jobs.models import JobRun, Notification
from backend.plans.models import PlanVersion, TreatmentPlan
from backend.policy.models import PolicyOverride
from backend.products.models import DrugProduct
from backend.visits.models import Visit, VisitStatus
from tests.backend.conftest import START
from tests.factories import World


class Clinic:
    """An organisation with a nurse, a patient under a plan, and visits made directly."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.org = world.org()
        self.admin = world.user(self.org, Role.ADMIN)
        self.nurse = world.user(self.org, Role.NURSE)
        response = world.client.post(
            "/api/v1/patients", headers=world.headers(self.org, self.admin),
            json={"mrn": f"JOB-{uuid.uuid4().hex[:6]}", "name": "Pat Jobs",
                  "date_of_birth": "1970-01-01", "nurse_ids": [str(self.nurse.id)]})
        assert response.status_code == 201, response.json
        self.patient_id = uuid.UUID(response.json["id"])
        self.version_id = self._plan_version()

    def _plan_version(self) -> uuid.UUID:
        session, now = self.world.session, START
        product = DrugProduct(
            organisation_id=self.org.id, name=f"Ketamine {uuid.uuid4().hex[:6]}",
            active_ingredient="ketamine", dea_schedule="III", form="solution", unit="mL",
            ug_per_unit=50_000, units_per_container=Decimal(10), allowed_routes=["iv"],
            home_administration_allowed=True, created_at=now)
        plan = TreatmentPlan(organisation_id=self.org.id, patient_id=self.patient_id,
                             status="active", current_version=1, created_at=now,
                             created_by_id=self.admin.id)
        session.add_all([product, plan])
        session.flush()
        version = PlanVersion(plan_id=plan.id, organisation_id=self.org.id, version=1,
                              product_id=product.id, route="iv",
                              dose_ug_per_kg=500, max_dose_ug=50_000, infusion_minutes=40,
                              prescriber_id=self.admin.id, created_at=now)
        session.add(version)
        session.commit()
        return version.id

    def visit(self, starts_in: timedelta, status: VisitStatus = VisitStatus.SCHEDULED,
              hours: int = 3) -> Visit:
        """Add a visit starting `starts_in` from the test's start time."""
        start = START + starts_in
        visit = Visit(organisation_id=self.org.id, patient_id=self.patient_id,
                      nurse_id=self.nurse.id, plan_version_id=self.version_id, phase_ordinal=0,
                      scheduled_start=start, scheduled_end=start + timedelta(hours=hours),
                      status=status, created_at=START, created_by_id=self.admin.id,
                      updated_at=START)
        self.world.session.add(visit)
        self.world.commit()
        return visit

    def set_policy(self, name: str, value: int) -> None:
        """Override one threshold for the clinic's organisation."""
        self.world.session.add(PolicyOverride(organisation_id=self.org.id, name=name,
                                              value=str(value), set_by_id=self.admin.id,
                                              set_at=START))
        self.world.commit()


@pytest.fixture
def clinic(world: World) -> Clinic:
    return Clinic(world)


def _reminders(world: World, clinic: Clinic) -> list[Notification]:
    return list(world.session.scalars(select(Notification).where(
        Notification.organisation_id == clinic.org.id)))


def _run(world: World, body) -> dict:
    outcome = body(world.session, world.rt)
    world.commit()
    return outcome


def test_a_reminder_is_queued_once_per_visit_within_the_lead_time(world: World, clinic, clock):
    soon = clinic.visit(timedelta(hours=2))
    later = clinic.visit(timedelta(hours=30))
    clinic.visit(timedelta(hours=-2))
    clinic.visit(timedelta(hours=3), status=VisitStatus.CANCELLED)
    assert _run(world, service.send_visit_reminders) == {"queued": 1}
    assert _run(world, service.send_visit_reminders) == {"queued": 0}
    [reminder] = _reminders(world, clinic)
    assert (reminder.recipient_id, reminder.kind) == (clinic.nurse.id, "visit.reminder")
    assert (reminder.subject_type, reminder.subject_id) == ("visit", str(soon.id))
    assert reminder.body["scheduled_start"] == soon.scheduled_start.isoformat()
    assert reminder.delivered_at is None
    clock.advance(hours=7)
    assert _run(world, service.send_visit_reminders) == {"queued": 1}
    assert {n.subject_id for n in _reminders(world, clinic)} == {str(soon.id), str(later.id)}


def test_the_reminder_lead_time_is_the_organisations_policy(world: World, clinic):
    clinic.set_policy("reminder_lead_hours", 48)
    clinic.visit(timedelta(hours=30))
    assert _run(world, service.send_visit_reminders) == {"queued": 1}


def test_a_missed_visit_is_marked_audited_and_flagged_once(world: World, clinic, clock):
    missed = clinic.visit(timedelta(hours=-4, minutes=-1))
    within_grace = clinic.visit(timedelta(hours=-3, minutes=-30))
    checked_in = clinic.visit(timedelta(hours=-5), status=VisitStatus.CHECKED_IN)
    assert _run(world, service.mark_missed_visits) == {"marked_missed": 1}
    assert _run(world, service.mark_missed_visits) == {"marked_missed": 0}
    world.session.expire_all()
    assert missed.status == VisitStatus.MISSED
    assert "60 min grace" in missed.status_reason
    assert missed.updated_at == START
    assert (within_grace.status, checked_in.status) == (VisitStatus.SCHEDULED,
                                                        VisitStatus.CHECKED_IN)
    [event] = world.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "visit.missed", AuditEvent.organisation_id == clinic.org.id))
    assert (event.object_id, event.user_id) == (str(missed.id), None)
    [flag] = world.session.scalars(select(Flag).where(Flag.organisation_id == clinic.org.id,
                                                      Flag.rule_id == "visit.missed"))
    assert (flag.severity, flag.subject_kind, flag.subject_id) == ("medium", "visit",
                                                                   str(missed.id))
    assert flag.evidence == {"visit_id": str(missed.id), "patient_id": str(clinic.patient_id),
                             "nurse_id": str(clinic.nurse.id),
                             "scheduled_start": missed.scheduled_start.isoformat(),
                             "reason": missed.status_reason}
    assert flag.occurrences == 1
    clock.advance(minutes=31)
    assert _run(world, service.mark_missed_visits) == {"marked_missed": 1}


def test_the_missed_visit_grace_is_the_organisations_policy(world: World, clinic):
    clinic.set_policy("missed_visit_grace_minutes", 15)
    clinic.visit(timedelta(hours=-3, minutes=-30))
    assert _run(world, service.mark_missed_visits) == {"marked_missed": 1}


def test_a_slot_runs_once(world: World):
    calls = []

    def body(session, rt):
        calls.append(rt.clock.now())
        return {"n": len(calls)}

    first = service.run_slot(world.session, world.rt, "test", "slot-1", "me", body)
    again = service.run_slot(world.session, world.rt, "test", "slot-1", "other", body)
    world.commit()
    assert (first.outcome, first.finished_at, again) == ({"n": 1}, START, None)
    assert len(calls) == 1
    assert service.run_slot(world.session, world.rt, "test", "slot-2", "me", body) is not None
    assert len(calls) == 2


def test_rerunning_a_slot_does_its_work_once(world: World, clinic):
    clinic.visit(timedelta(hours=1))
    for _ in range(2):
        service.run_slot(world.session, world.rt, "visit_reminders", "slot", "me",
                         service.send_visit_reminders)
        world.commit()
    assert len(_reminders(world, clinic)) == 1
    [run] = world.session.scalars(select(JobRun).where(JobRun.job == "visit_reminders"))
    assert run.outcome == {"queued": 1}


def test_a_failed_run_leaves_its_slot_free(world: World):
    def failing(session, rt):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        service.run_slot(world.session, world.rt, "test", "slot", "me", failing)
    world.session.rollback()
    assert service.run_slot(world.session, world.rt, "test", "slot", "me",
                            service.heartbeat) is not None


@pytest.mark.parametrize(("seconds", "slot"), [
    (1, "2026-11-02T14:37:12+00:00"),
    (300, "2026-11-02T14:35:00+00:00"),
    (3600, "2026-11-02T14:00:00+00:00"),
    (86400, "2026-11-02T00:00:00+00:00"),
])
def test_a_slot_is_the_start_of_its_period(seconds, slot):
    assert scheduler.slot_of(datetime(2026, 11, 2, 14, 37, 12, 999, tzinfo=UTC), seconds) == slot


def test_periods_can_be_changed_only_for_known_jobs():
    schedule = scheduler.with_periods(scheduler.SCHEDULE, {"heartbeat": 1})
    assert {spec.name: spec.seconds for spec in schedule}["heartbeat"] == 1
    with pytest.raises(ValueError, match="no job named nightly"):
        scheduler.with_periods(scheduler.SCHEDULE, {"nightly": 1})
    with pytest.raises(ValueError, match="at least 1 second"):
        scheduler.with_periods(scheduler.SCHEDULE, {"heartbeat": 0})


def _lease(world: World, clock, holder: str) -> scheduler.LeaseLock:
    return scheduler.LeaseLock(world.app.extensions["vigil.db"].sessions, clock, holder, 10)


def test_a_lease_has_one_holder_until_it_lapses(world: World, clock):
    first, second = _lease(world, clock, "first"), _lease(world, clock, "second")
    assert first.acquire() and not second.acquire()
    clock.advance(seconds=5)
    assert first.acquire() and not second.acquire()
    clock.advance(seconds=9)
    assert not second.acquire() and first.held()
    clock.advance(seconds=2)
    assert not first.held()
    assert second.acquire() and not first.acquire()


def test_a_released_lease_is_free_at_once(world: World, clock):
    first, second = _lease(world, clock, "first"), _lease(world, clock, "second")
    assert first.acquire()
    first.release()
    assert second.acquire() and not first.held()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_advisory_lock_has_one_holder_until_released(engine):
    first, second = scheduler.AdvisoryLock(engine), scheduler.AdvisoryLock(engine)
    try:
        assert first.acquire() and not second.acquire()
        assert first.acquire() and first.held()
        first.release()
        assert second.acquire() and not first.acquire()
    finally:
        first.release()
        second.release()


def test_only_the_lock_holder_runs_jobs(world: World, clock):
    sessions = world.app.extensions["vigil.db"].sessions
    spec = scheduler.JobSpec("heartbeat", 60, service.heartbeat)
    standby, active = _lease(world, clock, "standby"), _lease(world, clock, "active")
    assert active.acquire() and not standby.acquire()
    for lock, holder in ((standby, "standby"), (active, "active"), (active, "active")):
        scheduler.run_job(sessions, world.rt, spec, lock, holder)
    runs = world.session.scalars(select(JobRun).where(JobRun.job == "heartbeat")).all()
    assert [(run.slot, run.holder) for run in runs] == [("2026-11-02T14:00:00+00:00", "active")]


def test_a_nurse_lists_her_own_notifications(world: World, clinic):
    clinic.visit(timedelta(hours=2))
    _run(world, service.send_visit_reminders)
    other = world.user(clinic.org, Role.NURSE)
    mine = world.client.get("/api/v1/notifications",
                            headers=world.headers(clinic.org, clinic.nurse))
    assert mine.status_code == 200, mine.json
    assert [n["kind"] for n in mine.json] == ["visit.reminder"]
    theirs = world.client.get("/api/v1/notifications", headers=world.headers(clinic.org, other))
    assert theirs.json == []


def test_an_admin_lists_job_runs_by_job_and_time(world: World, clinic, clock):
    for job, slot in (("heartbeat", "a"), ("missed_visits", "a"), ("heartbeat", "b")):
        service.run_slot(world.session, world.rt, job, slot, "me", service.heartbeat)
        clock.advance(minutes=1)
    world.commit()
    headers = world.headers(clinic.org, clinic.admin)
    listed = world.client.get("/api/v1/jobs/runs", headers=headers,
                              query_string={"job": "heartbeat"})
    assert listed.status_code == 200, listed.json
    assert [(run["job"], run["slot"]) for run in listed.json] == [("heartbeat", "b"),
                                                                  ("heartbeat", "a")]
    since = (START + timedelta(minutes=1)).isoformat()
    recent = world.client.get("/api/v1/jobs/runs", headers=headers, query_string={"since": since})
    assert [run["slot"] for run in recent.json] == ["b", "a"]
    assert [run["job"] for run in recent.json] == ["heartbeat", "missed_visits"]


@pytest.mark.parametrize(("options", "complaint"), [
    (["--every", "nightly=1"], "no job named nightly"),
    (["--every", "heartbeat"], "JOB=SECONDS"),
    (["--every", "heartbeat=0"], "at least 1 second"),
    (["--lease-seconds", "5"], "twice --retry-seconds"),
])
def test_the_scheduler_command_refuses_bad_options(tmp_path, monkeypatch, options, complaint):
    monkeypatch.setenv("VIGIL_INSTANCE_PATH", str(tmp_path))
    result = CliRunner().invoke(cli, ["scheduler", *options])
    assert result.exit_code == 2
    assert complaint in result.output
