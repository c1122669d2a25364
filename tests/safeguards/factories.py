"""Plain facts for rule tests: a clean default for each, changed field by field in the test."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from safeguards import (
    RULE_ERROR,
    BagHolding,
    BagShift,
    Count,
    DeviceClock,
    Dose,
    EvvEvent,
    Facts,
    Finding,
    Loss,
    Phase,
    Policy,
    Registry,
    Visit,
    Waste,
    run,
)
from safeguards.facts import CustodyRefusal

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
AS_OF = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
ORG = "org-1"
INDUCTION = Phase("induction", min_interval_hours=48, max_per_7_days=2, max_per_28_days=8)
# A patient's home and a point 1 km due north of it (1 km is 0.008993 degrees of latitude).
HOME = (Decimal("40.712800"), Decimal("-74.006000"))
NORTH_1KM = (Decimal("40.721793"), Decimal("-74.006000"))


def facts(**fields) -> Facts:
    """Return an organisation's facts as of AS_OF, with `fields` set."""
    return Facts(organisation_id=ORG, as_of=fields.pop("as_of", AS_OF), **fields)


def found(registry: Registry, given: Facts, overrides: dict | None = None) -> list[Finding]:
    """Return what `registry` finds in `given`, failing on any rule that crashed."""
    findings = run(registry, given, Policy().with_overrides(overrides or {}))
    assert RULE_ERROR.id not in {finding.rule_id for finding in findings}
    return findings


def ids(findings: list[Finding]) -> list[str]:
    """Return the rule ids of `findings`, sorted."""
    return sorted(finding.rule_id for finding in findings)


def dose(number: int = 1, at: datetime = T0, **fields) -> Dose:
    """Return dose `number` of patient-1 by nurse-1: 35 mg, as planned, from a 50 mg vial."""
    defaults = dict(
        id=f"dose-{number}", patient_id="patient-1", nurse_id="nurse-1",
        visit_id=f"visit-{number}", device_id="device-1", plan_version_id="plan-1",
        given_at=at, received_at=at + timedelta(minutes=5), quantity_ug=35_000,
        ug_per_kg=Decimal("500"), planned_ug=35_000, plan_max_ug=70_000, container_ug=50_000,
        lot="LOT-1", phase=INDUCTION, infusion_ended_at=at + timedelta(minutes=40),
        product_id="product-1", route="IV", plan_product_id="product-1", plan_route="IV",
        custody_entry_id=f"entry-{number}")
    return Dose(**{**defaults, **fields})


def visit(number: int = 1, at: datetime = T0, **fields) -> Visit:
    """Return visit `number`, scheduled for 3 h from 10 min before `at`, completed."""
    start = at - timedelta(minutes=10)
    defaults = dict(
        id=f"visit-{number}", patient_id="patient-1", nurse_id="nurse-1",
        scheduled_start=start, scheduled_end=start + timedelta(hours=3), status="completed",
        series=True, checked_in_at=start, checked_out_at=start + timedelta(minutes=170),
        plan_infusion_minutes=40)
    return Visit(**{**defaults, **fields})


def waste(number: int = 1, at: datetime = T0 + timedelta(minutes=45), **fields) -> Waste:
    """Return a witnessed waste of the 15 mg left in visit `number`'s vial."""
    defaults = dict(
        id=f"waste-{number}", nurse_id="nurse-1", visit_id=f"visit-{number}",
        patient_id="patient-1", quantity_ug=15_000, occurred_at=at,
        received_at=at + timedelta(minutes=5), witness_ids=("nurse-2",), lot="LOT-1")
    return Waste(**{**defaults, **fields})


def evv(kind: str = "check_in", at: datetime = T0, visit_number: int = 1,
        where: tuple[Decimal, Decimal] = HOME, **fields) -> EvvEvent:
    """Return a check-in or check-out for visit `visit_number`, at `where`, 20 m from home."""
    defaults = dict(
        id=f"evv-{visit_number}-{kind}", visit_id=f"visit-{visit_number}", nurse_id="nurse-1",
        patient_id=f"patient-{visit_number}", device_id="device-1", kind=kind,
        occurred_at=at, received_at=at, latitude=where[0], longitude=where[1],
        accuracy_m=10, distance_m=20, radius_m=250)
    return EvvEvent(**{**defaults, **fields})


def shift(**fields) -> BagShift:
    """Return nurse-1's balanced bag of LOT-1 for 2026-11-30, its deadline passed."""
    defaults = dict(
        nurse_id="nurse-1", shift_day="2026-11-30", lot="LOT-1", product_id="product-1",
        deadline=AS_OF - timedelta(hours=1), dispensed_ug=100_000, administered_ug=70_000,
        wasted_ug=30_000, returned_ug=0, remaining_ug=0)
    return BagShift(**{**defaults, **fields})


def holding(**fields) -> BagHolding:
    """Return 50 mg of LOT-1 in nurse-1's bag, due back at AS_OF."""
    defaults = dict(nurse_id="nurse-1", lot="LOT-1", product_id="product-1",
                    quantity_ug=50_000, due_back_at=AS_OF)
    return BagHolding(**{**defaults, **fields})


def refusal(number: int = 1, at: datetime = AS_OF - timedelta(hours=1),
            **fields) -> CustodyRefusal:
    """Return nurse-1's return of LOT-1 refused for a wrong seal, an hour before AS_OF."""
    defaults = dict(id=f"refusal-{number}", nurse_id="nurse-1", at=at, kind="return",
                    code="seal_mismatch", actor_id="nurse-1", device_id="device-1",
                    holder="bag:nurse-1", lot="LOT-1", quantity_ug=10_000)
    return CustodyRefusal(**{**defaults, **fields})


def count(**fields) -> Count:
    """Return a count of nurse-1's bag that matches the ledger."""
    defaults = dict(
        id="count-1", holder="bag:nurse-1", lot="LOT-1", product_id="product-1",
        counted_at=AS_OF - timedelta(hours=2), counted_by_id="pharmacist-1",
        expected_ug=50_000, counted_ug=50_000, nurse_id="nurse-1")
    return Count(**{**defaults, **fields})


def loss(**fields) -> Loss:
    """Return a loss from nurse-1's bag discovered 2 days before AS_OF, nothing yet overdue."""
    discovered = AS_OF - timedelta(days=2)
    defaults = dict(
        id="loss-1", entry_id="entry-9", holder="bag:nurse-1", lot="LOT-1",
        quantity_ug=15_000, discovered_at=discovered,
        notice_due_at=discovered + timedelta(days=3), form_106_due_at=discovered + timedelta(
            days=45), nurse_id="nurse-1")
    return Loss(**{**defaults, **fields})


def clock(**fields) -> DeviceClock:
    """Return device-1's clock, 2 s ahead at most."""
    defaults = dict(device_id="device-1", nurse_id="nurse-1", events=40, max_lead_seconds=2)
    return DeviceClock(**{**defaults, **fields})


def doses_every(days: float, number: int, start: datetime = T0, **fields) -> list[Dose]:
    """Return `number` doses of patient-1, `days` apart, each with its own visit."""
    return [dose(n, start + timedelta(days=days * (n - 1)), **fields)
            for n in range(1, number + 1)]


def with_quantities(doses: list[Dose], quantities: list[int]) -> list[Dose]:
    """Return `doses` with their micrograms set in order."""
    return [replace(d, quantity_ug=q) for d, q in zip(doses, quantities, strict=True)]
