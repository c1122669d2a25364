"""Acceptance: real `vigil scheduler` processes; one is active, each slot runs once, one takes over.

Each test starts scheduler processes with a 1-second heartbeat against its own database, kills
the active one, and reads back the job runs, the logs and (on PostgreSQL) the lock table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from backend import schema
from backend.config import PROJECT_ROOT
from backend.db import build_engine
from backend.jobs.models import JobRun
from backend.jobs.scheduler import ADVISORY_KEY
from tests.backend.conftest import own_postgres_database

# The same entry point as the installed `vigil` script, without depending on its install.
VIGIL = [sys.executable, "-c", "from backend.cli import main; main()"]
# A safety net: a scheduler the test fails to stop still exits by itself.
RUN_FOR = "120"
TIMEOUT = 45  # seconds to wait for a takeover: generous, for a loaded CI machine
# Two seconds: a run may start up to one second late on a loaded machine and keep its slot.
PERIOD = 2


@dataclass
class Scheduler:
    """A `vigil scheduler` process and the file its output goes to."""

    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        """Return what the process has printed so far."""
        return self.log.read_text()

    def slots_tried_on_standby(self) -> list[str]:
        """Return the lines where this process tried a job slot before it became active."""
        lines = self.output().splitlines()
        active = next((i for i, line in enumerate(lines) if line.endswith(" is active")),
                      len(lines))
        return [line for line in lines[:active] if " slot " in line]


def start(url: str, instance: Path, number: int, *options: str) -> Scheduler:
    """Start `vigil scheduler` on `url` with a 1-second heartbeat."""
    env = {**os.environ, "DATABASE_URL": url, "VIGIL_INSTANCE_PATH": str(instance),
           "VIGIL_ENV": "test", "PYTHONUNBUFFERED": "1"}
    log = instance / f"scheduler-{number}.log"
    with log.open("w") as out:
        process = subprocess.Popen(  # noqa: S603 - our own command, no shell
            [*VIGIL, "scheduler", "--every", f"heartbeat={PERIOD}", "--retry-seconds", "0.5",
             "--run-for", RUN_FOR, *options],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Scheduler(process, log)


def heartbeats(engine: Engine) -> list[JobRun]:
    """Return the heartbeat runs in slot order."""
    with engine.connect() as conn:
        return list(conn.execute(select(JobRun.slot, JobRun.holder).where(
            JobRun.job == "heartbeat").order_by(JobRun.slot)))


def pid_of(holder: str) -> int:
    """Return the process id inside a holder id (host:pid:random)."""
    return int(holder.split(":")[-2])


def wait_for(condition: Callable[[], bool], seconds: float, sample: Callable[[], None]) -> None:
    """Sample every tenth of a second until `condition` holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        sample()
        time.sleep(0.1)


def watch(engine: Engine, schedulers: list[Scheduler], sample: Callable[[], None]) -> int:
    """Let the schedulers run, kill the active one, and return its pid once another took over."""
    wait_for(lambda: len(heartbeats(engine)) >= 2, TIMEOUT, sample)
    active = pid_of(heartbeats(engine)[-1].holder)
    os.kill(active, signal.SIGKILL)
    killed_at = len(heartbeats(engine))
    wait_for(lambda: sum(pid_of(run.holder) != active
                         for run in heartbeats(engine)[killed_at:]) >= 3, TIMEOUT, sample)
    for scheduler in schedulers:
        if scheduler.process.poll() is None:
            scheduler.process.send_signal(signal.SIGTERM)
    for scheduler in schedulers:
        scheduler.process.wait(TIMEOUT)
    return active


def stop_all(schedulers: list[Scheduler]) -> None:
    """Kill whatever is still running (after a failure)."""
    for scheduler in schedulers:
        if scheduler.process.poll() is None:
            scheduler.process.kill()
            scheduler.process.wait(TIMEOUT)


def check_runs(engine: Engine, schedulers: list[Scheduler], killed: int,
               takeover_seconds: int) -> None:
    """Assert one run per slot, by the killed scheduler and then one successor, without gaps."""
    runs = heartbeats(engine)
    logs = "\n".join(f"--- {s.process.pid}\n{s.output()}" for s in schedulers)
    slots = [datetime.fromisoformat(run.slot) for run in runs]
    assert len(set(slots)) == len(slots), logs
    holders = [pid_of(run.holder) for run in runs]
    switch = holders.index(next(pid for pid in holders if pid != killed))
    assert set(holders[:switch]) == {killed}, logs
    assert len(set(holders[switch:])) == 1, logs
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(slots)]
    assert all(gap == PERIOD for i, gap in enumerate(gaps) if i != switch - 1), (gaps, logs)
    assert PERIOD <= gaps[switch - 1] <= takeover_seconds, (gaps, logs)
    for scheduler in schedulers:
        expected = -signal.SIGKILL if scheduler.process.pid == killed else 0
        assert scheduler.process.returncode == expected, logs
        # A standby never even tries a slot: the lock, not the unique key, keeps it out.
        assert scheduler.slots_tried_on_standby() == [], logs


@pytest.fixture
def postgres_url() -> str:
    """Return a dedicated, freshly migrated PostgreSQL database for scheduler processes."""
    return own_postgres_database("scheduler")


def test_three_postgresql_schedulers_run_each_slot_once(postgres_url, tmp_path):
    engine = build_engine(postgres_url)
    holders_seen: list[list[int]] = []
    lock_holders = text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = :high AND objid = :low")

    def sample() -> None:
        with engine.connect() as conn:
            holders_seen.append(list(conn.scalars(lock_holders, {
                "high": ADVISORY_KEY >> 32, "low": ADVISORY_KEY & 0xFFFF_FFFF})))

    schedulers = [start(postgres_url, tmp_path, number) for number in range(3)]
    try:
        killed = watch(engine, schedulers, sample)
        check_runs(engine, schedulers, killed, takeover_seconds=4)
        assert max(len(pids) for pids in holders_seen) == 1, holders_seen
        # The lock passed once, from the killed scheduler's session to its successor's.
        assert len({pid for pids in holders_seen for pid in pids}) == 2, holders_seen
    finally:
        stop_all(schedulers)
        engine.dispose()


def test_two_sqlite_schedulers_run_each_slot_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'vigil.sqlite3'}"
    engine = build_engine(url)
    schema.upgrade(engine)
    schedulers = [start(url, tmp_path, number, "--lease-seconds", "2") for number in range(2)]
    try:
        killed = watch(engine, schedulers, lambda: None)
        # The successor waits for the killed scheduler's 2-second lease to lapse.
        check_runs(engine, schedulers, killed, takeover_seconds=6)
    finally:
        stop_all(schedulers)
        engine.dispose()
