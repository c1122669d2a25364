"""Measure argon2id hashing, login and authenticated-request latency with the real settings.

Runs on a temporary SQLite file, or on the PostgreSQL database in BENCH_DATABASE_URL, whose
public schema is dropped and recreated first. Usage: python bench/auth.py [--n 50] [--requests 500]
"""

from __future__ import annotations

import argparse

from flask import Flask
from flask.testing import FlaskClient

from backend.accounts import service as accounts
from backend.accounts.models import Role
from database import describe, migrated_app
from latency import machine, print_table, timed

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


def add_nurse(app: Flask) -> None:
    """Create the bench organisation and its nurse, hashed with the default argon2 settings."""
    runtime = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        org = accounts.create_organisation(session, runtime, slug=ORG, name="Bench Pharmacy",
                                           dea_registration="FV1234563", timezone="UTC")
        accounts.create_user(session, runtime, None, organisation_id=org.id, username=USERNAME,
                             display_name="Bench Nurse", role=Role.NURSE, password=PASSWORD)
        session.commit()


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


def report(app: Flask, results: dict[str, list[float]]) -> None:
    """Print the setting and one line per measurement: p50, p95 and sequential rate."""
    passwords = app.extensions["vigil.runtime"].passwords
    print(f"database  {describe(app.extensions['vigil.db'].engine)}")
    print(f"argon2id  time_cost={passwords.time_cost} memory_cost={passwords.memory_cost} KiB "
          f"parallelism={passwords.parallelism}")
    print(f"machine   {machine()}")
    print_table(results)


def main() -> None:
    """Run the benchmark on a fresh database and print the figures."""
    args = parse_args()
    with migrated_app() as app:
        add_nurse(app)
        report(app, measure(app, args))


if __name__ == "__main__":
    main()
