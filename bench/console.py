"""Measure the desk console's flag queue and flag pages over 1,000,000 sessions and 10,000 flags.

Seeds bench/scan.py's organisation (200 nurses, 5,000 patients, 200 weeks of signed sessions,
loaded with COPY, its misuse injected), runs its scan of every session, then raises more flags
through the flag service until there are 10,000: findings of real rules, by their own metadata,
about real visits, nurses, patients, lots and phones of sampled sessions, first seen over the
whole span, their severities spread, a few from shadow rules; then two compliance officers take
some into review, note some and resolve some with each verdict, through the same service. The
seed is kept (the database and, beside the app's keys, a marker) so `--reuse` measures it again.
A compliance officer signs in at /console/login in the Flask test client; after a warm-up, each
page kind is requested N times in turn: the queue (first page, filtered, a deep page) and flag
pages of a sample spread over rules and subjects; the API's GET /api/v1/flags beside them.
Needs PostgreSQL in BENCH_DATABASE_URL (its name must contain "bench"; its public schema is
dropped first unless --reuse); without it, says so and stops.
Usage: python bench/console.py [--weeks 200] [--nurses 200] [--flags 10000] [--requests 200]
       [--reuse] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pyotp
from flask import Flask
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from backend.accounts import service as accounts
from backend.accounts.models import Role, User
from backend.administration.models import DoseRecord
from backend.clock import FixedClock
from backend.flags import service as flags
from backend.flags.models import Flag, FlagStatus, Resolution
from backend.mfa.models import FactorKind, SecondFactor
from backend.runtime import Runtime
from backend.visits.models import Visit
from database import describe, migrated_app
from latency import machine
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.rules import ALL
from scan import (
    LATE_WASTER,
    ORG,
    PATIENTS_PER_NURSE,
    print_scan,
    print_seed,
    seed,
    timed_scan,
)
from schedule import CHEAP_ARGON2, PASSWORD, as_caller

TARGET_P95_MS = 150
SEED = 14
MARKER = "console-bench-seed.json"
REVIEWERS = ("compliance", "compliance2")
# Rules whose findings top the flags up: the kind of subject each is about, the evidence it
# names (as the rule's own does: the timeline reads the nurse, patient and lot from it), and how
# often each is drawn: mostly the per-event rules a busy organisation raises, a few others.
VISIT_EVIDENCE = "visit_id nurse_id patient_id occurred_at"
DOSE_EVIDENCE = "visit_id nurse_id patient_id dose_id lot quantity_ug occurred_at"
TOP_UP = (
    ("evv.check_in_out_of_range", SubjectKind.VISIT, VISIT_EVIDENCE, 14),
    ("evv.check_out_out_of_range", SubjectKind.VISIT, VISIT_EVIDENCE, 6),
    ("evv.visit_too_short", SubjectKind.VISIT, VISIT_EVIDENCE, 8),
    ("monitoring.missing_observations", SubjectKind.VISIT, VISIT_EVIDENCE, 10),
    ("monitoring.infusion_short", SubjectKind.VISIT, VISIT_EVIDENCE, 6),
    ("monitoring.early_discharge", SubjectKind.VISIT, VISIT_EVIDENCE, 4),
    ("visit.missed", SubjectKind.VISIT, VISIT_EVIDENCE, 8),
    ("waste.exceeds_remainder", SubjectKind.VISIT, DOSE_EVIDENCE, 3),
    ("custody.administer_discrepancy", SubjectKind.VISIT, DOSE_EVIDENCE, 3),
    ("waste.unwitnessed", SubjectKind.NURSE, DOSE_EVIDENCE, 8),
    ("waste.late", SubjectKind.NURSE, DOSE_EVIDENCE, 8),
    ("dosing.low_dose_large_waste", SubjectKind.NURSE, DOSE_EVIDENCE, 4),
    ("custody.unreturned_stock", SubjectKind.NURSE, "nurse_id lot quantity_ug occurred_at", 3),
    ("evv.impossible_travel", SubjectKind.NURSE, "nurse_id occurred_at", 2),
    ("dosing.creep", SubjectKind.PATIENT, "patient_id nurse_id dose_id occurred_at", 3),
    ("frequency.interval_below_min", SubjectKind.PATIENT,
     "patient_id nurse_id dose_id occurred_at", 4),
    ("frequency.window_exceeded", SubjectKind.PATIENT,
     "patient_id nurse_id dose_id occurred_at", 2),
    ("custody.count_discrepancy", SubjectKind.LOT, "holder lot quantity_ug occurred_at", 2),
    ("custody.loss_reported", SubjectKind.LOT, "nurse_id holder lot quantity_ug occurred_at", 1),
    ("device.clock_drift", SubjectKind.DEVICE, "device_id nurse_id occurred_at", 2),
)
SHADOW_SHARE = 0.05
# Of the flags: how many a reviewer took, noted and resolved, and the verdicts given.
ASSIGNED_SHARE, NOTED_SHARE, RESOLVED_SHARE = 0.32, 0.3, 0.55
VERDICTS = {Resolution.FALSE_POSITIVE: 45, Resolution.JUSTIFIED: 35,
            Resolution.CONFIRMED_MISUSE: 15, Resolution.CONFIRMED_DIVERSION: 5}
COMMIT_EVERY = 500
FLAG_PAGES = 60
CSRF_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
NEXT_PAGE = re.compile(r'<a href="([^"]+)"[^>]*>Next page</a>')


def parse_args() -> argparse.Namespace:
    """Read the size of the seed, the number of requests, and whether to reuse or profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=200,
                        help="weeks of weekly sessions per patient, up to yesterday")
    parser.add_argument("--nurses", type=int, default=200,
                        help=f"nurses, each with {PATIENTS_PER_NURSE} patients")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes generating and signing the sessions")
    parser.add_argument("--flags", type=int, default=10_000,
                        help="flags to have in all, the scan's and those raised on top")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page kind")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per page kind")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the database an earlier run seeded, without seeding")
    parser.add_argument("--profile", action="store_true",
                        help="profile each page kind: its costliest functions and queries, "
                             "and the plan of its slowest query")
    args = parser.parse_args()
    if args.nurses <= LATE_WASTER or args.weeks < 1:
        parser.error(f"the injected misuse needs {LATE_WASTER + 1} nurses and a week")
    if min(args.requests, args.warmup) < 2:
        parser.error("percentiles need at least 2 requests, and the warm-up 2")
    return args


# --- seeding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampled:
    """One stored session as the top-up findings name it."""

    visit_id: str
    nurse_id: str
    patient_id: str
    device_id: str
    dose_id: str
    lot: str
    quantity_ug: int
    checked_in_at: datetime
    checked_out_at: datetime


def sampled_sessions(session: Session, organisation_id: uuid.UUID, count: int) -> list[Sampled]:
    """Return `count` of the organisation's dosed sessions, drawn at random but repeatably."""
    session.execute(text(f"SELECT setseed({SEED / 100})"))
    rows = session.execute(
        select(Visit.id, Visit.nurse_id, Visit.patient_id, DoseRecord.device_id, DoseRecord.id,
               DoseRecord.lot, DoseRecord.quantity_ug, Visit.checked_in_at,
               Visit.checked_out_at)
        .join(DoseRecord, DoseRecord.visit_id == Visit.id)
        .where(Visit.organisation_id == organisation_id)
        .order_by(func.random()).limit(count))
    return [Sampled(*(str(value) if isinstance(value, uuid.UUID) else value for value in row))
            for row in rows]


def severity_of(rng: random.Random, own: Severity) -> Severity:
    """Return the rule's own severity mostly; sometimes lower (a reason given) or critical."""
    return rng.choices((own, Severity.LOW, Severity.INFO, Severity.CRITICAL),
                       weights=(75, 15, 5, 5))[0]


def top_up_finding(rng: random.Random, number: int, about: Sampled) -> Finding:
    """Return finding `number`: a drawn rule's, about the sampled session or its people."""
    rule_id, kind, names, _ = rng.choices(TOP_UP, weights=[rule[-1] for rule in TOP_UP])[0]
    meta = ALL.get(rule_id).meta
    known = {"visit_id": about.visit_id, "nurse_id": about.nurse_id,
             "patient_id": about.patient_id, "device_id": about.device_id,
             "dose_id": about.dose_id, "lot": about.lot, "quantity_ug": about.quantity_ug,
             "holder": "vault", "occurred_at": about.checked_in_at.isoformat()}
    subject = {SubjectKind.VISIT: about.visit_id, SubjectKind.NURSE: about.nurse_id,
               SubjectKind.PATIENT: about.patient_id, SubjectKind.LOT: about.lot,
               SubjectKind.DEVICE: about.device_id}[kind]
    summary = (f"{meta.title}: around the visit of {about.checked_in_at:%Y-%m-%d %H:%M} UTC, "
               f"{about.quantity_ug / 1000:g} mg from lot {about.lot}.")
    found = meta.finding(Subject(kind, subject), summary,
                         {name: known[name] for name in names.split()}, key=("bench", number),
                         severity=severity_of(rng, meta.severity))
    return replace(found, shadow=rng.random() < SHADOW_SHARE)


def raise_top_up(app: Flask, organisation_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """Raise `count` findings through the flag service, each when its session ended."""
    rng = random.Random(SEED)
    raised = []
    with app.extensions["vigil.db"].sessions() as session:
        drawn = sampled_sessions(session, organisation_id, count)
        # A small seed has fewer sessions than flags: sessions then carry several.
        for number in range(count):
            about = drawn[number % len(drawn)]
            found_at = about.checked_out_at + timedelta(hours=rng.uniform(0.1, 30))
            for one in flags.raise_flags(session, found_at, organisation_id,
                                         [top_up_finding(rng, number, about)]):
                raised.append(one.flag.id)
            if number % COMMIT_EVERY == COMMIT_EVERY - 1:
                session.commit()
        session.commit()
    return raised


def enrol(session: Session, rt: Runtime, user: User) -> SecondFactor:
    """Give a desk user an authenticator app, as if enrolled: they sign in with a second factor."""
    factor = SecondFactor(user_id=user.id, organisation_id=user.organisation_id,
                          kind=FactorKind.TOTP, label="Bench authenticator",
                          created_at=rt.clock.now(), confirmed_at=rt.clock.now())
    factor.secret = pyotp.random_base32()
    session.add(factor)
    return factor


def add_reviewers(app: Flask, organisation_id: uuid.UUID) -> list[uuid.UUID]:
    """Create the compliance officers who review flags, and sign in to the console."""
    rt = app.extensions["vigil.runtime"]
    with app.extensions["vigil.db"].sessions() as session:
        reviewers = [accounts.create_user(session, rt, None, organisation_id=organisation_id,
                                          username=name, display_name=f"Bench {name}",
                                          role=Role.COMPLIANCE, password=PASSWORD)
                     for name in REVIEWERS]
        for reviewer in reviewers:
            enrol(session, rt, reviewer)
        session.commit()
        return [reviewer.id for reviewer in reviewers]


def review_one(session: Session, rt: Runtime, rng: random.Random, flag: Flag,
               reviewer: User) -> Counter[str]:
    """Take the flag into review some hours after it was raised; note it, resolve it, or both."""
    caller, done = as_caller(reviewer), Counter()
    at = flag.last_seen_at + timedelta(hours=rng.uniform(1, 72))
    rt = replace(rt, clock=FixedClock(at))
    flags.assign(session, rt, caller, flag.id, reviewer.id)
    done["assigned"] += 1
    if rng.random() < NOTED_SHARE:
        flags.add_note(session, rt, caller, flag.id, "Checked the visit's EVV and the ledger.")
        done["noted"] += 1
    if rng.random() < RESOLVED_SHARE:
        verdict = rng.choices(list(VERDICTS), weights=list(VERDICTS.values()))[0]
        flags.resolve(session, replace(rt, clock=FixedClock(at + timedelta(hours=2))), caller,
                      flag.id, verdict, f"Reviewed: {verdict.value.replace('_', ' ')}.")
        done[verdict.value] += 1
    return done


def review(app: Flask, organisation_id: uuid.UUID, reviewers: list[uuid.UUID]) -> Counter[str]:
    """Have the reviewers take a share of the live flags, chosen at random, through the service."""
    rng, rt = random.Random(SEED + 1), app.extensions["vigil.runtime"]
    done: Counter[str] = Counter()
    with app.extensions["vigil.db"].sessions() as session:
        live = session.scalars(select(Flag.id).where(
            Flag.organisation_id == organisation_id, Flag.shadow.is_(False),
            Flag.status == FlagStatus.OPEN).order_by(Flag.id)).all()
        taken = rng.sample(live, round(len(live) * ASSIGNED_SHARE))
        people = [session.get(User, reviewer) for reviewer in reviewers]
        for number, flag_id in enumerate(taken):
            flag = session.get(Flag, flag_id)
            done += review_one(session, rt, rng, flag, rng.choice(people))
            if number % COMMIT_EVERY == COMMIT_EVERY - 1:
                session.commit()
        session.commit()
    return done


def seed_flags(app: Flask, args: argparse.Namespace) -> dict:
    """Seed the scan benchmark's sessions, scan them, top the flags up and review some.

    Return what the marker keeps: the size, the seconds each part took, and what it made.
    """
    seeded = seed(app, args)
    print_seed(seeded, args.workers)
    clinic = seeded.clinic
    organisation_id = uuid.UUID(clinic.organisation_id)
    every = datetime.combine(clinic.first_day - timedelta(days=1), datetime.min.time(), UTC)
    scanned = timed_scan(app, clinic, "of every session", every)
    print_scan(scanned)
    seconds = {"seed": sum(seeded.seconds.values()),
               "scan": scanned.seconds + scanned.commit_seconds}
    began = time.perf_counter()
    reviewers = add_reviewers(app, organisation_id)
    raised = raise_top_up(app, organisation_id, max(args.flags - flag_count(app), 0))
    seconds["top-up flags"] = time.perf_counter() - began
    began = time.perf_counter()
    reviewed = review(app, organisation_id, reviewers)
    with app.extensions["vigil.db"].engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    seconds["review and ANALYZE"] = time.perf_counter() - began
    return {"weeks": args.weeks, "nurses": args.nurses, "flags": args.flags, "seconds": seconds,
            "load_average": seeded.load_average, "scan_flags": scanned.result.new_flags,
            "top_up_flags": len(raised), "reviewed": dict(reviewed)}


def print_seeding(marker: dict, reused: bool) -> None:
    """Print how the measured database was seeded, and how long each part took."""
    parts = ", ".join(f"{name} {spent:.0f} s" for name, spent in marker["seconds"].items())
    reviewed = ", ".join(f"{name} {count:,}" for name, count in marker["reviewed"].items())
    print(f"seeding   {'reused, seeded earlier in' if reused else 'took'} "
          f"{sum(marker['seconds'].values()):.0f} s: {parts} (load average "
          f"{marker['load_average']:.1f} as it began); flags: the scan's {marker['scan_flags']:,}"
          f" and {marker['top_up_flags']:,} raised on top; reviewed {reviewed}")


# --- the database measured -------------------------------------------------------------------


def flag_count(app: Flask) -> int:
    """Count the flags stored."""
    with app.extensions["vigil.db"].sessions() as session:
        return session.scalar(select(func.count()).select_from(Flag))


def describe_rows(app: Flask) -> tuple[str, str]:
    """Count the sessions and flags, the flags by status, severity and subject."""
    with app.extensions["vigil.db"].sessions() as session:
        sessions = session.scalar(select(func.count()).select_from(Visit))

        def spread(column) -> str:
            counted = session.execute(select(column, func.count()).group_by(column)
                                      .order_by(func.count().desc()))
            return ", ".join(f"{value} {count:,}" for value, count in counted)

        total = session.scalar(select(func.count()).select_from(Flag))
        rules = session.scalar(select(func.count(func.distinct(Flag.rule_id))))
        shadow = session.scalar(select(func.count()).where(Flag.shadow.is_(True)))
        spreads = (f"by status {spread(Flag.status)}; by severity {spread(Flag.severity)}; "
                   f"by subject {spread(Flag.subject_kind)}; {rules} rules; {shadow:,} shadow")
    return f"sessions {sessions:,}, flags {total:,}", spreads


# --- the pages measured ----------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A page kind: the paths its requests cycle through, and its request headers."""

    label: str
    paths: tuple[str, ...]
    headers: dict[str, str] | None = None
    # What each path shows, where the paths differ in kind (the flag pages' rules and subjects).
    shows: Mapping[str, str] = field(default_factory=dict)


class Desk:
    """A compliance officer's browser: signed in at /console/login, the API's token beside."""

    def __init__(self, app: Flask) -> None:
        self.app, self.client = app, app.test_client()
        self.token = ""

    def authenticator(self, username: str) -> pyotp.TOTP:
        """Return the reviewer's authenticator, from the secret the database keeps sealed."""
        with self.app.extensions["vigil.db"].sessions() as session:
            user = session.scalar(select(User).where(User.username == username))
            factor = session.scalar(select(SecondFactor).where(
                SecondFactor.user_id == user.id, SecondFactor.confirmed_at.is_not(None),
                SecondFactor.removed_at.is_(None)))
            if factor is None:
                # A database seeded before sign-in asked for a second factor.
                factor = enrol(session, self.app.extensions["vigil.runtime"], user)
                session.commit()
            return pyotp.TOTP(factor.secret)

    def sign_in(self, username: str) -> None:
        """Sign in through the console's two forms with their CSRF token, and at the API."""
        app = self.authenticator(username)
        page = self.client.get("/console/login").get_data(as_text=True)
        answer = self.client.post("/console/login", data={
            "org": ORG, "username": username, "password": PASSWORD,
            "csrf_token": CSRF_TOKEN.search(page).group(1)})
        page = self.client.get("/console/login/factor").get_data(as_text=True)
        answer = self.client.post("/console/login/factor", data={
            "code": app.now(), "csrf_token": CSRF_TOKEN.search(page).group(1)})
        if answer.status_code != 302:
            raise RuntimeError(f"console sign-in answered {answer.status_code}")
        answer = self.client.post("/api/v1/auth/login", json={
            "org": ORG, "username": username, "password": PASSWORD})
        # The next step's code: the server takes each step once, and accepts one step ahead.
        answer = self.client.post("/api/v1/auth/login/factor", json={
            "challenge_token": answer.json["challenge_token"],
            "code": app.at(datetime.now(UTC), counter_offset=1)})
        if answer.status_code != 200:
            raise RuntimeError(f"API login answered {answer.status_code}: {answer.json}")
        self.token = answer.json["access_token"]

    def api(self) -> dict[str, str]:
        """Return the headers of an API request."""
        return {"Authorization": f"Bearer {self.token}"}


def deep(path: str, offset: int, next_link: str | None) -> str:
    """Return `path` at `offset`, in the paging parameters the queue's own next link uses."""
    query = dict(parse_qsl(urlsplit(next_link or "").query)) or {"offset": "100"}
    if "page" in query and "offset" not in query:
        size = int(query.get("per_page", query.get("limit", 50)))
        query["page"] = str(offset // size + 1)
    else:
        query["offset"] = str(offset)
    return f"{urlsplit(path).path}?{urlencode(query)}"


def flag_sample(app: Flask, count: int) -> dict[str, str]:
    """Return `count` live flags spread over rules, subject kinds and statuses, described."""
    with app.extensions["vigil.db"].sessions() as session:
        rows = session.execute(select(Flag.id, Flag.rule_id, Flag.subject_kind, Flag.status)
                               .where(Flag.shadow.is_(False)).order_by(Flag.id)).all()
    by_kind: dict[tuple, list[str]] = {}
    for flag_id, *kind in rows:
        by_kind.setdefault(tuple(kind), []).append(str(flag_id))
    shown = {flag_id: f"{rule} about a {subject}, {status}"
             for (rule, subject, status), ids in by_kind.items() for flag_id in ids}
    rng, picked = random.Random(SEED), []
    # Round robin over (rule, subject, status): every kind of page, the common ones no more.
    while len(picked) < count and any(by_kind.values()):
        for ids in by_kind.values():
            if ids and len(picked) < count:
                picked.append(ids.pop(rng.randrange(len(ids))))
    return {flag_id: shown[flag_id] for flag_id in picked}


def busiest(app: Flask, column) -> str:
    """Return the value of `column` most live flags share: the fullest filtered queue."""
    with app.extensions["vigil.db"].sessions() as session:
        return str(session.scalar(
            select(column).where(Flag.shadow.is_(False), column.is_not(None))
            .group_by(column).order_by(func.count().desc()).limit(1)))


def probes(app: Flask, desk: Desk) -> list[Probe]:
    """Return the page kinds to time: the queue's, the flag page's, and the API's beside."""
    live = flag_count(app)
    next_link = NEXT_PAGE.search(desk.client.get("/console/flags").get_data(as_text=True))
    deep_at = max(live * 3 // 4, 0) // 100 * 100
    nurse, rule = busiest(app, Flag.nurse_id), busiest(app, Flag.rule_id)
    reviewer = busiest(app, Flag.assignee_id)
    sample = flag_sample(app, FLAG_PAGES)
    pages = {f"/console/flags/{flag_id}": shows for flag_id, shows in sample.items()}
    api_pages = {f"/api/v1/flags/{flag_id}": shows for flag_id, shows in sample.items()}
    return [
        Probe("queue, first page", ("/console/flags",)),
        Probe("queue, open and high", ("/console/flags?status=open&severity=high",)),
        Probe("queue, one rule", (f"/console/flags?rule={rule}",)),
        Probe("queue, one nurse", (f"/console/flags?nurse={nurse}",)),
        Probe("queue, a reviewer's, any status",
              (f"/console/flags?status=any&assignee={reviewer}",)),
        Probe(f"queue, deep page (offset {deep_at:,})",
              (deep("/console/flags", deep_at,
                    next_link.group(1).replace("&amp;", "&") if next_link else None),)),
        Probe(f"flag page ({len(pages)} flags)", tuple(pages), shows=pages),
        Probe("API GET /flags", ("/api/v1/flags",), desk.api()),
        Probe(f"API GET /flags offset {deep_at:,}", (f"/api/v1/flags?offset={deep_at}",),
              desk.api()),
        Probe(f"API GET /flags/<id> ({len(pages)})", tuple(api_pages), desk.api(),
              shows=api_pages),
    ]


@dataclass
class Timing:
    """A page kind's timed requests in milliseconds, or why it was not timed."""

    probe: Probe
    by_path: dict[str, list[float]]
    refused: str = ""

    @property
    def samples(self) -> list[float]:
        """Return every timed request's milliseconds."""
        return [ms for samples in self.by_path.values() for ms in samples]

    def slowest(self) -> list[tuple[float, str]]:
        """Return each path's median milliseconds, slowest first."""
        return sorted(((statistics.median(ms), path) for path, ms in self.by_path.items()),
                      reverse=True)


def requests_of(probe: Probe, count: int) -> Iterator[str]:
    """Yield `count` paths, cycling through the probe's."""
    for number in range(count):
        yield probe.paths[number % len(probe.paths)]


def run(desk: Desk, probe: Probe, args: argparse.Namespace,
        profile: cProfile.Profile | None = None) -> Timing:
    """Warm the page kind up, then time its requests one after another."""
    for path in requests_of(probe, args.warmup):
        answer = desk.client.get(path, headers=probe.headers)
        if answer.status_code != 200:
            return Timing(probe, {}, f"{path} answered {answer.status_code}")
    by_path: dict[str, list[float]] = {}
    for path in requests_of(probe, args.requests):
        began = time.perf_counter()
        if profile:
            profile.enable()
        answer = desk.client.get(path, headers=probe.headers)
        if profile:
            profile.disable()
        by_path.setdefault(path, []).append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            return Timing(probe, {}, f"{path} answered {answer.status_code}")
    return Timing(probe, by_path)


def print_table(timings: list[Timing], rows: str) -> None:
    """Print one line per page kind: requests, p50, p95, p99 and max, against the target."""
    width = max(len(timing.probe.label) for timing in timings) + 2
    print(f"{'page':<{width}}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}  rows in DB: {rows}")
    for timing in timings:
        if timing.refused:
            print(f"{timing.probe.label:<{width}}  not timed: {timing.refused}")
            continue
        cuts = statistics.quantiles(timing.samples, n=100, method="inclusive")
        verdict = "ok" if cuts[94] < TARGET_P95_MS else f"over the {TARGET_P95_MS} ms target"
        print(f"{timing.probe.label:<{width}}{len(timing.samples):>9}{cuts[49]:>9.1f}"
              f"{cuts[94]:>9.1f}{cuts[98]:>9.1f}{max(timing.samples):>9.1f}  {verdict}")
    for timing in timings:
        if len(timing.by_path) > 1:
            slowest = ", ".join(f"{timing.probe.shows.get(path, path)} {ms:.0f} ms"
                                for ms, path in timing.slowest()[:3])
            print(f"slowest   {timing.probe.label}, by median: {slowest}")


# --- profiling -------------------------------------------------------------------------------


@dataclass
class Statement:
    """One query a request ran, how long it took, and with what parameters."""

    sql: str
    parameters: object
    ms: float


def statements_of(app: Flask, request: Callable[[], object]) -> list[Statement]:
    """Run `request` and return every query it sent, timed at the driver."""
    engine, ran, started = app.extensions["vigil.db"].engine, [], {}

    def before(conn, cursor, sql, parameters, context, executemany):
        started[id(cursor)] = time.perf_counter()

    def after(conn, cursor, sql, parameters, context, executemany):
        ms = (time.perf_counter() - started.pop(id(cursor))) * 1000
        ran.append(Statement(sql, parameters, ms))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        request()
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return ran


def explain(app: Flask, statement: Statement) -> str:
    """Return PostgreSQL's plan of a read, as run: EXPLAIN (ANALYZE, BUFFERS)."""
    connection = app.extensions["vigil.db"].engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", statement.parameters)
        return "\n".join(f"            {row[0]}" for row in cursor.fetchall())
    finally:
        connection.rollback()
        connection.close()


def print_profile(app: Flask, desk: Desk, timing: Timing, profile: cProfile.Profile) -> None:
    """Print where a page kind's time went: functions, then queries, then the slowest plan."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative").print_stats(25)
    print(f"profile   {timing.probe.label}: functions by cumulative time over "
          f"{len(timing.samples)} requests")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))
    slowest = timing.slowest()
    if len(slowest) > 1:
        print("paths     the slowest, by median ms:")
        for ms, path in slowest[:8]:
            print(f"  {ms:7.1f} ms  {path}  {timing.probe.shows.get(path, '')}")
    path = slowest[0][1]
    ran = statements_of(app, lambda: desk.client.get(path, headers=timing.probe.headers))
    print(f"queries   {path}: {len(ran)} queries, {sum(one.ms for one in ran):.1f} ms at the "
          "driver; the slowest:")
    for one in sorted(ran, key=lambda one: -one.ms)[:5]:
        print(f"  {one.ms:7.1f} ms  {' '.join(one.sql.split())[:300]}")
    reads = [one for one in ran if one.sql.lstrip().upper().startswith(("SELECT", "WITH"))]
    if reads:
        print("plan      of the slowest read:")
        print(explain(app, max(reads, key=lambda one: one.ms)))


def measure(app: Flask, args: argparse.Namespace) -> list[Timing]:
    """Sign a compliance officer in, then time each page kind; profile each if asked."""
    desk = Desk(app)
    desk.sign_in(REVIEWERS[0])
    timings = []
    for probe in probes(app, desk):
        profile = cProfile.Profile() if args.profile else None
        timings.append(run(desk, probe, args, profile))
        if profile and timings[-1].samples:
            print_profile(app, desk, timings[-1], profile)
    return timings


# --- the run ---------------------------------------------------------------------------------


def instance_of(url: str) -> Path:
    """Return the folder that keeps this database's app keys and seed marker between runs."""
    return Path(tempfile.gettempdir()) / f"vigil-{make_url(url).database}"


def seeded_marker(instance: Path, args: argparse.Namespace) -> dict:
    """Return the marker of an earlier seed of this size, or stop saying why there is none."""
    path = instance / MARKER
    if not path.exists():
        raise SystemExit(f"--reuse: no seed marker at {path}; run once without --reuse")
    marker = json.loads(path.read_text())
    if (marker["weeks"], marker["nurses"], marker["flags"]) != (args.weeks, args.nurses,
                                                                 args.flags):
        raise SystemExit(f"--reuse: the database holds --weeks {marker['weeks']} --nurses "
                         f"{marker['nurses']} --flags {marker['flags']}; ask for that size, "
                         "or seed again")
    return marker


def main() -> None:
    """Seed (or reuse) the database, time the console's flag pages and print the figures."""
    args = parse_args()
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        # `make bench` runs on machines without PostgreSQL; COPY and this size need it.
        print("console   skipped: set BENCH_DATABASE_URL to a PostgreSQL bench database")
        return
    instance = instance_of(url)
    marker = seeded_marker(instance, args) if args.reuse else None
    if marker is None:
        shutil.rmtree(instance, ignore_errors=True)
    with migrated_app(CHEAP_ARGON2, instance=instance, reuse=args.reuse) as app:
        print(f"database  {describe(app.extensions['vigil.db'].engine)}, "
              f"{make_url(url).database}, on this machine")
        if marker is None:
            marker = seed_flags(app, args)
            # Written last: a seed cut short leaves no marker, so --reuse refuses it.
            (instance / MARKER).write_text(json.dumps(marker, indent=2))
        print_seeding(marker, args.reuse)
        rows, spreads = describe_rows(app)
        print(f"flags     {spreads}")
        print(f"machine   {machine()}; load average {os.getloadavg()[0]:.1f} as timing began; "
              f"{args.warmup} warm-up requests per page kind")
        print_table(measure(app, args), rows)


if __name__ == "__main__":
    main()
