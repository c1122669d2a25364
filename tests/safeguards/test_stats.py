"""Median, MAD, robust z-scores and binomial tails: known values and their properties."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from safeguards.stats import (
    MAD_SCALE,
    MEAN_AD_SCALE,
    Basis,
    binomial_upper_tail,
    mad,
    mean_absolute_deviation,
    median,
    median_of_counts,
    robust_scores,
    robust_spread,
    robust_z,
    rounded,
    significant,
)


@pytest.mark.parametrize(("values", "expected"), [
    ([3], Fraction(3)),
    ([5, 1, 3], Fraction(3)),
    ([4, 1, 3, 2], Fraction(5, 2)),
    ([Decimal("0.1"), Decimal("0.2")], Fraction(3, 20)),
])
def test_median(values, expected):
    assert median(values) == expected


def test_median_of_nothing_is_refused():
    with pytest.raises(ValueError, match="nothing"):
        median([])
    with pytest.raises(ValueError, match="nothing"):
        median_of_counts([(3, 0)])


@given(st.lists(st.tuples(st.fractions(max_denominator=1000), st.integers(0, 4)), min_size=1))
def test_median_of_counts_is_the_median_of_the_values_repeated(counted):
    values = [value for value, count in counted for _ in range(count)]
    assume(values)
    assert median_of_counts(counted) == median(values)


@pytest.mark.parametrize(("values", "expected_mad", "expected_mean_ad"), [
    ([1, 1, 2, 2, 4, 6, 9], Fraction(1), Fraction(15, 7)),  # median 2: deviations 1,1,0,0,2,4,7
    ([5, 5, 5, 5, 9], Fraction(0), Fraction(4, 5)),
])
def test_mad_and_mean_absolute_deviation(values, expected_mad, expected_mean_ad):
    assert mad(values) == expected_mad
    assert mean_absolute_deviation(values) == expected_mean_ad


# A team whose MAD (1) sets the scale: deviations 1,1,1,0,1,1,1 from the median 10, the mean
# deviation 6/7, so 1.253314 x 6/7 = 1.074 < 1/0.6745 = 1.483.
MAD_TEAM = [9, 9, 9, 10, 11, 11, 11]


@pytest.mark.parametrize(("value", "values", "floor", "expected_z", "basis"), [
    # 0.6745 (x - median) / MAD (Iglewicz & Hoaglin 1993)
    (11, MAD_TEAM, 0, Fraction("0.6745"), Basis.MAD),
    (10, MAD_TEAM, 0, Fraction(0), Basis.MAD),
    # A floor below MAD / 0.6745 (1.483 = 14.8% of the median 10) changes nothing ...
    (11, MAD_TEAM, Fraction("0.148"), Fraction("0.6745"), Basis.MAD),
    # ... one above it is the scale: (x - 10) / (0.15 x 10)
    (11, MAD_TEAM, Fraction("0.15"), Fraction(1, Fraction("1.5")), Basis.FLOOR),
    # MAD 1, but the far figure makes the mean deviation 15/7: 1.253314 x 15/7 = 2.686
    (9, [1, 1, 2, 2, 4, 6, 9], 0, 7 / (Fraction("1.253314") * Fraction(15, 7)),
     Basis.MEAN_ABSOLUTE_DEVIATION),
    # MAD 0 (over half the figures tie): the mean absolute deviation, as IBM SPSS does
    (9, [5, 5, 5, 5, 9], 0, 4 / (Fraction("1.253314") * Fraction(4, 5)),
     Basis.MEAN_ABSOLUTE_DEVIATION),
    # Every figure the same: no scale, no score, unless a floor gives one
    (5, [5, 5, 5, 5], 0, None, Basis.MAD),
    (5, [5, 5, 5, 5], Fraction("0.1"), Fraction(0), Basis.FLOOR),
])
def test_robust_spread_known_values(value, values, floor, expected_z, basis):
    assert robust_z(value, values, floor) == expected_z
    assert robust_spread(values, floor).basis is basis


TINY_MAD = [Fraction(n, 1000) for n in [1909] * 7 + [1910] * 7 + [1911] * 6]


@pytest.mark.parametrize(("floor", "expected_z", "basis"), [
    # The real failure: 1.55 visits a day against peers at 1.91 whose MAD is 0.001. On MAD
    # alone the nurse scores z -243 (the run that was seen: -27); the mean absolute deviation
    # (the peers' ties and her own distance) lifts the scale to 0.0222, still z -16; a floor of
    # 10% of the median (0.191) makes it z -1.88, an ordinary difference.
    (0, Fraction(-36, 100) * 21 / (Fraction("1.253314") * Fraction(373, 1000)),
     Basis.MEAN_ABSOLUTE_DEVIATION),
    (Fraction("0.10"), Fraction(-36, 100) / Fraction("0.191"), Basis.FLOOR),
    (Fraction("0.05"), Fraction(-36, 100) / Fraction("0.0955"), Basis.FLOOR),
])
def test_a_tiny_mad_cannot_make_an_ordinary_difference_extreme(floor, expected_z, basis):
    values = [*TINY_MAD, Fraction(155, 100)]
    spread = robust_spread(values, floor)
    assert mad(values) == Fraction(1, 1000)
    assert spread.z(Fraction(155, 100)) == expected_z
    assert spread.basis is basis
    # MAD alone would have made it extreme
    assert (Fraction(155, 100) - spread.centre) / (mad(values) / MAD_SCALE) < -240


def test_iglewicz_hoaglin_cut_off_separates_an_outlier():
    values = [10, 11, 12, 12, 13, 13, 14, 15, 40]
    scores = robust_scores(values)
    assert [score > Decimal("3.5") for score in scores] == [False] * 8 + [True]


figures = st.lists(st.integers(min_value=-10**6, max_value=10**6), min_size=1, max_size=30)
scales = st.fractions(min_value=Fraction(1, 1000), max_value=Fraction(1000))
shifts = st.fractions(min_value=-10**6, max_value=10**6)


@given(figures, st.integers(min_value=0, max_value=29), scales, shifts)
def test_robust_z_ignores_units_and_origin(values, pick, scale, shift):
    value = values[pick % len(values)]
    moved = [scale * x + shift for x in values]
    assert robust_z(scale * value + shift, moved) == robust_z(value, values)


@given(figures)
def test_robust_scores_match_one_at_a_time(values):
    assert robust_scores(values) == [robust_z(value, values) for value in values]


floors = st.fractions(min_value=0, max_value=1)


@given(figures, floors)
def test_the_scale_is_never_below_any_of_its_three_estimates(values, floor):
    spread = robust_spread(values, floor)
    assume(spread.scale is not None)
    assert spread.scale >= mad(values) / MAD_SCALE
    assert spread.scale >= MEAN_AD_SCALE * mean_absolute_deviation(values)
    assert spread.scale >= floor * abs(median(values))


@given(figures, st.integers(min_value=0, max_value=29), floors,
       st.fractions(min_value=Fraction(1, 1000), max_value=Fraction(1000)))
def test_a_floored_z_ignores_units(values, pick, floor, scale):
    value = values[pick % len(values)]
    assert (robust_z(scale * value, [scale * x for x in values], floor)
            == robust_z(value, values, floor))


@given(figures, st.integers(min_value=0, max_value=29),
       st.fractions(min_value=Fraction(1, 100), max_value=1))
def test_a_floor_bounds_the_z_by_the_relative_difference(values, pick, floor):
    value, centre = values[pick % len(values)], median(values)
    assume(centre != 0)
    z = robust_z(value, values, floor)
    assert abs(z) <= abs(value - centre) / (floor * abs(centre))


@given(figures, st.integers(min_value=0, max_value=29))
def test_robust_z_sign_follows_the_median(values, pick):
    value = values[pick % len(values)]
    z = robust_z(value, values)
    assume(z is not None)
    assert (z > 0) == (value > median(values))
    assert (z < 0) == (value < median(values))


@pytest.mark.parametrize(("successes", "trials", "p", "expected"), [
    (0, 10, Fraction(1, 2), Fraction(1)),
    (11, 10, Fraction(1, 2), Fraction(0)),
    (10, 10, Fraction(1, 2), Fraction(1, 1024)),
    (1, 3, Fraction(1, 3), 1 - Fraction(2, 3) ** 3),
    (2, 4, Fraction(1, 4), Fraction(6 * 9 + 4 * 3 + 1, 256)),
    (3, 5, Fraction(0), Fraction(0)),
    (3, 5, Fraction(1), Fraction(1)),
])
def test_binomial_upper_tail_known_values(successes, trials, p, expected):
    assert binomial_upper_tail(successes, trials, p) == expected


@pytest.mark.parametrize(("p", "trials"), [(Fraction(3, 2), 5), (Fraction(-1, 2), 5),
                                           (Fraction(1, 2), -1)])
def test_binomial_upper_tail_refuses_nonsense(p, trials):
    with pytest.raises(ValueError):
        binomial_upper_tail(1, trials, p)


probabilities = st.fractions(min_value=0, max_value=1, max_denominator=60)


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=60),
       probabilities)
def test_binomial_tail_falls_as_successes_rise(successes, trials, p):
    assert (binomial_upper_tail(successes + 1, trials, p)
            <= binomial_upper_tail(successes, trials, p))


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=40),
       probabilities, probabilities)
def test_binomial_tail_rises_with_p(successes, trials, p, q):
    low, high = sorted((p, q))
    assert binomial_upper_tail(successes, trials, low) <= binomial_upper_tail(
        successes, trials, high)


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=40),
       probabilities)
def test_binomial_tail_and_its_complement_sum_to_one(successes, trials, p):
    below = sum((math.comb(trials, i) * p ** i * (1 - p) ** (trials - i)
                 for i in range(min(successes, trials + 1))), Fraction(0))
    assert binomial_upper_tail(successes, trials, p) + below == 1


@pytest.mark.parametrize(("value", "places", "expected"), [
    (Fraction(2, 3), 3, Decimal("0.667")),
    (Fraction(5, 2), 0, Decimal("2")),  # half to even
    (Decimal("1.25"), 1, Decimal("1.2")),
])
def test_rounded(value, places, expected):
    assert rounded(value, places) == expected
    assert str(rounded(value, places)) == str(expected)


def test_significant_keeps_tiny_probabilities_readable():
    assert significant(Fraction(1, 3 * 10**12)) == Decimal("3.33E-13")
