"""Prometheus metrics: `/metrics` scraped and parsed, who may scrape, and gunicorn's workers."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from backend import boundary, create_app
from backend.accounts.models import Role
from backend.custody.models import CustodyHead
from backend.jobs import service as jobs
from backend.jobs.models import JobRun
from backend.metrics import committed
from backend.metrics.scheduler import SchedulerMetrics
from tests.backend.conftest import START, make_app
from tests.backend.sync.test_sync import DAY1, Handset, session_rows
from tests.factories import Pharmacy, World

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "t" * 40
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
# A path segment that is a number or a long hex run: an id that a route template would name.
ID_SEGMENT = re.compile(r"/([0-9]+|[0-9a-f]{16,})(/|$)", re.I)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str) -> Samples:
    """Return every sample of a Prometheus text exposition by name and labels."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(client, **options) -> Samples:
    response = client.get("/metrics", **options)
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parsed(response.get_data(as_text=True))


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_requests_are_counted_by_route_template_never_by_path(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get(f"/api/v1/patients/{uuid.uuid4()}").status_code == 401
    assert client.get(f"/no/such/{uuid.uuid4()}/path/42").status_code == 404
    assert client.open("/healthz", method="BREW").status_code == 405
    after = scrape(client)
    patient = "/api/v1/patients/<uuid:patient_id>"
    assert grew(before, after, "vigil_http_requests_total",
                route=patient, method="GET", status="401") == 3
    assert grew(before, after, "vigil_http_request_duration_seconds_count",
                route=patient, method="GET") == 3
    assert grew(before, after, "vigil_http_requests_total",
                route="unmatched", method="GET", status="404") == 1
    assert grew(before, after, "vigil_http_requests_total",
                route="unmatched", method="other", status="405") == 1
    assert grew(before, after, "vigil_http_requests_total",
                route="/metrics", method="GET", status="200") == 1


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    pharmacy.receive(1_000_000)
    pharmacy.dispense(500_000)
    return pharmacy


def test_a_push_counts_its_records_by_outcome_and_its_quarantine_flag(pharmacy, client):
    visit = pharmacy.schedule(DAY1).json
    handset = Handset(pharmacy)
    handset.sync_pull()
    observations = session_rows(handset, visit["id"], pharmacy.product_id)["observations"]
    first, second, forged = observations["created"]
    forged["systolic"] = 200
    assert handset.push({"observations": {"created": [first], "updated": [],
                                          "deleted": []}}).status_code == 200
    before = scrape(client)
    response = handset.push({"observations": {"created": [first, second, forged],
                                              "updated": [], "deleted": []}})
    assert response.status_code == 200, response.json
    handset.sync_pull()
    after = scrape(client)
    for outcome in ("applied", "unchanged", "quarantined"):
        assert grew(before, after, "vigil_sync_records_total",
                    table="observations", outcome=outcome) == 1, outcome
    assert grew(before, after, "vigil_sync_pushes_total") == 1
    assert grew(before, after, "vigil_sync_pulls_total") == 1
    severities = {dict(labels)["severity"] for (name, labels) in after
                  if name == "vigil_flags_raised_total"
                  and dict(labels)["rule"] == "sync.quarantined_event"}
    assert sum(grew(before, after, "vigil_flags_raised_total", rule="sync.quarantined_event",
                    severity=severity) for severity in severities) == 1
    _no_ids_in(after)


def test_a_refused_push_counts_nothing(pharmacy, client):
    handset = Handset(pharmacy)
    before = scrape(client)
    refused = handset.push({"patients": {"created": [], "updated": [{"id": str(uuid.uuid4())}],
                                         "deleted": []}})
    assert refused.status_code == 403, refused.json
    after = scrape(client)
    assert grew(before, after, "vigil_sync_pushes_total") == 0
    assert not [key for key in after if key[0] == "vigil_sync_records_total"
                and after[key] != before.get(key)]


def test_a_count_waits_for_the_commit_and_a_rolled_back_savepoint_drops_it(app):
    counter = Counter("probe", "A counter of this test.", ["step"],
                      registry=CollectorRegistry())
    session = app.extensions["vigil.db"].sessions()
    work = session.begin_nested()
    committed.count(session, counter, step="refused")
    work.rollback()
    with session.begin_nested():
        committed.count(session, counter, step="kept", amount=2)
    assert counter.labels(step="kept")._value.get() == 0, "nothing counts before the commit"
    session.commit()
    assert counter.labels(step="kept")._value.get() == 2
    assert counter.labels(step="refused")._value.get() == 0
    session.execute(text("SELECT 1"))
    committed.count(session, counter, step="rolled_back")
    session.rollback()
    session.commit()
    assert counter.labels(step="rolled_back")._value.get() == 0
    session.close()


def _no_ids_in(samples: Samples) -> None:
    values = {value for _name, labels in samples for _label, value in labels}
    assert not [value for value in values if UUID.search(value) or ID_SEGMENT.search(value)]


def test_no_label_carries_an_id(client, world):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.ADMIN))
    for path in (f"/api/v1/patients/{uuid.uuid4()}", f"/api/v1/flags/{uuid.uuid4()}",
                 f"/console/patients/{uuid.uuid4()}", "/api/v1/visits/12345",
                 f"/{uuid.uuid4().hex}"):
        client.get(path, headers=headers)
    _no_ids_in(scrape(client))


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_ledger_and_jobs_are_read_from_the_database(pharmacy, client, world, clock):
    sessions, rt = world.app.extensions["vigil.db"].sessions, world.rt
    head = world.session.scalar(select(CustodyHead).where(
        CustodyHead.organisation_id == pharmacy.org.id))
    samples = scrape(client)
    assert _value(samples, "vigil_ledger_entries_since_checkpoint") >= head.seq > 0
    assert _value(samples, "vigil_ledger_seconds_since_verify") == math.inf
    with boundary.unit(sessions, rt) as session:
        jobs.run_slot(session, rt, "ledger_checkpoint", "slot-1", "test", jobs.sign_checkpoints)
    with boundary.unit(sessions, rt) as session:
        for org_id in session.scalars(select(CustodyHead.organisation_id)):
            session.add(JobRun(job=jobs.LEDGER_VERIFY, slot=str(uuid.uuid4()), holder="test",
                               started_at=clock.now(), finished_at=clock.now(),
                               outcome={"organisation_id": str(org_id), "status": jobs.DONE,
                                        "ok": True}))
    clock.advance(seconds=90)
    samples = scrape(client)
    assert _value(samples, "vigil_ledger_entries_since_checkpoint") == 0
    assert _value(samples, "vigil_ledger_seconds_since_verify") == 90
    assert _value(samples, "vigil_job_last_success_timestamp_seconds",
                  job_name="ledger_checkpoint") == START.timestamp()
    assert not [key for key in samples if dict(key[1]).get("job_name") == jobs.LEDGER_VERIFY]


@pytest.fixture
def guarded(database_url, instance_path, clock, connection):
    """Return a maker of test clients of apps with the given metrics settings."""
    made = []

    def client_with(**settings):
        app = make_app(database_url, instance_path, clock, **settings)
        app.extensions["vigil.db"].use_connection(connection)
        made.append(app)
        return app.test_client()

    yield client_with
    for app in made:
        app.extensions["vigil.db"].engine.dispose()


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.json == {"error": {"code": code, "details": {},
                                       "message": "Metrics are not available to this caller."}}


def test_a_scrape_needs_the_token_or_an_admitted_network(guarded):
    far = {"REMOTE_ADDR": "192.0.2.7"}
    _refused(guarded().get("/metrics", environ_base=far), 403, "forbidden")
    _refused(guarded().get("/metrics", headers={"X-Forwarded-For": "192.0.2.7"}),
             403, "forbidden")
    with_token = guarded(METRICS_TOKEN=TOKEN)
    _refused(with_token.get("/metrics", environ_base=far), 401, "unauthenticated")
    _refused(with_token.get("/metrics"), 401, "unauthenticated")
    _refused(with_token.get("/metrics", environ_base=far,
                            headers={"Authorization": f"Bearer {TOKEN}x"}), 401,
             "unauthenticated")
    scrape(with_token, environ_base=far, headers={"Authorization": f"Bearer {TOKEN}"})
    networks = guarded(METRICS_NETWORKS=("10.0.0.0/8",))
    scrape(networks, environ_base={"REMOTE_ADDR": "10.20.30.40"})
    _refused(networks.get("/metrics", environ_base=far), 403, "forbidden")
    _refused(networks.get("/metrics"), 403, "forbidden")
    behind_proxy = guarded(TRUST_PROXY=True, METRICS_NETWORKS=("10.0.0.0/8",))
    scrape(behind_proxy, headers={"X-Forwarded-For": "10.1.1.1"})
    _refused(behind_proxy.get("/metrics", headers={"X-Forwarded-For": "192.0.2.7"}),
             403, "forbidden")


@pytest.mark.parametrize("settings", [{"METRICS_TOKEN": "short"},
                                      {"METRICS_NETWORKS": ("10.0.0.1/8",)},
                                      {"METRICS_NETWORKS": ("ten",)}])
def test_bad_metrics_settings_are_refused(settings, database_url, instance_path, clock):
    with pytest.raises(ValueError, match="VIGIL_METRICS"):
        make_app(database_url, instance_path, clock, **settings)


def test_the_scheduler_counts_its_runs_failures_and_successes():
    active = [False]
    metrics = SchedulerMetrics(lambda: active[0], ["heartbeat", "sync_checks"])
    at = START
    for job, retval, exception in (("heartbeat", object(), None), ("heartbeat", None, None),
                                   ("sync_checks", None, RuntimeError("down")),
                                   ("lock", None, None)):
        code = EVENT_JOB_ERROR if exception else EVENT_JOB_EXECUTED
        metrics.heard(JobExecutionEvent(code, job, "default", at, retval=retval,
                                        exception=exception))
    samples = parsed(generate_latest(metrics.registry).decode())
    assert _value(samples, "vigil_scheduler_active") == 0
    active[0] = True
    assert _value(parsed(generate_latest(metrics.registry).decode()),
                  "vigil_scheduler_active") == 1
    assert _value(samples, "vigil_scheduler_job_runs_total", job_name="heartbeat") == 1
    assert _value(samples, "vigil_scheduler_job_runs_total", job_name="sync_checks") == 1
    assert _value(samples, "vigil_scheduler_job_failures_total", job_name="sync_checks") == 1
    assert _value(samples, "vigil_scheduler_job_failures_total", job_name="heartbeat") == 0
    assert _value(samples, "vigil_scheduler_job_last_success_timestamp_seconds",
                  job_name="heartbeat") == pytest.approx(time.time(), abs=60)
    assert ("vigil_scheduler_job_last_success_timestamp_seconds",
            (("job_name", "sync_checks"),)) not in samples


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - http, built here
        return response.read().decode()


def _counted_by(path: Path) -> float:
    """Return the unmatched GETs that the worker writing counter file `path` counted."""
    return sum(sample.value for metric in MultiProcessCollector.merge([str(path)])
               for sample in metric.samples if sample.name == "vigil_http_requests_total"
               and sample.labels["route"] == "unmatched")


def _until_both_workers_answer(url: str, folder: Path) -> int:
    """Send requests 8 at a time until two workers have answered some; return how many."""
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(25):
            list(pool.map(_get_missing, [url] * 16))
            sent += 16
            if len([path for path in folder.glob("counter_*.db") if _counted_by(path)]) == 2:
                return sent
    raise AssertionError(f"one worker answered all {sent} requests")


def _get_missing(url: str) -> None:
    with pytest.raises(urllib.error.HTTPError, match="404"):
        _get(url)


def test_gunicorns_workers_add_up_in_one_scrape(database_url, instance_path, clock, tmp_path):
    if not database_url.startswith("sqlite"):
        pytest.skip("one backend proves the workers' files add up")
    make_app(database_url, instance_path, clock).extensions["vigil.db"].engine.dispose()
    port, folder = _free_port(), tmp_path / "metrics"
    key = ("vigil_http_requests_total",
           (("method", "GET"), ("route", "unmatched"), ("status", "404")))
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left by an earlier master")
    env = {**os.environ, "VIGIL_BIND": f"127.0.0.1:{port}", "VIGIL_WORKERS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(folder), "DATABASE_URL": database_url,
           "VIGIL_INSTANCE_PATH": str(instance_path), "VIGIL_ENV": "test"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # A bound on a hang, not on speed: a loaded CI machine boots two workers slowly.
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
                time.sleep(0.2)
        metrics = f"http://127.0.0.1:{port}/metrics"
        before = parsed(_get(metrics)).get(key, 0)
        sent = _until_both_workers_answer(f"http://127.0.0.1:{port}/{uuid.uuid4()}", folder)
        # Each scrape is answered by one worker, and each sees every worker's count.
        for _ in range(4):
            assert parsed(_get(metrics))[key] == before + sent
    finally:
        server.terminate()
        server.wait(timeout=30)


UNREACHABLE = ["postgresql+psycopg://nobody@127.0.0.1:1/none",
               "sqlite:////nonexistent-vigil-dir/vigil.sqlite3"]


@pytest.mark.parametrize("url", UNREACHABLE, ids=["postgresql", "sqlite"])
def test_a_scrape_during_a_database_outage_still_serves_the_request_counts(url, tmp_path):
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": tmp_path, "VIGIL_ENV": "test"})
    try:
        client = app.test_client()
        client.get("/healthz")
        samples = scrape(client)
    finally:
        app.extensions["vigil.db"].engine.dispose()
    assert samples[("vigil_database_up", ())] == 0
    assert not any(name.startswith("vigil_ledger_") for name, _ in samples)
    assert _value(samples, "vigil_http_requests_total", route="/healthz", method="GET",
                  status="200") >= 1
