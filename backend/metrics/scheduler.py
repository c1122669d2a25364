"""The scheduler process's own metrics, on an HTTP endpoint of its own.

A scheduler runs apart from the web servers, maybe on another host, and only one of several
is active; each answers for itself: whether it holds the lock, and the runs it did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from apscheduler.events import JobExecutionEvent
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class SchedulerMetrics:
    """Whether this scheduler is active, and its jobs' runs, failures and last successes."""

    def __init__(self, active: Callable[[], bool], jobs: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        Gauge("vigil_scheduler_active", "1 while this scheduler holds the lock and runs the "
              "jobs; 0 while it stands by.", registry=self.registry).set_function(
            lambda: float(active()))
        self.runs = Counter("vigil_scheduler_job_runs", "Job runs this scheduler did, failed "
                            "ones included.", ["job_name"], registry=self.registry)
        self.failures = Counter("vigil_scheduler_job_failures", "Job runs this scheduler did "
                                "that raised an error.", ["job_name"], registry=self.registry)
        self.last_success = Gauge(
            "vigil_scheduler_job_last_success_timestamp_seconds", "When a run of the job by "
            "this scheduler last succeeded (Unix time).", ["job_name"], registry=self.registry)
        self.jobs = frozenset(jobs)
        for job in self.jobs:
            # Present from the start at 0, so that a rate or an absence alert has a series.
            self.runs.labels(job_name=job)
            self.failures.labels(job_name=job)

    def heard(self, event: JobExecutionEvent) -> None:
        """Count a job's end: a run it did (standbys and slots already run do none), or an error."""
        if event.job_id not in self.jobs or (event.exception is None and event.retval is None):
            return
        self.runs.labels(job_name=event.job_id).inc()
        if event.exception is not None:
            self.failures.labels(job_name=event.job_id).inc()
        else:
            self.last_success.labels(job_name=event.job_id).set_to_current_time()

    def serve(self, address: str, port: int) -> None:
        """Answer scrapes at http://address:port/metrics from a background thread."""
        start_http_server(port, addr=address, registry=self.registry)
