"""The population scan's dose trends read per-patient series summed up in the database, and find
exactly what they find in every dose loaded one by one."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from backend.administration.models import DoseRecord
from backend.plans.service import active_version
from backend.policy.service import policy_for
from backend.scan import loaders
from backend.scan.loaders import Scope
from backend.visits.models import Visit, VisitStatus
from safeguards import facts as f
from safeguards.rules.dosing import creep
from safeguards.rules.plausibility import mg_rise_flat_per_kg
from tests.factories import Pharmacy, World

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FIRST = datetime(2026, 9, 1, 15, 0, tzinfo=UTC)


def _give(world: World, pharmacy: Pharmacy, patient_id: str, at: datetime, quantity_ug: int,
          weight_g: int | None) -> None:
    """Store a visit and its dose as a phone's sync would, without the API's checks."""
    version = active_version(world.session, uuid.UUID(patient_id))
    visit = Visit(organisation_id=pharmacy.org.id, patient_id=uuid.UUID(patient_id),
                  nurse_id=pharmacy.nurse.id, plan_version_id=version.id, phase_ordinal=0,
                  scheduled_start=at, scheduled_end=at + timedelta(hours=2),
                  status=VisitStatus.COMPLETED, created_at=at, created_by_id=pharmacy.nurse.id,
                  updated_at=at)
    world.session.add(visit)
    world.session.flush()
    per_kg = (Decimal(quantity_ug * 1000) / weight_g).quantize(Decimal("0.001")) if weight_g \
        else None
    world.session.add(DoseRecord(
        organisation_id=pharmacy.org.id, visit_id=visit.id, nurse_id=pharmacy.nurse.id,
        device_id=pharmacy.device_id, device_signature="-", signed_body_enc="-",
        signed_body_sha256="-", occurred_at=at, received_at=at, plan_version_id=version.id,
        product_id=uuid.UUID(pharmacy.product_id), lot="L1", expiry=date(2028, 1, 31),
        quantity_ug=quantity_ug, route="IV", infusion_started_at=at,
        infusion_ended_at=at + timedelta(minutes=40), weight_g=weight_g, ug_per_kg=per_kg))


def _patients(world: World, pharmacy: Pharmacy, rng: random.Random) -> list[str]:
    """Give four patients twelve weeks of doses: steady, creeping, heavier by the dose and
    unweighed, with repeated figures and doses at the same moment."""
    patients = [pharmacy.patient_id] + [pharmacy.patient([pharmacy.nurse]) for _ in range(3)]
    for patient_id in patients:
        pharmacy.plan(patient_id)
    for week in range(12):
        at = FIRST + timedelta(weeks=week)
        late = week >= 9
        _give(world, pharmacy, patients[0], at, rng.choice((35_000, 35_000, 34_500)), 70_000)
        _give(world, pharmacy, patients[1], at, 50_000 if late else 35_000, 70_000)
        weight = 80_000 if late else 70_000
        _give(world, pharmacy, patients[2], at, weight // 2, weight)
        # Two doses recorded at one moment: the id decides which is the later.
        _give(world, pharmacy, patients[3], at, rng.choice((30_000, 45_000)), None)
        _give(world, pharmacy, patients[3], at, 30_000 if week < 8 else 60_000, None)
    world.commit()
    return patients


def _findings(facts: f.Facts, policy) -> list:
    found = [*creep(facts, policy), *mg_rise_flat_per_kg(facts, policy)]
    return sorted(found, key=lambda finding: (finding.rule_id, finding.subject.id))


def test_the_trends_find_the_same_in_the_summed_series_as_in_every_dose(world: World):
    pharmacy = Pharmacy(world)
    patients = _patients(world, pharmacy, random.Random(7))
    scope = Scope(pharmacy.org.id, NOW, NOW - timedelta(days=90))
    policy = policy_for(world.session, pharmacy.org.id)
    doses = tuple(loaders._dose(row, {}) for row in loaders._doses(world.session, scope))
    every = f.Facts(organisation_id=str(pharmacy.org.id), as_of=NOW, doses=doses)
    series = tuple(loaders._dose_series(world.session, scope, 3))
    summed = replace(every, doses=(), dose_series=series)
    assert len(doses) == 60 and sum(one.doses for one in series) == 60
    # The earlier doses left the database as tallies, their repeated figures counted once.
    assert all(one.earlier for one in series)
    assert sum(len(one.earlier) for one in series) < 60 - 4 * 3
    found = _findings(every, policy)
    assert {(one.rule_id, one.subject.id) for one in found} >= {
        ("dosing.creep", patients[1]), ("plausibility.mg_rise_flat_per_kg", patients[2])}
    assert _findings(summed, policy) == found

