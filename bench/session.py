"""Measure whole home sessions recorded through the API, with every signature checked.

Each session is what a phone sends after an offline visit: a pre-dose assessment, the dose
(with its custody entry), eight observations and the discharge, each signed by the nurse's
Ed25519 key. Runs on a temporary SQLite file, or on the PostgreSQL database in
BENCH_DATABASE_URL (its public schema is dropped first). Usage: python bench/session.py [--n 100]
"""

from __future__ import annotations

import argparse
import base64
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask

from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.auth.caller import Caller, FactorUse
from backend.custody import service as custody
from backend.custody.models import Kind
from backend.devices import service as devices
from backend.devices.signatures import canonical_bytes
from backend.patients import service as patients
from backend.plans import service as plans
from backend.products import service as products
from backend.visits import service as visits
from database import describe, migrated_app
from latency import machine, print_table, timed
from safeguards.policy import Policy

PASSWORD = "a bench password long enough"
# Cheap argon2 for the bench's own logins: the figure measured here is recording sessions.
FAST_ARGON2 = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024, "ARGON2_PARALLELISM": 1}
VIAL = {"name": "Ketamine 50 mg/mL 10 mL", "active_ingredient": "ketamine",
        "dea_schedule": "III", "form": "vial", "ug_per_unit": 50_000,
        "units_per_container": Decimal(10), "allowed_routes": ["IV"],
        "home_administration_allowed": True}


def parse_args() -> argparse.Namespace:
    """Read how many sessions to record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="sessions to record and time")
    args = parser.parse_args()
    if args.n < 2:
        parser.error("percentiles need at least 2 samples")
    return args


def _as(user) -> Caller:
    return Caller(user.id, user.organisation_id, user.role, None, None, None,
                  FactorUse.standing("bench"))


def seed(app: Flask, n: int, key: Ed25519PrivateKey) -> tuple[dict, list[str], str, str]:
    """Create a clinic with n patients, one visit each, and a stocked bag; return ids."""
    rt = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        org = accounts.create_organisation(session, rt, slug="bench", name="Bench Pharmacy",
                                           dea_registration="FV1234563", timezone="UTC")
        users = {role: accounts.create_user(
            session, rt, None, organisation_id=org.id, username=f"bench-{role.value}",
            display_name=role.value, role=role, password=PASSWORD) for role in Role}
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        device = devices.register(session, rt, _as(users[Role.NURSE]),
                                  public_key=base64.b64encode(public).decode(), label="phone",
                                  device_id=None)
        product = products.add(session, rt, _as(users[Role.PHARMACIST]), **VIAL)
        today = rt.clock.now().date()
        visit_ids = [_visit(session, rt, users, product.id, today, index) for index in range(n)]
        _stock(session, rt, users, product.id, n * 35_000)
        session.commit()
    return users, visit_ids, str(device.id), str(product.id)


def _stock(session, rt, users, product_id, quantity_ug: int) -> None:
    """Receive enough stock and dispense it to the nurse's bag."""
    pharmacist = _as(users[Role.PHARMACIST])
    common = {"product_id": product_id, "lot": "B1", "expiry": date(2031, 1, 31),
              "quantity_ug": quantity_ug, "occurred_at": rt.clock.now()}
    custody.record(session, rt, pharmacist, custody.EntryRequest(
        kind=Kind.RECEIVE, details={"supplier_name": "Bench Supply", "supplier_address": "1 Rd",
                                    "supplier_dea": "RW0000000", "invoice": "B"}, **common))
    custody.record(session, rt, pharmacist, custody.EntryRequest(
        kind=Kind.DISPENSE, nurse_id=users[Role.NURSE].id, details={"seal_id": "B"}, **common))


def _visit(session, rt, users, product_id, today: date, index: int) -> str:
    patient = patients.register(session, rt, _as(users[Role.ADMIN]), mrn=f"B-{index}",
                                name=f"Bench Patient {index}", date_of_birth=date(1980, 1, 1),
                                nurse_ids=[users[Role.NURSE].id], patient_id=None)
    plans.create(session, rt, _as(users[Role.PRESCRIBER]), patient.id, plans.PlanSpec(
        product_id=product_id, route="IV", dose_ug_per_kg=500, max_dose_ug=70_000,
        infusion_minutes=40, starts_on=today, phases=plans.default_phases(Policy(), today)))
    start = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    visit = visits.schedule(session, rt, _as(users[Role.ADMIN]), visits.VisitRequest(
        patient.id, users[Role.NURSE].id, start + timedelta(hours=4 * index)))
    return str(visit.id)


def signed(key: Ed25519PrivateKey, body: dict) -> dict:
    """Return `body` with an id and the phone's signature over its canonical bytes."""
    body = {"id": str(uuid.uuid4()), **body}
    return {**body, "signature": base64.b64encode(key.sign(canonical_bytes(body))).decode()}


def session_body(key: Ed25519PrivateKey, product_id: str) -> dict:
    """Return a whole signed session as a phone sends it."""
    at = "2030-01-01T10:00:00+00:00"
    vitals = {"systolic": 124, "diastolic": 80, "heart_rate": 72, "spo2": 98,
              "respiratory_rate": 14, "moaas": 5}
    return {
        "pre_dose": signed(key, {**vitals, "occurred_at": at, "decision": "go"}),
        "dose": signed(key, {"occurred_at": at, "product_id": product_id, "lot": "B1",
                             "expiry": "2031-01-31", "quantity_ug": 35_000, "route": "IV",
                             "infusion_started_at": "2030-01-01T10:05:00+00:00",
                             "infusion_ended_at": "2030-01-01T10:45:00+00:00"}),
        "observations": [signed(key, {**vitals, "occurred_at": at, "cadss_items": {
            "1": 1, "2": 0, "6": 1, "7": 0, "15": 0, "22": 0}}) for _ in range(8)],
        "discharge": signed(key, {**vitals, "occurred_at": at, "state": "baseline",
                                  "adverse_event_category": "none"}),
    }


def measure(app: Flask, n: int) -> dict[str, list[float]]:
    """Record n whole sessions, one per visit, and time each request."""
    key = Ed25519PrivateKey.generate()
    users, visit_ids, device_id, product_id = seed(app, n, key)
    client = app.test_client()
    token = client.post("/api/v1/auth/login", json={
        "org": "bench", "username": users[Role.NURSE].username, "password": PASSWORD,
        "device_id": device_id}).json["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    pending = iter(visit_ids)

    def record() -> None:
        response = client.post(f"/api/v1/visits/{next(pending)}/session", headers=headers,
                               json=session_body(key, product_id))
        if response.status_code != 201 or response.json["quarantined"]:
            raise RuntimeError(f"session answered {response.status_code}: {response.json}")

    return {"POST /visits/<id>/session (11 signed records)": timed(record, n)}


def main() -> None:
    """Run the benchmark on a fresh database and print the figures."""
    args = parse_args()
    with migrated_app(FAST_ARGON2) as app:
        results = measure(app, args.n)
        print(f"database  {describe(app.extensions['vigil.db'].engine)}")
        print(f"machine   {machine()}")
        print_table(results, {name: f"{11 * len(samples) / (sum(samples) / 1000):.0f} records/s"
                              for name, samples in results.items()})


if __name__ == "__main__":
    main()
