"""Measure argon2id hashing, login and authenticated-request latency with the real settings.

Runs on a temporary SQLite file, or on the PostgreSQL database in BENCH_DATABASE_URL, whose
public schema is dropped and recreated first. Usage: python bench/auth.py [--n 50] [--requests 500]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from backend import create_app, schema
from backend.accounts import service as accounts
from backend.accounts.models import Role

ORG = "bench"
USERNAME = "nurse.bench"
PASSWORD = "a bench password long enough"


def parse_args() -> argparse.Namespace:
    """Read how many times to repeat each measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50,
                        help="hashes and logins to time (each costs one argon2id run)")
    parser.add_argument("--requests", type=int, default=500,
                        help="authenticated GET /api/v1/me requests to time")
    args = parser.parse_args()
    if min(args.n, args.requests) < 2:
        parser.error("percentiles need at least 2 samples")
    return args


def fresh_postgres(url: str) -> str:
    """Create the benchmark database if missing and empty its public schema; return the URL."""
    target = make_url(url)
    if target.get_backend_name() != "postgresql" or "bench" not in (target.database or ""):
        # The schema is dropped: refuse anything that is not plainly a benchmark database.
        raise SystemExit(f"BENCH_DATABASE_URL must name a PostgreSQL *bench* database: {url}")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                           {"name": target.database}):
            quoted = conn.dialect.identifier_preparer.quote(target.database)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
    admin.dispose()
    engine = create_engine(target)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def build_app(database_url: str, instance: Path) -> Flask:
    """Build a migrated app with development keys in `instance` and default argon2 settings."""
    app = create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": instance,
                      "VIGIL_ENV": "development"})
    schema.upgrade(app.extensions["vigil.db"].engine)
    runtime = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        org = accounts.create_organisation(session, runtime, slug=ORG, name="Bench Pharmacy",
                                           dea_registration="FV1234563", timezone="UTC")
        accounts.create_user(session, runtime, None, organisation_id=org.id, username=USERNAME,
                             display_name="Bench Nurse", role=Role.NURSE, password=PASSWORD)
        session.commit()
    return app


def timed(action: Callable[[], object], n: int) -> list[float]:
    """Return the milliseconds each of `n` sequential calls of `action` took."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def login(client: FlaskClient) -> str:
    """Sign the bench nurse in and return the access token."""
    response = client.post("/api/v1/auth/login",
                           json={"org": ORG, "username": USERNAME, "password": PASSWORD})
    if response.status_code != 200:
        raise RuntimeError(f"login answered {response.status_code}: {response.json}")
    return response.json["access_token"]


def fetch_me(client: FlaskClient, headers: dict[str, str]) -> None:
    """Ask for the caller's own account, as every app screen does."""
    response = client.get("/api/v1/me", headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"/me answered {response.status_code}: {response.json}")


def measure(app: Flask, args: argparse.Namespace) -> dict[str, list[float]]:
    """Time hashing, logins and /me requests, after one untimed warm-up call of each."""
    passwords = app.extensions["vigil.runtime"].passwords
    client = app.test_client()
    headers = {"Authorization": f"Bearer {login(client)}"}
    fetch_me(client, headers)
    passwords.hash(PASSWORD)
    return {
        "argon2id hash": timed(lambda: passwords.hash(PASSWORD), args.n),
        "POST /api/v1/auth/login": timed(lambda: login(client), args.n),
        "GET /api/v1/me (bearer)": timed(lambda: fetch_me(client, headers), args.requests),
    }


def describe(engine: Engine) -> str:
    """Name the database and its server version."""
    with engine.connect() as conn:
        version = ".".join(str(part) for part in conn.dialect.server_version_info or ())
    return f"{engine.dialect.name}+{engine.dialect.driver} {version}"


def report(app: Flask, results: dict[str, list[float]]) -> None:
    """Print the setting and one line per measurement: p50, p95 and sequential rate."""
    passwords = app.extensions["vigil.runtime"].passwords
    print(f"database  {describe(app.extensions['vigil.db'].engine)}")
    print(f"argon2id  time_cost={passwords.time_cost} memory_cost={passwords.memory_cost} KiB "
          f"parallelism={passwords.parallelism}")
    print(f"machine   {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          "one client, sequential, Flask test client (no network)")
    print(f"{'measure':<26}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'per s':>9}")
    for name, samples in results.items():
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        rate = len(samples) / (sum(samples) / 1000)
        print(f"{name:<26}{len(samples):>5}{cuts[49]:>10.1f}{cuts[94]:>10.1f}{rate:>9.1f}")


def main() -> None:
    """Run the benchmark on a fresh database and print the figures."""
    args = parse_args()
    # Before create_app's own basicConfig, so migration chatter stays out of the figures.
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        postgres = os.environ.get("BENCH_DATABASE_URL")
        url = fresh_postgres(postgres) if postgres else f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        app = build_app(url, Path(tmp) / "instance")
        try:
            report(app, measure(app, args))
        finally:
            app.extensions["vigil.db"].engine.dispose()


if __name__ == "__main__":
    main()
