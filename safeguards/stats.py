"""Exact statistics for peer comparison: median, MAD, robust z-scores and binomial tails.

Arithmetic is in fractions so that a score does not depend on the units or the order of the
figures, and a cut-off is met or missed by the numbers rather than by rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Context, Decimal
from fractions import Fraction

Exact = int | Decimal | Fraction

# 0.6745 is the 0.75 quantile of the standard normal: it makes MAD estimate one standard
# deviation for normal data (Iglewicz & Hoaglin 1993, "How to detect and handle outliers").
MAD_SCALE = Fraction("0.6745")
# sqrt(pi/2): the same role for the mean absolute deviation, used when MAD is 0 (more than half
# the figures equal), as IBM SPSS does for the modified z-score.
MEAN_AD_SCALE = Fraction("1.253314")


def median(values: Sequence[Exact]) -> Fraction:
    """Return the median of `values`, the mean of the two middle ones for an even count."""
    if not values:
        raise ValueError("the median of nothing is undefined")
    ordered = sorted(Fraction(value) for value in values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def mad(values: Sequence[Exact]) -> Fraction:
    """Return the median absolute deviation of `values` from their median."""
    centre = median(values)
    return median([abs(Fraction(value) - centre) for value in values])


def mean_absolute_deviation(values: Sequence[Exact]) -> Fraction:
    """Return the mean absolute deviation of `values` from their median."""
    centre = median(values)
    return sum((abs(Fraction(value) - centre) for value in values), Fraction(0)) / len(values)


def robust_z(value: Exact, values: Sequence[Exact]) -> Fraction | None:
    """Return the modified z-score of `value` among `values`, or None when they do not vary."""
    centre, scale = _centre_and_scale(values)
    return None if scale is None else (Fraction(value) - centre) / scale


def robust_scores(values: Sequence[Exact]) -> list[Fraction | None]:
    """Return the modified z-score of each of `values` among them all, in their order."""
    centre, scale = _centre_and_scale(values)
    return [None if scale is None else (Fraction(value) - centre) / scale for value in values]


def _centre_and_scale(values: Sequence[Exact]) -> tuple[Fraction, Fraction | None]:
    # 0.6745 (x - median) / MAD, written as (x - median) / (MAD / 0.6745).
    centre, spread = median(values), mad(values)
    if spread:
        return centre, spread / MAD_SCALE
    # Every figure the same gives no scale: nothing stands out, and nothing can be scored.
    return centre, MEAN_AD_SCALE * mean_absolute_deviation(values) or None


def binomial_upper_tail(successes: int, trials: int, p: Fraction) -> Fraction:
    """Return P(X >= successes) for X ~ Binomial(trials, p), exactly."""
    if not 0 <= p <= 1:
        raise ValueError(f"a probability lies between 0 and 1, not {p}")
    if trials < 0:
        raise ValueError(f"trials cannot be negative ({trials})")
    if successes <= 0:
        return Fraction(1)
    if successes > trials:
        return Fraction(0)
    # With p = a/b each term is C(n, i) a^i (b - a)^(n - i) / b^n: sum whole numbers, divide once.
    a, b = p.numerator, p.denominator
    total = sum(math.comb(trials, i) * a ** i * (b - a) ** (trials - i)
                for i in range(successes, trials + 1))
    return Fraction(total, b ** trials)


def rounded(value: Exact, places: int) -> Decimal:
    """Return `value` as a Decimal rounded half-even to `places` decimal places."""
    exact = Fraction(value)
    return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        Decimal(1).scaleb(-places))


def significant(value: Fraction, digits: int = 3) -> Decimal:
    """Return `value` as a Decimal to `digits` significant digits, for tiny probabilities."""
    context = Context(prec=digits)
    return context.divide(Decimal(value.numerator), Decimal(value.denominator))
