"""The population loader's peer sums: doses against their own plans and the recent waste split,
summed in the database from what the API recorded."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

from backend.accounts.models import Role
from backend.scan.loaders import Scope, load_population
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.backend.scan.test_scan import AFTER, _later, _waste
from tests.factories import World


def _given(world: World, quantity_ug: int) -> Session:
    """Return a visit whose nurse gave `quantity_ug` of a 35 mg plan (0.5 mg/kg at 70 kg)."""
    visit = Session(world, stock_ug=1_000_000)
    _later(world, visit)
    assert visit.post("pre-dose", visit.signed(PRE)).status_code == 201
    given = visit.post("dose", visit.signed(dose(visit.pharmacy.product_id, quantity_ug)))
    assert given.status_code == 201, given.json
    return visit


def _activity(world: World, visit: Session, as_of):
    population = load_population(world.session, Scope(visit.pharmacy.org.id, as_of,
                                                       as_of - timedelta(days=90)), 2)
    nurse = str(visit.pharmacy.users[Role.NURSE].id)
    [activity] = [one for one in population.activity if one.nurse_id == nurse]
    return activity


def test_a_dose_is_summed_against_its_own_plan_and_her_recent_waste_apart(world: World):
    visit = _given(world, 28_000)
    assert _waste(visit, 12_000).status_code == 201
    activity = _activity(world, visit, AFTER)
    assert (activity.planned_doses, activity.planned_given_ug, activity.planned_ug) == (
        1, 28_000, 35_000)
    assert activity.plan_ratio == Fraction(4, 5)
    # The dose and the waste fall in the last waste_share_recent_days (14) of the window.
    assert activity.recent_since == AFTER - timedelta(days=14)
    assert (activity.recent_doses, activity.recent_administered_ug,
            activity.recent_wasted_ug) == (1, 28_000, 12_000)
    assert activity.waste_share == Fraction(12_000, 40_000)
    # What the plan left: a 500 mg vial (10 mL of 50 mg/mL) less the 35 mg plan, summed in
    # the database; her 12 mg wasted are a small share of it.
    assert (activity.planned_remainder_ug, activity.recent_planned_remainder_ug) == (
        465_000, 465_000)
    assert activity.waste_of_remainder == Fraction(12_000, 465_000)
    assert activity.recent_waste_of_remainder == Fraction(12_000, 465_000)
    assert (activity.recent_planned_doses, activity.recent_planned_given_ug,
            activity.recent_planned_ug) == (1, 28_000, 35_000)
    assert activity.earlier_doses == 0


def test_three_weeks_later_the_dose_is_her_earlier_history(world: World):
    visit = _given(world, 35_000)
    assert _waste(visit, 15_000).status_code == 201
    activity = _activity(world, visit, AFTER + timedelta(days=21))
    assert (activity.recent_doses, activity.recent_administered_ug,
            activity.recent_wasted_ug) == (0, 0, 0)
    assert activity.earlier_doses == 1
    assert activity.earlier_wasted_per_given == Fraction(15_000, 35_000)
    assert (activity.planned_remainder_ug, activity.recent_planned_remainder_ug) == (465_000, 0)
    assert activity.earlier_waste_of_remainder == Fraction(15_000, 465_000)
    assert activity.recent_waste_of_remainder is None
    assert activity.plan_ratio == 1
    assert activity.recent_planned_doses == 0
    assert activity.recent_plan_ratio is None
