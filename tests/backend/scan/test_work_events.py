"""The scan reads each visit's first work event, chosen in the database, and its hours rules find
exactly what they find in every dose, check-in and bag movement read one by one."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.administration.models import DoseRecord
from backend.custody.models import CustodyEntry
from backend.scan import loaders
from backend.scan.loaders import BAG_WORK, Scope
from backend.visits.models import EvvEvent, Visit
from safeguards import facts as f
from safeguards.engine import run
from safeguards.policy import Policy
from safeguards.rules.hours import HOURS, occasions
from tests.backend.scan.test_hours_scan import _at, _visits_at
from tests.factories import World


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _every_event(session: Session, org: uuid.UUID, since: datetime,
                 until: datetime) -> list[f.WorkEvent]:
    """Return every dose, check-in and bag movement in the window, one by one: the scan's
    reading before the database picked each visit's first."""
    doses = session.execute(
        select(DoseRecord.id, DoseRecord.nurse_id, DoseRecord.infusion_started_at,
               DoseRecord.visit_id, Visit.patient_id)
        .join(Visit, Visit.id == DoseRecord.visit_id)
        .where(DoseRecord.organisation_id == org, DoseRecord.infusion_started_at >= since,
               DoseRecord.infusion_started_at <= until))
    found = [f.WorkEvent(id=str(row.id), kind="dose", nurse_id=str(row.nurse_id),
                         occurred_at=row.infusion_started_at, patient_id=str(row.patient_id),
                         visit_id=str(row.visit_id)) for row in doses]
    check_ins = session.execute(
        select(EvvEvent.id, EvvEvent.nurse_id, EvvEvent.occurred_at, EvvEvent.visit_id,
               Visit.patient_id, EvvEvent.reason_enc.is_not(None).label("has_reason"))
        .join(Visit, Visit.id == EvvEvent.visit_id)
        .where(EvvEvent.organisation_id == org, EvvEvent.kind == "check_in",
               EvvEvent.occurred_at >= since, EvvEvent.occurred_at <= until))
    found += [f.WorkEvent(id=str(row.id), kind="check_in", nurse_id=str(row.nurse_id),
                          occurred_at=row.occurred_at, patient_id=str(row.patient_id),
                          visit_id=str(row.visit_id), has_reason=bool(row.has_reason))
              for row in check_ins]
    moves = session.execute(
        select(CustodyEntry.id, CustodyEntry.kind, CustodyEntry.from_holder,
               CustodyEntry.to_holder, CustodyEntry.occurred_at, CustodyEntry.visit_id,
               Visit.patient_id)
        .outerjoin(Visit, Visit.id == CustodyEntry.visit_id)
        .where(CustodyEntry.organisation_id == org, CustodyEntry.kind.in_(BAG_WORK),
               CustodyEntry.occurred_at >= since, CustodyEntry.occurred_at <= until,
               CustodyEntry.from_holder.like("bag:%") | CustodyEntry.to_holder.like("bag:%")))
    return found + [f.WorkEvent(id=str(row.id), kind=str(row.kind),
                                nurse_id=loaders._bag_nurse(row.from_holder, row.to_holder),
                                occurred_at=row.occurred_at, patient_id=_text(row.patient_id),
                                visit_id=_text(row.visit_id)) for row in moves]


def _occasions(facts: f.Facts) -> list[tuple]:
    # What the rules read of an occasion: a visit's kinds matter only to tell it from the vault.
    return [(o.id, o.nurse_id, o.patient_id, o.visit_id, o.started_at, o.local_minute,
             o.has_reason, o.at_vault) for o in occasions(facts)]


def test_the_hours_rules_find_the_same_in_each_visit_s_first_event_as_in_every_event(
        world: World):
    pharmacy = _visits_at(world, 22, 30)
    now = _at(12, 9)
    scope = Scope(pharmacy.org.id, now, now - timedelta(days=30))
    every = f.Facts(organisation_id=str(pharmacy.org.id), as_of=now,
                    timezone=pharmacy.org.timezone,
                    work_events=tuple(_every_event(world.session, pharmacy.org.id, scope.since,
                                                   now)))
    first = replace(every, work_events=tuple(loaders._work_events(world.session, scope)))
    # Three visits of a check-in, a dose and an administer each, and the kit's dispense.
    assert (len(every.work_events), len(first.work_events)) == (10, 4)
    assert _occasions(first) == _occasions(every)
    found = sorted(run(HOURS, every, Policy()), key=lambda one: one.dedup_key)
    assert {one.rule_id for one in found} == {"hours.outside_service_hours"}
    assert sorted(run(HOURS, first, Policy()), key=lambda one: one.dedup_key) == found
