"""Time the records of issue 15 over a simulated organisation's whole period.

Seeds a small realistic organisation with the simulator (nurses, patients, days of sessions,
custody, losses and destructions), gives it a registrant address and its products NDCs, then
times each record as the API builds it (service, schema dump to JSON or CSV), sequentially:
a pharmacist for the dispensing log, the inventory, a signed inventory and Forms 106 and 41;
the compliance officer for a REMS monitoring record and the FHIR Bundles. Each call runs in its
own session, rolled back, so a signed inventory or an audit row does not pile up.
The database is a temporary SQLite file, or PostgreSQL in BENCH_DATABASE_URL (its name must
contain "bench"; its public schema is dropped first).
Usage: python bench/records.py [--nurses 7] [--patients 30] [--days 60] [--losses 5]
       [--repeat 10] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend import boundary, simulate
from backend.accounts import service as accounts
from backend.accounts.models import Role, User
from backend.administration import fhir
from backend.administration import reports as administration
from backend.administration.models import DoseRecord
from backend.administration.schemas import FhirBundleSchema, MonitoringRecordSchema
from backend.auth.caller import Caller, FactorUse
from backend.custody import forms, inventories, reports
from backend.custody import service as custody
from backend.custody.form_schemas import Forms41Schema, Forms106Schema
from backend.custody.models import Kind
from backend.custody.report_schemas import (
    DispensingLogSchema,
    InventorySchema,
    SignedInventorySchema,
    dispensing_csv,
)
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.visits.models import Visit
from database import describe, migrated_app
from latency import timed

ORG = "records-bench"
WITNESS_PASSWORD = "witness-records-bench"
ADDRESS = {"address_line": "100 Main Street", "city": "Springfield", "state": "IL",
           "postal_code": "62701", "phone": "2175550100"}
Record = Callable[[Session], int]


def parse_args() -> argparse.Namespace:
    """Read the size of the simulated organisation, the repeats and whether to profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nurses", type=int, default=7, help="simulated nurses (at least 7)")
    parser.add_argument("--patients", type=int, default=30, help="simulated patients")
    parser.add_argument("--days", type=int, default=60, help="simulated days (at least 7)")
    parser.add_argument("--losses", type=int, default=5,
                        help="vault losses and destructions added to the simulation")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per record")
    parser.add_argument("--profile", action="store_true",
                        help="profile the slowest record: its top 15 functions by time")
    args = parser.parse_args()
    if args.nurses < 7 or args.days < 7 or args.repeat < 2:
        parser.error("the simulator needs 7 nurses and 7 days; percentiles need 2 calls")
    return args


def seed(app: Flask, args: argparse.Namespace) -> float:
    """Simulate the organisation, give it its registrant details, NDCs, losses and
    destructions; return the seconds it took."""
    began = perf_counter()
    simulate.generate(app.extensions["vigil.db"].sessions, app.extensions["vigil.runtime"],
                      Path(app.instance_path),
                      simulate.Params(ORG, args.nurses, args.patients, args.days))
    with app.extensions["vigil.db"].sessions() as session:
        organisation = accounts.organisation_by_slug(session, ORG)
        for name, value in ADDRESS.items():
            setattr(organisation, name, value)
        for number, product in enumerate(session.scalars(select(DrugProduct).where(
                DrugProduct.organisation_id == organisation.id)), start=1):
            # The simulator's products have no NDC; the forms print one per line.
            product.ndc = product.ndc or f"{551500000 + number:09d}01"
        session.commit()
    with boundary.unit(app.extensions["vigil.db"].sessions,
                       app.extensions["vigil.runtime"]) as session:
        add_losses_and_destructions(session, app.extensions["vigil.runtime"], args.losses)
    return perf_counter() - began


def add_losses_and_destructions(session: Session, rt: Runtime, count: int) -> None:
    """Have the pharmacist report `count` vault losses and witness `count` destructions."""
    # The simulator moves no stock out of the vault but to bags; Forms 106 and 41 need some.
    pharmacist = caller(session, Role.PHARMACIST)
    witnesses = [session.get(User, caller(session, role).user_id)
                 for role in (Role.ADMIN, Role.COMPLIANCE)]
    for witness in witnesses:
        witness.password_hash = rt.passwords.hash(WITNESS_PASSWORD)
    stock = [one for one in custody.balances(session, pharmacist, "vault") if one.quantity_ug]
    for number in range(count):
        lot = stock[number % len(stock)]
        common = {"product_id": lot.product_id, "lot": lot.lot, "expiry": lot.expiry,
                  "quantity_ug": 1_000, "holder": "vault",
                  "occurred_at": rt.clock.now() - timedelta(days=number + 1)}
        custody.record(session, rt, pharmacist, custody.EntryRequest(
            Kind.LOSS, **common, details={"circumstances": "Vial missing at the count.",
                                          "loss_type": "other"}))
        custody.record(session, rt, pharmacist, custody.EntryRequest(
            Kind.DESTROY, **common, details={"method": "Rendered non-retrievable on site"},
            witnesses=[custody.Witness(one.id, password=WITNESS_PASSWORD) for one in witnesses]))


def caller(session: Session, role: Role) -> Caller:
    """Return the simulated organisation's first user of `role`, with a standing factor."""
    organisation = accounts.organisation_by_slug(session, ORG)
    user = session.scalars(select(User).where(
        User.organisation_id == organisation.id, User.role == role).order_by(User.username)).first()
    return Caller(user.id, user.organisation_id, user.role, None, None, None,
                  FactorUse.standing("bench"))


def busiest(session: Session) -> tuple[Any, Any]:
    """Return a dosed visit of the patient with the most doses recorded, and that patient."""
    patient_id = session.scalars(select(Visit.patient_id).join(
        DoseRecord, DoseRecord.visit_id == Visit.id).group_by(Visit.patient_id)
        .order_by(func.count().desc(), Visit.patient_id)).first()
    visit_id = session.scalars(select(DoseRecord.visit_id).join(
        Visit, DoseRecord.visit_id == Visit.id).where(Visit.patient_id == patient_id)
        .order_by(DoseRecord.visit_id)).first()
    return visit_id, patient_id


def records(app: Flask, session: Session, since: datetime, until: datetime) -> dict[str, Record]:
    """Build each record to time: a function of a session returning its rows or resources."""
    rt = app.extensions["vigil.runtime"]
    pharmacist, compliance = caller(session, Role.PHARMACIST), caller(session, Role.COMPLIANCE)
    visit_id, patient_id = busiest(session)

    def dispensing_json(s: Session) -> int:
        log = reports.dispensing_log(s, rt, pharmacist, since, until)
        json.dumps(DispensingLogSchema().dump(log))
        return len(log.events)

    def dispensing_text(s: Session) -> int:
        log = reports.dispensing_log(s, rt, pharmacist, since, until)
        dispensing_csv(log)
        return len(log.events)

    def inventory(s: Session) -> int:
        stock = reports.inventory(s, rt, pharmacist, None, "close")
        json.dumps(InventorySchema().dump(stock))
        return len(stock.lines)

    def signed(s: Session) -> int:
        record = inventories.take(s, rt, pharmacist, "other", None, "close")
        found = inventories.get(s, pharmacist, record.id)
        json.dumps(SignedInventorySchema().dump(found))
        return len(record.lines)

    def forms_106(s: Session) -> int:
        found = forms.forms_106(s, rt, pharmacist, since, until)
        json.dumps(Forms106Schema().dump(found))
        return len(found.forms)

    def forms_41(s: Session) -> int:
        found = forms.forms_41(s, rt, pharmacist, since, until)
        json.dumps(Forms41Schema().dump(found))
        return len(found.forms)

    def monitoring_json(s: Session) -> int:
        json.dumps(MonitoringRecordSchema().dump(
            administration.monitoring_record(s, rt, compliance, visit_id)))
        return 1

    def monitoring_text(s: Session) -> int:
        administration.monitoring_csv([administration.monitoring_record(
            s, rt, compliance, visit_id)])
        return 1

    def session_bundle(s: Session) -> int:
        bundle = fhir.session_bundle(s, rt, compliance, visit_id)
        json.dumps(FhirBundleSchema().dump(bundle))
        return len(bundle["entry"])

    def patient_bundle(s: Session) -> int:
        bundle = fhir.patient_bundle(s, rt, compliance, patient_id)
        json.dumps(FhirBundleSchema().dump(bundle))
        return len(bundle["entry"])

    return {"dispensing log JSON (events)": dispensing_json,
            "dispensing log CSV (events)": dispensing_text,
            "live inventory JSON (lines)": inventory,
            "signed inventory take (lines)": signed,
            "Form 106 list JSON (forms)": forms_106,
            "Form 41 list JSON (forms)": forms_41,
            "REMS monitoring JSON (record)": monitoring_json,
            "REMS monitoring CSV (record)": monitoring_text,
            "session FHIR Bundle (resources)": session_bundle,
            "patient FHIR Bundle (resources)": patient_bundle}


def rolled_back(app: Flask, record: Record) -> Callable[[], int]:
    """Return `record` run in its own session, rolled back after."""
    def run() -> int:
        with app.extensions["vigil.db"].sessions() as session:
            try:
                return record(session)
            finally:
                session.rollback()
    return run


def print_results(rows: dict[str, int], results: dict[str, list[float]]) -> None:
    """Print one line per record: rows or resources, p50 and p95."""
    width = max(len(name) for name in results) + 2
    print(f"{'record':<{width}}{'rows':>7}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}")
    for name, samples in results.items():
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        print(f"{name:<{width}}{rows[name]:>7}{len(samples):>5}{cuts[49]:>10.1f}{cuts[94]:>10.1f}")


def profile(run: Callable[[], int]) -> str:
    """Return the top 15 functions by cumulative time of one call of `run`."""
    profiler = cProfile.Profile()
    profiler.runcall(run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(15)
    return out.getvalue()


def main() -> None:
    """Seed the organisation, time each record and print the table."""
    args = parse_args()
    with migrated_app() as app:
        seconds = seed(app, args)
        with app.extensions["vigil.db"].sessions() as session, app.app_context():
            since = datetime.combine(simulate.START, time(), tzinfo=UTC)
            until = datetime.now(UTC)
            runs = {name: rolled_back(app, record)
                    for name, record in records(app, session, since, until).items()}
        with app.app_context():
            rows = {name: run() for name, run in runs.items()}  # warm-up, and the counts
            results = {name: timed(run, args.repeat) for name, run in runs.items()}
            print(f"{os.cpu_count()} cores, load average "
                  + " ".join(f"{load:.2f}" for load in os.getloadavg())
                  + f"; {describe(app.extensions['vigil.db'].engine)}; seeded {args.nurses} "
                  f"nurses, {args.patients} patients, {args.days} days in {seconds:.0f} s; "
                  f"services and schema dumps, sequential")
            print_results(rows, results)
            if args.profile:
                slowest = max(results, key=lambda name: statistics.median(results[name]))
                print(f"\nprofile of {slowest}:\n{profile(runs[slowest])}")


if __name__ == "__main__":
    main()
