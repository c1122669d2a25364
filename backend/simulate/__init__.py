"""A labelled simulator: a realistic organisation with injected misuse and its ground truth.

`generate` builds the organisation through the service layer (not HTTP, to be fast) and drives
it day by day on a settable clock, committing each day; the injected patterns are in
`behaviour`, the ground truth it writes in `truth`, and `report` scores the flags against it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from time import perf_counter
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend import boundary, changes
from backend.accounts import service as accounts
from backend.accounts.models import Role, User
from backend.administration.models import DoseRecord
from backend.custody.models import CustodyEntry
from backend.flags.models import Flag
from backend.runtime import Runtime
from backend.simulate import report as scoring
from backend.simulate import truth as ground_truth
from backend.simulate.behaviour import inject
from backend.simulate.clinic import Clinic
from backend.simulate.truth import truth_path
from backend.simulate.world import TIMEZONE, World, build
from backend.visits.models import Visit, VisitStatus

__all__ = ["Params", "generate", "report", "truth_path"]
# A Monday: the simulated organisation opens at the start of a working week.
START = date(2026, 1, 5)


@dataclass(frozen=True)
class Params:
    """What to simulate: the organisation's slug, its size, how long, and the seed."""

    slug: str
    nurses: int = 40
    patients: int = 300
    days: int = 180
    seed: int = 7
    start: date = START


def _counts(session: Session, world: World) -> dict[str, int]:
    org = world.organisation_id

    def count(column, *where) -> int:
        return session.scalar(select(func.count(column)).where(*where))

    return {"nurses": count(User.id, User.organisation_id == org, User.role == Role.NURSE),
            "patients": len(world.patients),
            "visits": count(Visit.id, Visit.organisation_id == org,
                            Visit.status == VisitStatus.COMPLETED),
            "sessions": count(DoseRecord.id, DoseRecord.organisation_id == org),
            "ledger_entries": count(CustodyEntry.id, CustodyEntry.organisation_id == org),
            "flags": count(Flag.id, Flag.organisation_id == org)}


def _judged_by(sessions: sessionmaker[Session], rt: Runtime) -> sessionmaker[Session]:
    """Return `sessions` whose `changes.settle` judges by the simulation's clock.

    The app's sessions judge by the app's clock; a service that settles before its unit ends
    (a count naming its flags) would otherwise stamp its flags with the wall clock's time.
    """
    info = {**sessions.kw.get("info", {}), changes.JUDGE: boundary.judge_with(rt)}
    return sessionmaker(class_=sessions.class_, **{**sessions.kw, "info": info})


def generate(sessions: sessionmaker[Session], rt: Runtime, instance: Path, params: Params,
             progress: Callable[[str], None] = lambda _: None) -> ground_truth.Truth:
    """Simulate `params.days` days of a new organisation; write and return its ground truth."""
    began = perf_counter()
    # Reproducibility, not secrecy: every draw of the world comes from this one seed.
    rng = random.Random(params.seed)  # noqa: S311
    truth = ground_truth.Truth(organisation=params.slug, seed=params.seed,
                               nurses=params.nurses, patients=params.patients,
                               days=params.days, started_at=datetime.combine(
                                   params.start, time(), tzinfo=ZoneInfo(TIMEZONE)))
    with boundary.unit(sessions, rt) as session:
        world = build(session, rt, rng, truth, params.start)
        clinic = Clinic(world, inject(world))
    sessions = _judged_by(sessions, world.rt)
    for day in range(params.days):
        with boundary.unit(sessions, world.rt) as session:
            clinic.day(session, day)
            if day == params.days - 1:
                clinic.finish(session)
        if (day + 1) % 10 == 0 or day + 1 == params.days:
            progress(f"day {day + 1}/{params.days}: {sum(clinic.sessions.values())} sessions, "
                     f"{perf_counter() - began:.0f} s")
    with sessions() as session:
        truth.counts = _counts(session, world)
    truth.ended_at = world.clock.now()
    truth.honest_sessions = clinic.honest_sessions()
    truth.generation_seconds = round(perf_counter() - began, 1)
    ground_truth.write(truth, truth_path(instance, params.slug))
    return truth


def report(session: Session, instance: Path, slug: str) -> str:
    """Score the flags of simulated organisation `slug` against its ground truth; return text."""
    path = truth_path(instance, slug)
    if not path.exists():
        raise FileNotFoundError(f"no ground truth at {path}: run `vigil simulate --org {slug}`")
    truth = ground_truth.read(path)
    organisation = accounts.organisation_by_slug(session, slug)
    flags = scoring.load_flags(session, organisation.id)
    return scoring.render(scoring.score(truth, flags), truth)
