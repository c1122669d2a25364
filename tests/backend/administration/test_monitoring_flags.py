"""A recorded session is checked by the monitoring rules, and each finding flagged once."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from backend import changes
from backend.flags.models import Flag
from backend.scan.judge import settle
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.factories import World

MONITORING_RULES = ("monitoring.", "dosing.above_")


def at(minute: int) -> str:
    """Return the time `minute` minutes after the dose in `dose()` began (15:10)."""
    hours, minutes = divmod(10 + minute, 60)
    return f"2026-11-03T{15 + hours:02d}:{minutes:02d}:00+00:00"


def monitoring_flags(world: World, visit: Session) -> dict[str, Flag]:
    """Return the visit's monitoring and dosing flags by rule id."""
    flags = world.session.scalars(select(Flag).where(Flag.subject_id == visit.visit["id"]))
    return {flag.rule_id: flag for flag in flags if flag.rule_id.startswith(MONITORING_RULES)}


def whole_session(visit: Session, pre: dict, observed: list[int], discharged: int,
                  **discharge) -> dict:
    """Return a signed whole session: observations and discharge at minutes after the dose."""
    return {"pre_dose": visit.signed(pre),
            "dose": visit.signed(dose(visit.pharmacy.product_id)),
            "observations": [visit.signed({"occurred_at": at(m), "systolic": 126,
                                           "diastolic": 80, "moaas": 5}) for m in observed],
            "discharge": visit.signed({"occurred_at": at(discharged), "systolic": 124,
                                       "diastolic": 80, "moaas": 5, "state": "baseline",
                                       "adverse_event_category": "none", **discharge})}


def test_a_session_monitored_by_the_book_raises_no_monitoring_flag(world: World):
    visit = Session(world)
    body = whole_session(visit, PRE, list(range(15, 121, 15)), 120)
    assert visit.post("session", body).status_code == 201
    assert monitoring_flags(world, visit) == {}


def test_a_session_raises_the_flags_its_rules_find(world: World):
    visit = Session(world)
    body = whole_session(visit, {**PRE, "systolic": 150}, [45], 80, moaas=4)
    assert visit.post("session", body).status_code == 201
    flags = monitoring_flags(world, visit)
    assert sorted(flags) == ["monitoring.bp_hold_without_justification",
                             "monitoring.discharge_not_recovered",
                             "monitoring.early_discharge", "monitoring.missing_observations"]
    assert flags["monitoring.early_discharge"].evidence["minutes_monitored"] == "80.0"
    assert flags["monitoring.missing_observations"].evidence["required"] == 5
    assert {flag.subject_kind for flag in flags.values()} == {"visit"}


def test_records_sent_one_by_one_are_flagged_once_each(world: World):
    visit = Session(world)
    assert visit.post("pre-dose", visit.signed({**PRE, "systolic": 150})).status_code == 201
    assert visit.post("dose", visit.signed(dose(visit.pharmacy.product_id))).status_code == 201
    assert visit.post("observations", visit.signed(
        {"occurred_at": at(40), "systolic": 190, "diastolic": 95})).status_code == 201
    assert sorted(monitoring_flags(world, visit)) == [
        "monitoring.alarming_vitals", "monitoring.bp_hold_without_justification"]
    changes.visit_session(world.session, visit.pharmacy.org.id, uuid.UUID(visit.visit["id"]))
    settle(world.session, world.rt)
    flags = world.session.scalars(select(Flag).where(Flag.subject_id == visit.visit["id"]))
    by_rule = [flag.rule_id for flag in flags if flag.rule_id.startswith(MONITORING_RULES)]
    assert sorted(by_rule) == ["monitoring.alarming_vitals",
                               "monitoring.bp_hold_without_justification"]
    held = monitoring_flags(world, visit)["monitoring.bp_hold_without_justification"]
    # Re-checked after each record, it is one event of its case: re-checks are not counted.
    assert held.occurrences == 1
