"""Measure custody-ledger appends per second and how fast `verify` walks a long chain.

Appends: writer threads call `ledger.append` (which signs each entry with the server's key),
each append its own committed transaction, first one writer then 8 into one organisation's
chain, then 8 spread over 20 organisations. Their ceiling, on PostgreSQL, is the same 8 writers
chaining hashed, signed rows from bare psycopg with the same two statements and a commit under
the lock.
Verification: a chain of 1,000,000 entries is generated in Python with correct hashes and server
signatures, and a checkpoint signed every 50,000 entries as the minute job would, and
bulk-inserted in batches (not through `append`); `verify.verify` walks it in one process and in
one per core, then incrementally from the last verified checkpoint; a shorter chain whose every
entry a phone signed is walked on every core. The ceilings are measured in the same run: the
same SELECT only read, the same canonical bytes only SHA-256-chained, one Ed25519 verify.

Runs on the PostgreSQL database in BENCH_DATABASE_URL (its name must contain "bench"), whose
public schema is dropped and recreated first; without it, on a temporary SQLite file, where
writers queue on one file lock. Usage: python bench/ledger.py [--appends 2000] [--writers 8]
[--organisations 20] [--entries 1000000] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import io
import os
import platform
import pstats
import resource
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from sqlalchemy import insert, text

from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.auth.caller import Caller
from backend.custody.chain import (
    GENESIS,
    HASHED_FIELDS,
    canonical_entry,
    entry_hash,
    entry_signed_bytes,
    sign_checkpoint,
    sign_entry,
    signed_payload,
)
from backend.custody.ledger import VAULT, Attestation, Movement, append, bag
from backend.custody.models import (
    CustodyBalance,
    CustodyCheckpoint,
    CustodyEntry,
    CustodyHead,
    Kind,
)
from backend.custody.verify import POSTGRESQL_LINES, record_verified, verify
from backend.devices.models import Device
from backend.devices.signatures import canonical_bytes, verify_with_key
from backend.keys import KeyRing
from backend.phi.cipher import PhiCipher
from backend.phi.sealed import sealed_values
from backend.products import service as products
from database import describe, migrated_app
from machine import describe as describe_machine

# The seeded logins are never used: this benchmark measures the ledger, not argon2id.
CHEAP_ARGON2 = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024, "ARGON2_PARALLELISM": 1}
TARGET_APPENDS, TARGET_VERIFIED, TARGET_DEVICE_SIGNED = 1_500, 300_000, 20_000
EXPIRY = date(2028, 1, 31)
BATCH = 10_000
# Phone-signed entries whose signature check, and chain entries whose reading, are timed
# apart from `verify`: enough for a steady rate.
SIGNED_SAMPLE, READ_SAMPLE = 2_000, 100_000
# The checkpoint job signs the head every minute; a busy chain moves this far between two.
CHECKPOINT_EVERY = 50_000
# Entries appended past the last checkpoint before the incremental walk, as in a night.
TONIGHT = 1_000
WORKERS = os.cpu_count() or 1
# Stock each organisation's vault holds before the timed appends draw on it.
OPENING_STOCK = 1_000_000_000
SUPPLIER = {"supplier_name": "Bench Wholesale", "supplier_address": "1 Depot Rd",
            "supplier_dea": "RW0000000", "invoice": "INV-BENCH"}


@dataclass(frozen=True)
class Pharmacy:
    """An organisation's id with the pharmacist, nurse and product its entries name."""

    organisation_id: uuid.UUID
    pharmacist_id: uuid.UUID
    nurse_id: uuid.UUID
    product_id: uuid.UUID


@dataclass(frozen=True)
class Load:
    """The wall time of a concurrent run and the milliseconds each append took."""

    seconds: float
    samples: list[float]


def parse_args() -> argparse.Namespace:
    """Read the sizes of the runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2_000,
                        help="appends timed in each concurrent run")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer threads")
    parser.add_argument("--organisations", type=int, default=20,
                        help="organisations the spread run writes to")
    parser.add_argument("--entries", type=int, default=1_000_000,
                        help="length of the chain `verify` walks")
    parser.add_argument("--device-signed", type=int, default=100_000,
                        help="length of the chain whose every entry a phone signed")
    parser.add_argument("--profile", action="store_true",
                        help="also profile `verify` and print its costliest functions")
    args = parser.parse_args()
    if min(args.appends, args.writers, args.organisations, args.entries) < 2:
        parser.error("every size must be at least 2")
    return args


def add_pharmacy(app: Flask, number: int) -> Pharmacy:
    """Create an organisation with a pharmacist, a nurse and a product."""
    rt = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        org = accounts.create_organisation(
            session, rt, slug=f"bench-{number:02d}", name=f"Bench Pharmacy {number}",
            dea_registration="FV1234563", timezone="UTC")
        pharmacist, nurse = (accounts.create_user(
            session, rt, None, organisation_id=org.id, username=role.value,
            display_name=role.value, role=role, password="a bench password long enough")
            for role in (Role.PHARMACIST, Role.NURSE))
        product = products.add(
            session, rt, Caller(pharmacist.id, org.id, Role.PHARMACIST, None, None, None),
            name="Ketamine HCl 50 mg/mL, 10 mL vial", active_ingredient="ketamine",
            dea_schedule="III", form="vial", ug_per_unit=50_000, units_per_container=Decimal(10),
            allowed_routes=["IV", "IM"], home_administration_allowed=True)
        session.commit()
    return Pharmacy(org.id, pharmacist.id, nurse.id, product.id)


def stock(app: Flask, pharmacy: Pharmacy) -> Pharmacy:
    """Receive enough into the pharmacy's vault for every timed dispense; return it."""
    with app.extensions["vigil.db"].sessions() as session:
        rt = app.extensions["vigil.runtime"]
        append(session, pharmacy.organisation_id, receipt(pharmacy, OPENING_STOCK),
               Attestation(pharmacy.pharmacist_id), rt.clock.now(), keys=rt.keys)
        session.commit()
    return pharmacy


def receipt(pharmacy: Pharmacy, quantity_ug: int) -> Movement:
    """Return a receipt from the supplier into the vault."""
    return Movement(id=uuid.uuid4(), kind=Kind.RECEIVE, product_id=pharmacy.product_id,
                    lot="L1", expiry=EXPIRY, quantity_ug=quantity_ug, from_holder="supplier",
                    to_holder=VAULT, occurred_at=datetime.now(UTC), details=SUPPLIER)


def movement(pharmacy: Pharmacy, number: int) -> Movement:
    """Return the `number`-th timed movement: receipts alternate with dispenses to the nurse."""
    if number % 2 == 0:
        return receipt(pharmacy, 2)
    return Movement(id=uuid.uuid4(), kind=Kind.DISPENSE, product_id=pharmacy.product_id,
                    lot="L1", expiry=EXPIRY, quantity_ug=1, from_holder=VAULT,
                    to_holder=bag(pharmacy.nurse_id), occurred_at=datetime.now(UTC),
                    details={"seal_id": f"S-{number}"})


def append_load(app: Flask, pharmacies: list[Pharmacy], appends: int, writers: int) -> Load:
    """Append `appends` movements from `writers` threads, the n-th to pharmacy n mod count."""
    sessions, rt = app.extensions["vigil.db"].sessions, app.extensions["vigil.runtime"]
    start = threading.Barrier(writers + 1)

    def writer(first: int) -> list[float]:
        samples = []
        with sessions() as session:
            start.wait()
            for number in range(first, appends, writers):
                pharmacy = pharmacies[number % len(pharmacies)]
                began = time.perf_counter()
                append(session, pharmacy.organisation_id, movement(pharmacy, number),
                       Attestation(pharmacy.pharmacist_id), rt.clock.now(), keys=rt.keys)
                session.commit()
                samples.append((time.perf_counter() - began) * 1000)
        return samples

    with ThreadPoolExecutor(writers) as pool:
        running = [pool.submit(writer, first) for first in range(writers)]
        start.wait()
        began = time.perf_counter()
        samples = [sample for future in running for sample in future.result()]
    return Load(time.perf_counter() - began, samples)


def measure_appends(app: Flask, args: argparse.Namespace) -> dict[str, Load]:
    """Time one writer, then `writers` on one organisation, then on `organisations`."""
    pharmacies = [stock(app, add_pharmacy(app, number)) for number in range(args.organisations)]
    append_load(app, pharmacies[:1], 50, 1)  # Untimed: warms the pool and the caches.
    loads = {
        "1 organisation, 1 writer": append_load(app, pharmacies[:1], args.appends // 4, 1),
        f"1 organisation, {args.writers} writers": append_load(app, pharmacies[:1], args.appends,
                                                              args.writers),
        f"{args.organisations} organisations, {args.writers} writers": append_load(
            app, pharmacies, args.appends, args.writers),
    }
    if app.extensions["vigil.db"].engine.dialect.name == "postgresql":
        loads[f"ceiling: raw psycopg, 1 chain, {args.writers} writers"] = raw_chain_load(
            app, args.appends, args.writers)
    return loads


RAW_TABLES = """
CREATE TABLE bench_raw_head (id integer PRIMARY KEY, seq integer NOT NULL,
                             head_hash varchar(64) NOT NULL);
CREATE TABLE bench_raw_entry (seq integer PRIMARY KEY, body text NOT NULL,
                              prev_hash varchar(64) NOT NULL, entry_hash varchar(64) NOT NULL,
                              signature varchar(100) NOT NULL);
INSERT INTO bench_raw_head VALUES (1, 0, repeat('0', 64));
"""
RAW_LOCK = "SELECT seq, head_hash FROM bench_raw_head WHERE id = 1 FOR NO KEY UPDATE"
RAW_CHAIN = ("WITH entry AS (INSERT INTO bench_raw_entry VALUES (%s, %s, %s, %s, %s) "
             "RETURNING seq, entry_hash) UPDATE bench_raw_head SET seq = entry.seq, "
             "head_hash = entry.entry_hash FROM entry WHERE id = 1")


def raw_chain_load(app: Flask, appends: int, writers: int) -> Load:
    """Time the same chain with no ORM: lock, hash and sign, insert, commit, from bare psycopg.

    Two statements and a commit under the lock, as `append` on PostgreSQL: what the database
    and driver allow an append of this shape on this machine.
    """
    engine, key = app.extensions["vigil.db"].engine, app.extensions["vigil.runtime"].keys
    with engine.begin() as conn:
        conn.exec_driver_sql(RAW_TABLES)
    start = threading.Barrier(writers + 1)

    def writer(first: int) -> list[float]:
        samples, raw = [], engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()
            start.wait()
            for number in range(first, appends, writers):
                body = f'{{"writer":{first},"number":{number}}}'
                began = time.perf_counter()
                seq, prev = cursor.execute(RAW_LOCK).fetchone()
                digest = entry_hash(prev, {name: body for name in HASHED_FIELDS})
                cursor.execute(RAW_CHAIN, (seq + 1, body, prev, digest,
                                           sign_entry(key.signing_key, digest)))
                raw.driver_connection.commit()
                samples.append((time.perf_counter() - began) * 1000)
        finally:
            raw.close()
        return samples

    with ThreadPoolExecutor(writers) as pool:
        running = [pool.submit(writer, first) for first in range(writers)]
        start.wait()
        began = time.perf_counter()
        samples = [sample for future in running for sample in future.result()]
    return Load(time.perf_counter() - began, samples)


def chain_rows(pharmacy: Pharmacy, entries: int,
               phone: Phone | None = None) -> Iterator[list[dict]]:
    """Yield the chain's rows in batches, unhashed: receipts, dispenses, returns, recounts.

    With a `phone`, every entry carries its signature, as a nurse's entries do.
    """
    nurse_bag, start = bag(pharmacy.nurse_id), datetime(2026, 1, 1, tzinfo=UTC)
    cycle = ((Kind.RECEIVE, "supplier", VAULT, 1_000, SUPPLIER),
             (Kind.DISPENSE, VAULT, nurse_bag, 500, {"seal_id": "S-1"}),
             (Kind.RETURN, nurse_bag, VAULT, 200, {"seal_id": "S-1"}),
             (Kind.ADJUST, VAULT, "count", 100, {"reason": "recount", "direction": "down"}))
    for first in range(1, entries + 1, BATCH):
        batch = []
        for seq in range(first, min(first + BATCH, entries + 1)):
            kind, source, target, quantity, details = cycle[(seq - 1) % len(cycle)]
            at = start + timedelta(seconds=seq)
            row = {
                "id": uuid.uuid4(), "organisation_id": pharmacy.organisation_id, "seq": seq,
                "kind": kind.value, "product_id": pharmacy.product_id, "lot": "L1",
                "expiry": EXPIRY, "quantity_ug": quantity, "from_holder": source,
                "to_holder": target, "actor_id": pharmacy.pharmacist_id, "device_id": None,
                "device_signature": None, "visit_id": None, "corrects_id": None,
                "details": details, "confirmations": [], "occurred_at": at, "received_at": at,
                "signed_record": None}
            if phone is not None:
                row["device_id"] = phone.device_id
                row["device_signature"] = base64.b64encode(phone.key.sign(
                    canonical_bytes(signed_payload(row)))).decode()
            batch.append(row)
        yield batch


@dataclass(frozen=True)
class Phone:
    """A nurse's registered phone and its private key."""

    device_id: uuid.UUID
    key: Ed25519PrivateKey


def add_phone(app: Flask, pharmacy: Pharmacy) -> Phone:
    """Register a phone for the pharmacy's nurse."""
    key = Ed25519PrivateKey.generate()
    device = Device(organisation_id=pharmacy.organisation_id, user_id=pharmacy.nurse_id,
                    label="bench phone", registered_at=datetime.now(UTC),
                    public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    with app.extensions["vigil.db"].sessions() as session:
        session.add(device)
        session.commit()
        return Phone(device.id, key)


def bulk_chain(app: Flask, pharmacy: Pharmacy, entries: int, phone: Phone | None = None,
               bodies: list[bytes] | None = None) -> dict[str, float]:
    """Insert a hashed, signed chain with its head, balances and checkpoints.

    Return seconds per part; keep the first `READ_SAMPLE` canonical bytes in `bodies`.
    """
    keys: KeyRing = app.extensions["vigil.runtime"].keys
    box = PhiCipher.from_keyring(keys)
    seconds: Counter[str] = Counter()
    held: Counter[str] = Counter()
    digest = GENESIS
    with app.extensions["vigil.db"].engine.begin() as conn:
        for batch in chain_rows(pharmacy, entries, phone):
            began = time.perf_counter()
            for row in batch:
                row["prev_hash"], digest = digest, entry_hash(digest, row)
                row["entry_hash"] = digest
            seconds["hash"] += time.perf_counter() - began
            if bodies is not None and len(bodies) < READ_SAMPLE:
                bodies.extend(canonical_entry(row) for row in batch)
            began = time.perf_counter()
            for row in batch:
                row["server_key_id"] = keys.signing_key_id
                row["server_signature"] = sign_entry(keys.signing_key, row["entry_hash"])
            seconds["sign"] += time.perf_counter() - began
            for row in batch:
                held[row["from_holder"]] -= row["quantity_ug"]
                held[row["to_holder"]] += row["quantity_ug"]
            checkpoints = [row for row in batch
                           if row["seq"] % CHECKPOINT_EVERY == 0 or row["seq"] == entries]
            began = time.perf_counter()
            # The details as the app stores them: encrypted, after the hash covered them.
            batch = [sealed_values(box, CustodyEntry, row) for row in batch]
            seconds["encrypt"] += time.perf_counter() - began
            began = time.perf_counter()
            conn.execute(insert(CustodyEntry.__table__), batch)
            seconds["insert"] += time.perf_counter() - began
            if checkpoints:
                conn.execute(insert(CustodyCheckpoint.__table__), [
                    checkpoint(keys, pharmacy, row["seq"], row["entry_hash"])
                    for row in checkpoints])
        conn.execute(insert(CustodyHead.__table__).values(
            organisation_id=pharmacy.organisation_id, seq=entries, head_hash=digest))
        conn.execute(insert(CustodyBalance.__table__), [
            {"organisation_id": pharmacy.organisation_id, "holder": holder,
             "product_id": pharmacy.product_id, "lot": "L1", "expiry": EXPIRY,
             "quantity_ug": quantity}
            for holder, quantity in held.items() if holder in (VAULT, bag(pharmacy.nurse_id))])
    with app.extensions["vigil.db"].engine.connect() as conn:
        # What autovacuum would do after a load this size, before anyone verifies.
        conn.execute(text("ANALYZE custody_entry"))
        conn.commit()
    return seconds


def checkpoint(keys: KeyRing, pharmacy: Pharmacy, seq: int, head_hash: str) -> dict:
    """Return a checkpoint row over the head at `seq`, signed as the minute job signs it."""
    now = datetime.now(UTC)
    return {"id": uuid.uuid4(), "organisation_id": pharmacy.organisation_id, "seq": seq,
            "head_hash": head_hash, "signed_at": now, "key_id": keys.signing_key_id,
            "public_key": base64.b64encode(keys.signing_public_key()).decode(),
            "signature": sign_checkpoint(keys.signing_key, pharmacy.organisation_id, seq,
                                         head_hash, now)}


def extend_chain(app: Flask, pharmacy: Pharmacy, entries: int) -> None:
    """Append `entries` through `append`, past the last checkpoint, as a day's would be."""
    rt = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        for number in range(entries):
            append(session, pharmacy.organisation_id, receipt(pharmacy, number + 1),
                   Attestation(pharmacy.pharmacist_id), rt.clock.now(), keys=rt.keys)
        session.commit()


def read_only(app: Flask, pharmacy: Pharmacy, count: int) -> float:
    """Return the seconds it takes only to read `count` entries with `verify`'s own SELECT."""
    began = time.perf_counter()
    with app.extensions["vigil.db"].sessions() as session, session.execute(
            POSTGRESQL_LINES, {"organisation_id": pharmacy.organisation_id, "first": 1,
                               "last": count},
            execution_options={"yield_per": BATCH}) as result:
        for _ in result:
            pass
    return time.perf_counter() - began


def sha_chaining(bodies: list[bytes]) -> float:
    """Return the seconds raw SHA-256 chaining over `bodies` takes, nothing else."""
    began = time.perf_counter()
    digest = bytes(32)
    for body in bodies:
        digest = hashlib.sha256(digest + body).digest()
    return time.perf_counter() - began


def signature_checks(count: int) -> float:
    """Return the seconds `verify` spends checking `count` phone-signed entries' signatures."""
    phone = Ed25519PrivateKey.generate()
    public_key = phone.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    entries = []
    for number in range(count):
        payload = signed_payload({
            "id": uuid.uuid4(), "kind": Kind.ADMINISTER.value, "product_id": uuid.uuid4(),
            "lot": "L1", "expiry": EXPIRY, "quantity_ug": 35_000 + number,
            "from_holder": f"bag:{uuid.uuid4()}", "to_holder": f"patient:{uuid.uuid4()}",
            "visit_id": uuid.uuid4(), "details": {}, "occurred_at": datetime.now(UTC)})
        entries.append((payload, base64.b64encode(phone.sign(canonical_bytes(payload))).decode()))
    began = time.perf_counter()
    for payload, signature in entries:
        verify_with_key(public_key, payload, signature)
    return time.perf_counter() - began


def server_signature_checks(app: Flask, count: int) -> float:
    """Return the seconds one core takes for `count` bare Ed25519 verifies (the ceiling)."""
    keys: KeyRing = app.extensions["vigil.runtime"].keys
    public_key = keys.signing_key.public_key()
    signed = [(digest, base64.b64decode(sign_entry(keys.signing_key, digest)))
              for digest in (uuid.uuid4().hex * 2 for _ in range(count))]
    began = time.perf_counter()
    for digest, signature in signed:
        public_key.verify(signature, entry_signed_bytes(digest))
    return time.perf_counter() - began


def cpu_seconds() -> float:
    """Return the CPU seconds this process and its finished workers have used."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed_verify(app: Flask, pharmacy: Pharmacy, export_dir: Path, workers: int = 1,
                 incremental: bool = False, profile: cProfile.Profile | None = None) -> float:
    """Verify the pharmacy's chain, which must pass, and record it; return the seconds.

    Also print the CPU seconds Python spent (the database server's are not counted): on a
    machine other work shares, what the walk itself costs.
    """
    keys = app.extensions["vigil.runtime"].keys.verifying_keys()
    with app.extensions["vigil.db"].sessions() as session:
        cpu = cpu_seconds()
        began = time.perf_counter()
        if profile:
            profile.enable()
        report = verify(session, pharmacy.organisation_id, keys, export_dir, workers=workers,
                        incremental=incremental)
        if profile:
            profile.disable()
        seconds = time.perf_counter() - began
        cpu = cpu_seconds() - cpu
        record_verified(session, datetime.now(UTC), report)
        session.commit()
    if not report.ok:
        raise RuntimeError(f"the generated chain does not verify: {report.problem}")
    walked = report.entries - report.since
    print(f"  ({walked:,} entries in {workers} process(es): {seconds:.2f} s, Python CPU "
          f"{cpu:.2f} s, {walked / cpu:,.0f} entries per CPU second)")
    return seconds


def print_appends(loads: dict[str, Load]) -> None:
    """Print one line per append run: throughput and per-append latency."""
    width = max(len(name) for name in loads) + 2
    print(f"{'append (commit each)':<{width}}{'n':>6}{'s':>8}{'per s':>9}{'p50 ms':>9}"
          f"{'p95 ms':>9}")
    for name, load in loads.items():
        cuts = statistics.quantiles(load.samples, n=100, method="inclusive")
        rate = len(load.samples) / load.seconds
        print(f"{name:<{width}}{len(load.samples):>6}{load.seconds:>8.2f}{rate:>9.0f}"
              f"{cuts[49]:>9.1f}{cuts[94]:>9.1f}")


def print_verify(build: dict[str, float], lines: list[tuple[str, int, float]]) -> None:
    """Print the verification throughputs and the ceilings measured in the same run."""
    print(f"chain     generated: hashing {build['hash']:.1f} s, signing {build['sign']:.1f} s, "
          f"encrypting the details {build['encrypt']:.1f} s, inserting in batches of "
          f"{BATCH:,} {build['insert']:.1f} s; a checkpoint every {CHECKPOINT_EVERY:,} entries")
    print(f"{'verify':<58}{'n':>10}{'s':>8}{'per s':>10}")
    for name, count, seconds in lines:
        print(f"{name:<58}{count:>10,}{seconds:>8.2f}{count / seconds:>10,.0f}")


def print_profile(profile: cProfile.Profile) -> None:
    """Print the functions `verify` spent most of its own time in."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(14)
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def main() -> None:
    """Run the append and verification benchmarks on a fresh database and print the figures."""
    args = parse_args()
    print(describe_machine())
    with migrated_app(CHEAP_ARGON2) as app, tempfile.TemporaryDirectory() as export_dir:
        print(f"database  {describe(app.extensions['vigil.db'].engine)}")
        print(f"machine   {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"{args.writers} writer threads in one process, database on the same machine")
        loads = measure_appends(app, args)
        print_appends(loads)
        chained = add_pharmacy(app, args.organisations)
        bodies: list[bytes] = []
        build = bulk_chain(app, chained, args.entries, bodies=bodies)
        serial = timed_verify(app, chained, Path(export_dir))
        parallel = timed_verify(app, chained, Path(export_dir), WORKERS)
        extend_chain(app, chained, TONIGHT)
        incremental = timed_verify(app, chained, Path(export_dir), WORKERS, incremental=True)
        signed = add_pharmacy(app, args.organisations + 1)
        bulk_chain(app, signed, args.device_signed, add_phone(app, signed))
        device_signed = timed_verify(app, signed, Path(export_dir), WORKERS)
        read = read_only(app, chained, READ_SAMPLE)
        print_verify(build, [
            ("verify, whole chain, 1 process", args.entries, serial),
            (f"verify, whole chain, {WORKERS} processes", args.entries, parallel),
            (f"verify --incremental, {TONIGHT:,} entries past the last", TONIGHT, incremental),
            (f"verify, every entry phone-signed, {WORKERS} processes", args.device_signed,
             device_signed),
            ("  ceiling: the same SELECT only read", min(args.entries, READ_SAMPLE), read),
            ("  ceiling: the canonical bytes only SHA-256-chained", len(bodies),
             sha_chaining(bodies)),
            ("  ceiling: one Ed25519 verify, one core", SIGNED_SAMPLE,
             server_signature_checks(app, SIGNED_SAMPLE)),
            ("  a phone-signed entry's signature (in memory), one core", SIGNED_SAMPLE,
             signature_checks(SIGNED_SAMPLE))])
        one = loads[f"1 organisation, {args.writers} writers"]
        print(f"targets   one organisation {len(one.samples) / one.seconds:,.0f} appends/s "
              f"(target {TARGET_APPENDS:,}); verify {args.entries / parallel:,.0f} entries/s "
              f"(target {TARGET_VERIFIED:,}); phone-signed "
              f"{args.device_signed / device_signed:,.0f} entries/s "
              f"(target {TARGET_DEVICE_SIGNED:,}); load average at the end "
              f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}")
        if args.profile:
            profile = cProfile.Profile()
            timed_verify(app, chained, Path(export_dir), profile=profile)
            print_profile(profile)


if __name__ == "__main__":
    main()
