"""Facts read from the database at each scrape: the ledger's and the scheduled jobs'.

They are the same whichever web server or scheduler is asked, so they are read here rather
than counted in one process. Organisations are aggregated away: no id reaches a label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backend.custody.models import CustodyCheckpoint, CustodyHead
from backend.jobs.models import JobRun
from backend.jobs.service import DONE, LEDGER_VERIFY

log = logging.getLogger(__name__)


class DatabaseCollector(Collector):
    """Read the ledger's and the jobs' state through `session`, as of `now`."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now

    def collect(self) -> Iterator[Metric]:
        """Yield whether the database answered, then what it says about the ledger and jobs."""
        up = GaugeMetricFamily("vigil_database_up", "1 if this scrape could read the "
                               "database, else 0 (the rest of the scrape is still served).")
        try:
            facts = [*self._read()]
        except SQLAlchemyError as exc:
            # An outage is when the request counters matter most: serve them without these.
            log.warning("metrics: the database could not be read (%s)", type(exc).__name__)
            self.session.rollback()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from facts

    def _read(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "vigil_ledger_entries_since_checkpoint", "Ledger entries after the last signed "
            "checkpoint, in the organisation with the most.", value=self._unsigned())
        yield GaugeMetricFamily(
            "vigil_ledger_seconds_since_verify", "Seconds since a ledger last passed a verify, "
            "in the organisation verified longest ago; +Inf if one never passed.",
            value=self._verify_age())
        finished = GaugeMetricFamily(
            "vigil_job_last_success_timestamp_seconds", "When each scheduled job last "
            "finished a run, by any scheduler (Unix time).", labels=["job_name"])
        for job, at in self.session.execute(
                select(JobRun.job, func.max(JobRun.finished_at)).where(
                    JobRun.job != LEDGER_VERIFY, JobRun.finished_at.is_not(None))
                .group_by(JobRun.job).order_by(JobRun.job)):
            finished.add_metric([job], at.timestamp())
        yield finished

    def _unsigned(self) -> int:
        signed = (select(CustodyCheckpoint.organisation_id,
                         func.max(CustodyCheckpoint.seq).label("seq"))
                  .group_by(CustodyCheckpoint.organisation_id).subquery())
        gap = CustodyHead.seq - func.coalesce(signed.c.seq, 0)
        return self.session.scalar(select(func.coalesce(func.max(gap), 0)).select_from(
            CustodyHead).outerjoin(signed, signed.c.organisation_id == CustodyHead.organisation_id))

    def _verify_age(self) -> float:
        organisation = JobRun.outcome["organisation_id"].as_string()
        passed = dict(self.session.execute(
            select(organisation, func.max(JobRun.finished_at)).where(
                JobRun.job == LEDGER_VERIFY, JobRun.outcome["status"].as_string() == DONE,
                JobRun.outcome["ok"].as_boolean()).group_by(organisation)).all())
        ledgers = self.session.scalars(select(CustodyHead.organisation_id)).all()
        ages = [(self.now - passed[str(org)]).total_seconds() if str(org) in passed
                else math.inf for org in ledgers]
        return max(ages, default=0.0)

