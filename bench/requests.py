"""Measure authenticated requests against a bare Flask endpoint served by the same gunicorn.

Seeds one organisation on a fresh database through the services: its staff, a nurse with a
registered phone and --patients patients of hers, each with a weekly plan and a visit
scheduled; the nurse signs in from her phone. Then one gunicorn (gunicorn.conf.py, --workers
workers, JSON log lines as in production) serves bench/served.py: `/bare` is a minimal Flask app
answering a small JSON object, everything else is Vigil. A load generator (`ab`, else threads of
http.client) keeps --concurrency requests in flight for --seconds on each path in turn, the
paths interleaved over --rounds rounds; each path's rate is its requests over its time, and its
ratio is to the bare endpoint's rate in the same run. Before that, each path is also run
--requests times in this process (Flask test client, no network) and its CPU in this process
timed, a figure less disturbed by other work on the machine; --profile then runs as many GET
/api/v1/me under cProfile and prints the costliest functions. Runs on a temporary SQLite
file, or on the PostgreSQL database in BENCH_DATABASE_URL (its name must contain "bench"; its
public schema is dropped first).
Usage: python bench/requests.py [--seconds 10] [--rounds 3] [--concurrency 8] [--workers 2]
[--patients 5] [--profile] [--requests 1000]
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import logging
import os
import pstats
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from flask import Flask

from backend import logs
from backend.visits import service as visits
from bare import bare
from database import describe, migrated_app
from machine import describe as machine_description
from scan import add_staff, admit, seat
from schedule import CHEAP_ARGON2, ORG, PASSWORD, as_caller

TARGET = 0.35
BARE = "/bare/"
PATHS = (BARE, "/healthz", "/api/v1/me", "/api/v1/visits?nurse=me")
ROOT = Path(__file__).resolve().parents[1]
# ApacheBench (apt-get install apache2-utils): its C client leaves both cores to the server.
AB = shutil.which("ab")


def parse_args() -> argparse.Namespace:
    """Read the load's shape and the seed's size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="load on each path per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the paths, interleaved")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--patients", type=int, default=5,
                        help="the nurse's patients, each with one visit scheduled")
    parser.add_argument("--profile", action="store_true",
                        help="profile GET /api/v1/me in this process too")
    parser.add_argument("--requests", type=int, default=1000,
                        help="requests per path timed in process (and profiled)")
    return parser.parse_args()


def seed(app: Flask, patients: int) -> dict[str, str]:
    """Seed the nurse, her phone, patients and visits; return her signed-in phone's headers."""
    rt = app.extensions["vigil.runtime"]
    rng = random.Random(16)
    with app.extensions["vigil.db"].sessions() as session:
        staff = add_staff(session, rt, 1)
        nurse = staff.nurses[0]
        phone = seat(session, rt, nurse, rng)
        homes = [admit(session, rt, staff, nurse, phone.base, number, rng)
                 for number in range(patients)]
        start = rt.clock.now().replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        for number, home in enumerate(homes):
            visits.schedule(session, rt, as_caller(staff.admin), visits.VisitRequest(
                patient_id=home.id, nurse_id=nurse.id,
                scheduled_start=start + timedelta(days=number)))
        session.commit()
    response = app.test_client().post("/api/v1/auth/login", json={
        "org": ORG, "username": nurse.username, "password": PASSWORD,
        "device_id": phone.device_id})
    if response.status_code != 200 or "access_token" not in response.json:
        raise RuntimeError(f"login answered {response.status_code}: {response.json}")
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def free_port() -> int:
    """Return a TCP port on the loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(app: Flask, workers: int, log: Path) -> Iterator[int]:
    """Serve bench/served.py on the bench's database with `workers` workers; yield the port."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": app.config["DATABASE_URL"],
           "VIGIL_INSTANCE_PATH": app.instance_path, "VIGIL_LOG_FORMAT": "json",
           "VIGIL_WORKERS": str(workers), "VIGIL_BIND": f"127.0.0.1:{port}",
           "PROMETHEUS_MULTIPROC_DIR": str(log.parent / "metrics"),
           **{f"VIGIL_{name}": str(value) for name, value in CHEAP_ARGON2.items()}}
    with log.open("w") as lines:
        server = subprocess.Popen(  # noqa: S603 - our own server, no shell
            [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py",
             "--pythonpath", "bench", "served:app"], cwd=ROOT, env=env, stderr=lines)
        try:
            wait_until_up(server, port, log)
            yield port
        finally:
            server.terminate()
            server.wait(30)


def wait_until_up(server: subprocess.Popen, port: int, log: Path) -> None:
    """Return once every worker could answer /healthz; fail with the server's last lines."""
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"gunicorn did not answer /healthz:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def load_with_ab(port: int, path: str, headers: dict[str, str], seconds: float,
                 concurrency: int) -> tuple[int, float]:
    """Keep `concurrency` requests in flight for `seconds` with ab; return requests, seconds."""
    options = [item for name, value in headers.items() for item in ("-H", f"{name}: {value}")]
    answer = subprocess.run(  # noqa: S603 - ab, our own arguments
        [AB, "-q", "-c", str(concurrency), "-t", str(seconds), "-n", "10000000", *options,
         f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    figure = dict(re.findall(r"^(Complete requests|Time taken for tests|Failed requests|"
                             r"Non-2xx responses):\s+([0-9.]+)", answer, re.MULTILINE))
    if int(figure.get("Failed requests", 0)) or int(figure.get("Non-2xx responses", 0)):
        raise RuntimeError(f"{path} answered errors under load:\n{answer}")
    return int(figure["Complete requests"]), float(figure["Time taken for tests"])


def load_with_threads(port: int, path: str, headers: dict[str, str], seconds: float,
                      concurrency: int) -> tuple[int, float]:
    """Keep `concurrency` requests in flight from threads; return requests and seconds."""
    counts = [0] * concurrency
    began = time.perf_counter()
    stop = began + seconds

    def client(slot: int) -> None:
        while time.perf_counter() < stop:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status} under load")
            counts[slot] += 1

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - began


def measure(port: int, headers: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    """Load each path in turn, --rounds times, after a short warm-up; return rates per second."""
    load = load_with_ab if AB else load_with_threads
    for path in PATHS:
        load(port, path, headers, 1, args.concurrency)
    done: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for _ in range(args.rounds):
        for path in PATHS:
            requests, seconds = load(port, path, headers, args.seconds, args.concurrency)
            done[path][0] += requests
            done[path][1] += seconds
    return {path: requests / seconds for path, (requests, seconds) in done.items()}


def cpu_per_request(app: Flask, headers: dict[str, str], requests: int) -> dict[str, float]:
    """Return the microseconds of this process's CPU each path takes (test client, no network).

    Less noisy than the rates on a shared machine, and without the database server's share.
    """
    spent = {}
    for path in PATHS:
        client = (bare if path == BARE else app).test_client()
        where = "/" if path == BARE else path
        client.get(where, headers=headers)
        began = time.process_time()
        for _ in range(requests):
            client.get(where, headers=headers)
        spent[path] = (time.process_time() - began) / requests * 1e6
    return spent


def profile(app: Flask, headers: dict[str, str], requests: int) -> str:
    """Return the costliest functions of `requests` GET /api/v1/me in this process."""
    client = app.test_client()
    client.get("/api/v1/me", headers=headers)
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for _ in range(requests):
        client.get("/api/v1/me", headers=headers)
    profiler.disable()
    spent = (time.perf_counter() - began) / requests * 1e6
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
    return f"GET /api/v1/me in process, under cProfile: {spent:,.0f} µs each\n{out.getvalue()}"


@contextmanager
def json_lines_to_nowhere() -> Iterator[None]:
    """Have this process log each request as a JSON line, as gunicorn's workers do, unprinted."""
    root = logging.getLogger()
    kept = list(root.handlers)
    with open(os.devnull, "w") as nowhere:
        for handler in kept:
            root.removeHandler(handler)
        root.addHandler(logs.handler("json", nowhere))
        try:
            yield
        finally:
            root.handlers[:] = kept


def report(rates: dict[str, float], cpu: dict[str, float], args: argparse.Namespace,
           loader: str) -> None:
    """Print each path's rate and CPU, and their ratios to the bare endpoint's, with the target."""
    print(f"in process, this process's CPU per request over {args.requests} requests "
          f"(no network, no database server): " + ", ".join(
              f"{path} {spent:,.0f} µs ({cpu[BARE] / spent:.0%})" for path, spent in cpu.items()))
    print(f"load      {loader}, {args.concurrency} in flight, {args.rounds} rounds of "
          f"{args.seconds:g} s per path, gunicorn {args.workers} workers (sync), "
          f"load average now {os.getloadavg()[0]:.2f}")
    bare = rates[BARE]
    for path, rate in rates.items():
        if path == BARE:
            print(f"{'GET /bare (bare Flask, the ceiling)':<40}{rate:>9,.0f} req/s")
            continue
        verdict = "met" if rate / bare >= TARGET else "NOT met"
        print(f"{'GET ' + path:<40}{rate:>9,.0f} req/s  {rate / bare:>6.1%} of bare "
              f"(target ≥ {TARGET:.0%}: {verdict})")


def main() -> None:
    """Seed a fresh database, serve it with gunicorn, load it and print the figures."""
    args = parse_args()
    print(machine_description())
    with tempfile.TemporaryDirectory(prefix="vigil-requests-") as tmp, \
            migrated_app(CHEAP_ARGON2, instance=Path(tmp) / "instance") as app:
        print(f"database  {describe(app.extensions['vigil.db'].engine)}")
        headers = seed(app, args.patients)
        with json_lines_to_nowhere():
            cpu = cpu_per_request(app, headers, args.requests)
            if args.profile:
                print(profile(app, headers, args.requests))
        with gunicorn(app, args.workers, Path(tmp) / "gunicorn.log") as port:
            rates = measure(port, headers, args)
        report(rates, cpu, args, "ab" if AB else "http.client threads")


if __name__ == "__main__":
    main()
