"""Measure how soon `waste.witness_pair` catches a friendly witness, and what honest nurses pay.

A friendly witness shows in who signs a nurse's wastes and, where witnesses' phones time their
confirmations, in when (`waste.witness_late`). This bench makes the first alone, as the
simulator does (each nurse wastes at a Poisson rate and picks a witness at random from
her circle; from the start day, one nurse's friend signs `--share` of hers), and runs the
production rule with the default policy the way the nightly scan does: every night, over the
scan window and its recent days. It prints, per 40-nurse organisation, the honest nurses
flagged and the false positives per 1,000 honest wastes, and how many days after the start the
friend is caught (median, mean, 90th percentile, share within 7 days). Beside it, the same
figures for a CUSUM on each pair that is told the friend's share (Page 1954; the fastest
detector of a change at its false-alarm rate, Moustakides 1986) at a range of thresholds: what
any statistic over who signs can reach. It takes about 10 s with the defaults.
Usage: python bench/witness_power.py [--witnesses 8] [--per-week 3.6] [--days 182]
[--start 45] [--share 0.9] [--trials 300] [--organisations 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from safeguards import Facts, Policy, WitnessPair
from safeguards.rules.waste import witness_pair

NURSES = 40
# A nurse is compared with at least this many witnesses, as the scan's loader does.
MIN_CIRCLE = 2
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
Wastes = list[tuple[float, int]]
# A detector: the first night, from a given night up to the last, whose scan flags the wastes.
Detector = Callable[[Wastes, int, int], int | None]


def parse_args() -> argparse.Namespace:
    """Read the shape of the witness data and how many trials to run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--witnesses", type=int, default=8)
    parser.add_argument("--per-week", type=float, default=3.6)
    parser.add_argument("--days", type=int, default=182)
    parser.add_argument("--start", type=int, default=45)
    parser.add_argument("--share", type=float, default=0.9)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--organisations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def wastes(rng: random.Random, args: argparse.Namespace, friendly: bool) -> Wastes:
    """Return one nurse's wastes as (day, witness), witness 0 being the friend."""
    made, day = [], 0.0
    while (day := day + rng.expovariate(args.per_week / 7)) < args.days:
        friend = friendly and day >= args.start and rng.random() < args.share
        made.append((day, 0 if friend else rng.randrange(args.witnesses)))
    return made


def rule_nights(policy: Policy) -> Detector:
    """Return the first night from `since` on whose scan the production rule flags a nurse."""
    window, recent = policy.value("scan_window_days"), policy.value("witness_pair_recent_days")

    def flagged(made: Wastes, night: int) -> bool:
        seen = [(at, w) for at, w in made if night - window <= at < night]
        together = Counter(w for _, w in seen)
        lately = Counter(w for at, w in seen if at >= night - recent)
        available = max(len(together), MIN_CIRCLE)
        pairs = tuple(WitnessPair("nurse", f"witness-{w}", n, len(seen), available,
                                  lately[w], sum(lately.values())) for w, n in together.items())
        facts = Facts(organisation_id="org", as_of=EPOCH + timedelta(days=night),
                      witness_pairs=pairs)
        return any(True for _ in witness_pair(facts, policy))

    def first(made: Wastes, since: int, days: int) -> int | None:
        return next((night for night in range(since, days + 1) if flagged(made, night)), None)
    return first


def cusum(witnesses: int, share: float, threshold: float) -> Detector:
    """Return the first night a CUSUM for 'one witness on `share` of her wastes' has crossed."""
    # Told the friend's very share (the alternative it must find), the CUSUM is the fastest
    # detector at its false-alarm rate: no rule over this data can do better.
    uniform = 1 / witnesses
    friend = share + (1 - share) * uniform
    hit, miss = math.log(friend / uniform), math.log((1 - friend) / (1 - uniform))

    def first(made: Wastes, since: int, days: int) -> int | None:
        sums = [0.0] * witnesses
        for at, w in made:
            sums = [max(0.0, s + (hit if i == w else miss)) for i, s in enumerate(sums)]
            # A crossing shows on the next night's scan, and counts only from `since` on.
            if sums[w] >= threshold and math.ceil(at) >= since:
                return math.ceil(at)
        return None
    return first


def report(name: str, first: Detector, args: argparse.Namespace) -> None:
    """Print one detector's false positives and its delay in catching the friend."""
    rng = random.Random(args.seed)
    false, honest_wastes = 0, 0
    for _ in range(args.organisations * (NURSES - 1)):
        made = wastes(rng, args, friendly=False)
        honest_wastes += len(made)
        false += first(made, 1, args.days) is not None
    delays = []
    for _ in range(args.trials):
        made = wastes(rng, args, friendly=True)
        caught = first(made, args.start + 1, args.days)
        delays.append(args.days - args.start if caught is None else caught - 1 - args.start)
    delays.sort()
    print(f"{name:<28} honest nurses flagged per organisation "
          f"{false / args.organisations:5.2f}, per 1,000 honest wastes "
          f"{1000 * false / honest_wastes:5.2f}; friend caught after days: median "
          f"{statistics.median(delays):4.1f}, mean {statistics.fmean(delays):4.1f}, p90 "
          f"{delays[int(0.9 * len(delays))]:4.1f}, within 7 days "
          f"{sum(d <= 7 for d in delays) / len(delays):4.0%}", flush=True)


def main() -> None:
    """Print the production rule's figures, then the CUSUM's at each threshold."""
    args = parse_args()
    print(f"{NURSES} nurses, {args.witnesses} witnesses each, {args.per_week} wastes a week, "
          f"{args.days} days; the friend signs {args.share:.0%} from day {args.start}; "
          f"{args.organisations} organisations, {args.trials} friends, seed {args.seed}")
    report("waste.witness_pair (policy)", rule_nights(Policy()), args)
    for threshold in (4.0, 6.0, 8.0, 10.0, 12.0):
        report(f"CUSUM, threshold {threshold:.0f} nats",
               cusum(args.witnesses, args.share, threshold), args)


if __name__ == "__main__":
    main()
