"""Time `vigil simulate` with its defaults, and score what it made.

On a fresh migrated database (the PostgreSQL database in BENCH_DATABASE_URL, whose name must
contain "bench" and whose public schema is dropped first; else a temporary SQLite file), runs
the simulator as `vigil simulate` does (--nurses 40 --patients 300 --days 180 --seed 7 unless
told otherwise) and prints its wall time against the 180 s target and what it made. Then it
prints the report's verdicts and a digest of the report without its timing line: two runs of one
seed must print the same digest, as the simulator must make the same world and the report must
score it the same. --profile runs the simulation under cProfile and prints the functions of
backend/ that took the most time, with everything they called. It takes about 11 minutes with
the defaults on 2 cores.
Usage: python bench/simulate.py [--nurses 40] [--patients 300] [--days 180] [--seed 7]
[--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import tempfile
import time
from pathlib import Path

from backend import simulate
from database import describe, migrated_app
from machine import describe as machine_description

TARGET_SECONDS = 180
SLUG = "bench-sim"


def parse_args() -> argparse.Namespace:
    """Read the simulation's size and seed, and whether to profile it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nurses", type=int, default=40)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true",
                        help="run under cProfile and print the costliest functions of backend/")
    return parser.parse_args()


def comparable(report: str) -> str:
    """Return the report without what differs between runs of one seed: its timing."""
    return "\n".join(line for line in report.splitlines() if " generated in " not in line)


def costliest(profile: cProfile.Profile) -> str:
    """Return the functions of backend/ with the most time spent in them and what they called."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(r"/backend/", 30)
    return "\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip())


def main() -> None:
    """Simulate on a fresh database, then print the time, the verdicts and the digest."""
    args = parse_args()
    print(machine_description())
    with tempfile.TemporaryDirectory(prefix="vigil-simulate-") as tmp, \
            migrated_app(instance=Path(tmp) / "instance") as app:
        print(f"database  {describe(app.extensions['vigil.db'].engine)}")
        params = simulate.Params(SLUG, args.nurses, args.patients, args.days, args.seed)
        profile = cProfile.Profile() if args.profile else None
        began = time.perf_counter()
        if profile is not None:
            profile.enable()
        truth = simulate.generate(app.extensions["vigil.db"].sessions,
                                  app.extensions["vigil.runtime"], Path(tmp) / "instance", params)
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - began
        with app.app_context(), app.extensions["vigil.db"].sessions() as session:
            report = simulate.report(session, Path(tmp) / "instance", SLUG)
        print(report)
        verdict = "met" if seconds < TARGET_SECONDS else "NOT met"
        made = ", ".join(f"{count:,} {name}" for name, count in truth.counts.items())
        digest = hashlib.sha256(comparable(report).encode()).hexdigest()[:16]
        print(f"simulate  {args.nurses} nurses, {args.patients} patients, {args.days} days, "
              f"seed {args.seed}: {seconds:,.0f} s (target < {TARGET_SECONDS} s: {verdict}"
              f"{', under cProfile' if profile else ''}); made {made}")
        print(f"report    digest {digest} (the same seed must print the same digest)")
        if profile is not None:
            print(costliest(profile))


if __name__ == "__main__":
    main()
