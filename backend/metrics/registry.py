"""The metrics the app counts, and their exposition in the Prometheus text format.

prometheus-client keeps one metric object per name in a process, so they are made here once.
Under gunicorn (`PROMETHEUS_MULTIPROC_DIR` set before the workers import this) each worker
writes its values to files in that folder, and a scrape, answered by any one worker, adds up
every worker's files; otherwise the process's default registry holds them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "vigil_http_requests", "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "vigil_http_request_duration_seconds", "Time to answer an HTTP request, by route template "
    "and method.", ["route", "method"])
SYNC_PUSHES = Counter("vigil_sync_pushes", "Sync pushes applied and committed.")
SYNC_RECORDS = Counter(
    "vigil_sync_records", "Records of committed sync pushes, by table and outcome "
    "(applied, unchanged, quarantined).", ["table", "outcome"])
SYNC_PULLS = Counter("vigil_sync_pulls", "Sync pulls answered and committed.")
FLAGS_RAISED = Counter(
    "vigil_flags_raised", "New flags committed, by rule and severity.", ["rule", "severity"])


def _processes() -> CollectorRegistry:
    """Return what every process counted: all workers' files, or this process's registry."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return registry


def exposition(*collectors: Collector) -> bytes:
    """Return the counted metrics, then what `collectors` read now, as Prometheus text."""
    now = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        now.register(collector)
    return generate_latest(_processes()) + generate_latest(now)
