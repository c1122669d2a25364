"""Exact statistics for peer comparison: median, MAD, robust z-scores and binomial tails.

A robust z-score's scale has floors (robust_spread): a tiny MAD cannot make an ordinary
difference extreme.

Arithmetic is in fractions so that a score does not depend on the units or the order of the
figures, and a cut-off is met or missed by the numbers rather than by rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from enum import StrEnum
from fractions import Fraction

Exact = int | Decimal | Fraction

# 0.6745 is the 0.75 quantile of the standard normal: it makes MAD estimate one standard
# deviation for normal data (Iglewicz & Hoaglin 1993, "How to detect and handle outliers").
MAD_SCALE = Fraction("0.6745")
# sqrt(pi/2): the same role for the mean absolute deviation (IBM SPSS's modified z-score when
# MAD is 0); here one of the floors under the scale, see robust_spread.
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


def median_of_counts(counted: Sequence[tuple[Exact, int]]) -> Fraction:
    """Return the median of the values each taken `count` times, as `median` of them all."""
    ordered = sorted((Fraction(value), count) for value, count in counted if count)
    total = sum(count for _, count in ordered)
    if not total:
        raise ValueError("the median of nothing is undefined")

    def at(index: int) -> Fraction:
        for value, count in ordered:
            if index < count:
                return value
            index -= count
        raise IndexError(index)

    middle = total // 2
    if total % 2:
        return at(middle)
    return (at(middle - 1) + at(middle)) / 2


def mad(values: Sequence[Exact]) -> Fraction:
    """Return the median absolute deviation of `values` from their median."""
    centre = median(values)
    return median([abs(Fraction(value) - centre) for value in values])


def mean_absolute_deviation(values: Sequence[Exact]) -> Fraction:
    """Return the mean absolute deviation of `values` from their median."""
    centre = median(values)
    return sum((abs(Fraction(value) - centre) for value in values), Fraction(0)) / len(values)


class Basis(StrEnum):
    """Which of the three yardsticks set a robust scale: it goes into a finding's evidence."""

    MAD = "mad"
    MEAN_ABSOLUTE_DEVIATION = "mean_absolute_deviation"
    FLOOR = "floor"


@dataclass(frozen=True)
class Spread:
    """The centre and the scale a figure is scored on, and which yardstick set the scale."""

    centre: Fraction
    # None when every figure is the same and no floor is set: nothing can be scored.
    scale: Fraction | None
    basis: Basis

    def z(self, value: Exact) -> Fraction | None:
        """Return the modified z-score of `value` on this centre and scale."""
        return None if self.scale is None else (Fraction(value) - self.centre) / self.scale


def robust_spread(values: Sequence[Exact], floor: Exact = 0) -> Spread:
    """Return the median of `values` and the largest of three estimates of one deviation.

    - MAD / 0.6745, the modified z-score's own scale (Iglewicz & Hoaglin 1993);
    - 1.253314 x the mean absolute deviation, which IBM SPSS uses when MAD is 0: MAD
      *implodes* when over half the figures (nearly) tie, however far the rest lie (Rousseeuw
      & Croux 1993, JASA 88:1273), and the mean absolute deviation still sees them;
    - `floor` x |median|, a policy floor: a spread below this share of the median is the luck
      of a small or uniform team, not precision, and would make an ordinary difference extreme.

    Each estimates one standard deviation for normal figures; the largest is the most modest.
    """
    centre = median(values)
    candidates = ((mad(values) / MAD_SCALE, Basis.MAD),
                  (MEAN_AD_SCALE * mean_absolute_deviation(values),
                   Basis.MEAN_ABSOLUTE_DEVIATION),
                  (Fraction(floor) * abs(centre), Basis.FLOOR))
    # max keeps the first of equal scales: MAD before the others, as the method's own.
    scale, basis = max(candidates, key=lambda candidate: candidate[0])
    # Every figure the same gives no scale: nothing stands out, and nothing can be scored.
    return Spread(centre, scale or None, basis)


def robust_z(value: Exact, values: Sequence[Exact], floor: Exact = 0) -> Fraction | None:
    """Return the modified z-score of `value` among `values`, or None when they do not vary."""
    return robust_spread(values, floor).z(value)


def robust_scores(values: Sequence[Exact], floor: Exact = 0) -> list[Fraction | None]:
    """Return the modified z-score of each of `values` among them all, in their order."""
    spread = robust_spread(values, floor)
    return [spread.z(value) for value in values]


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
