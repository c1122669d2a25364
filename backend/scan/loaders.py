"""Turn an organisation's rows into safeguards facts, in a few wide reads rather than per row."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

from backend.accounts.models import Organisation, Role, User
from backend.administration.models import DoseRecord, QuarantinedEvent
from backend.custody.models import CustodyEntry, Kind, LossReport
from backend.plans.models import PlanPhase, PlanVersion, TreatmentPlan
from backend.products.models import DrugProduct
from backend.visits.models import EvvEvent, Visit, VisitStatus
from safeguards import facts as f

# The 28-day limit and a dose's interval look back this far before the scan window.
CONTEXT = timedelta(days=28)
# Visits that happened (or were meant to, for the activity and travel rules).
WORKED = (VisitStatus.COMPLETED, VisitStatus.CHECKED_IN)


@dataclass(frozen=True)
class Scope:
    """What to load: one organisation, a window, and optionally one patient or one nurse."""

    organisation_id: uuid.UUID
    as_of: datetime
    since: datetime
    patient_id: uuid.UUID | None = None
    nurse_id: uuid.UUID | None = None

    @property
    def context_since(self) -> datetime:
        """Return the start of what is read: the window plus the rules' look-back."""
        return self.since - CONTEXT


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _planned_ug(dose_ug: int | None, ug_per_kg: int | None, weight_g: int | None) -> int | None:
    if dose_ug is not None:
        return dose_ug
    if ug_per_kg is not None and weight_g:
        return ug_per_kg * weight_g // 1000
    return None


def _doses(session: Session, scope: Scope) -> list[Any]:
    phase = aliased(PlanPhase)
    query = (
        select(DoseRecord.id, Visit.patient_id, DoseRecord.nurse_id, DoseRecord.visit_id,
               DoseRecord.device_id, DoseRecord.plan_version_id, DoseRecord.infusion_started_at,
               DoseRecord.infusion_ended_at, DoseRecord.occurred_at, DoseRecord.received_at,
               DoseRecord.quantity_ug, DoseRecord.ug_per_kg, DoseRecord.weight_g, DoseRecord.lot,
               PlanVersion.max_dose_ug, PlanVersion.dose_ug, PlanVersion.dose_ug_per_kg,
               phase.name, phase.min_interval_hours, phase.max_per_7_days, phase.max_per_28_days,
               phase.dose_ug.label("phase_dose_ug"),
               phase.dose_ug_per_kg.label("phase_ug_per_kg"),
               DrugProduct.ug_per_unit, DrugProduct.units_per_container, DoseRecord.product_id,
               DoseRecord.route, DoseRecord.custody_entry_id,
               PlanVersion.product_id.label("plan_product_id"),
               PlanVersion.route.label("plan_route"))
        .join(Visit, Visit.id == DoseRecord.visit_id)
        .join(PlanVersion, PlanVersion.id == DoseRecord.plan_version_id)
        .join(DrugProduct, DrugProduct.id == DoseRecord.product_id)
        .outerjoin(phase, and_(phase.version_id == Visit.plan_version_id,
                               phase.ordinal == Visit.phase_ordinal))
        .where(DoseRecord.organisation_id == scope.organisation_id,
               DoseRecord.infusion_started_at >= scope.context_since))
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(DoseRecord.nurse_id == scope.nurse_id)
    return list(session.execute(query))


def _dose(row: Any, phases: dict[tuple, f.Phase]) -> f.Dose:
    phase = None
    if row.name is not None:
        key = (row.name, row.min_interval_hours, row.max_per_7_days, row.max_per_28_days)
        phase = phases.get(key) or phases.setdefault(key, f.Phase(*key))
    planned = (_planned_ug(row.phase_dose_ug, row.phase_ug_per_kg, row.weight_g)
               or _planned_ug(row.dose_ug, row.dose_ug_per_kg, row.weight_g))
    return f.Dose(
        id=str(row.id), patient_id=str(row.patient_id), nurse_id=str(row.nurse_id),
        visit_id=_text(row.visit_id), device_id=_text(row.device_id),
        plan_version_id=_text(row.plan_version_id), given_at=row.infusion_started_at,
        received_at=row.received_at, quantity_ug=row.quantity_ug, ug_per_kg=row.ug_per_kg,
        planned_ug=planned, plan_max_ug=row.max_dose_ug,
        container_ug=int(row.ug_per_unit * Decimal(row.units_per_container)), lot=row.lot,
        phase=phase, infusion_ended_at=row.infusion_ended_at,
        product_id=str(row.product_id), route=row.route,
        plan_product_id=str(row.plan_product_id), plan_route=row.plan_route,
        custody_entry_id=_text(row.custody_entry_id))


def _wastes(session: Session, scope: Scope) -> list[f.Waste]:
    query = (
        select(CustodyEntry.id, CustodyEntry.actor_id, CustodyEntry.visit_id, Visit.patient_id,
               CustodyEntry.quantity_ug, CustodyEntry.occurred_at, CustodyEntry.received_at,
               CustodyEntry.confirmations, CustodyEntry.lot)
        .outerjoin(Visit, Visit.id == CustodyEntry.visit_id)
        .where(CustodyEntry.organisation_id == scope.organisation_id,
               CustodyEntry.kind == Kind.WASTE,
               CustodyEntry.occurred_at >= scope.context_since))
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(CustodyEntry.actor_id == scope.nurse_id)
    return [f.Waste(id=str(row.id), nurse_id=str(row.actor_id), visit_id=_text(row.visit_id),
                    patient_id=_text(row.patient_id), quantity_ug=row.quantity_ug,
                    occurred_at=row.occurred_at, received_at=row.received_at,
                    witness_ids=tuple(c["user_id"] for c in row.confirmations or ()),
                    lot=row.lot)
            for row in session.execute(query)]


def _visits(session: Session, scope: Scope) -> list[f.Visit]:
    query = (
        select(Visit.id, Visit.patient_id, Visit.nurse_id, Visit.scheduled_start,
               Visit.scheduled_end, Visit.status, Visit.override_reason, Visit.series_id,
               Visit.created_at, Visit.checked_in_at, Visit.checked_out_at,
               Visit.override_by_id, Visit.status_reason, PlanVersion.infusion_minutes)
        .join(PlanVersion, PlanVersion.id == Visit.plan_version_id)
        .where(Visit.organisation_id == scope.organisation_id,
               Visit.scheduled_start >= scope.context_since))
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(Visit.nurse_id == scope.nurse_id)
    return [f.Visit(id=str(row.id), patient_id=str(row.patient_id), nurse_id=str(row.nurse_id),
                    scheduled_start=row.scheduled_start, scheduled_end=row.scheduled_end,
                    status=str(row.status), override=row.override_reason is not None,
                    override_reason=row.override_reason,
                    override_by_id=_text(row.override_by_id), status_reason=row.status_reason,
                    series=row.series_id is not None, created_at=row.created_at,
                    checked_in_at=row.checked_in_at, checked_out_at=row.checked_out_at,
                    plan_infusion_minutes=row.infusion_minutes)
            for row in session.execute(query)]


def _evv(session: Session, scope: Scope) -> list[f.EvvEvent]:
    query = (
        select(EvvEvent.id, EvvEvent.visit_id, EvvEvent.nurse_id, Visit.patient_id,
               EvvEvent.device_id, EvvEvent.kind, EvvEvent.occurred_at, EvvEvent.received_at,
               EvvEvent.latitude, EvvEvent.longitude, EvvEvent.accuracy_m, EvvEvent.distance_m,
               EvvEvent.radius_m, EvvEvent.reason)
        .join(Visit, Visit.id == EvvEvent.visit_id)
        .where(EvvEvent.organisation_id == scope.organisation_id,
               EvvEvent.received_at >= scope.since, EvvEvent.received_at <= scope.as_of))
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(EvvEvent.nurse_id == scope.nurse_id)
    return [f.EvvEvent(id=str(row.id), visit_id=str(row.visit_id), nurse_id=str(row.nurse_id),
                       patient_id=str(row.patient_id), device_id=_text(row.device_id),
                       kind=row.kind, occurred_at=row.occurred_at, received_at=row.received_at,
                       latitude=row.latitude, longitude=row.longitude,
                       accuracy_m=row.accuracy_m, distance_m=row.distance_m,
                       radius_m=row.radius_m, reason=row.reason)
            for row in session.execute(query)]


def loss_fact(report: LossReport, holder: str, lot: str, quantity_ug: int) -> f.Loss:
    """Return a loss report as the rules see it."""
    nurse = holder.removeprefix("bag:") if holder.startswith("bag:") else None
    return f.Loss(id=str(report.id), entry_id=str(report.entry_id), holder=holder, lot=lot,
                  quantity_ug=quantity_ug, discovered_at=report.discovered_at,
                  notice_due_at=report.notice_due_at, form_106_due_at=report.form_106_due_at,
                  notice_filed_at=report.notice_filed_at,
                  form_106_filed_at=report.form_106_filed_at, nurse_id=nurse)


def _losses(session: Session, organisation_id: uuid.UUID, *where: Any) -> list[f.Loss]:
    rows = session.execute(
        select(LossReport, CustodyEntry.from_holder, CustodyEntry.lot, CustodyEntry.quantity_ug)
        .join(CustodyEntry, CustodyEntry.id == LossReport.entry_id)
        .where(LossReport.organisation_id == organisation_id, *where))
    return [loss_fact(*row) for row in rows]


def open_losses(session: Session, organisation_id: uuid.UUID) -> list[f.Loss]:
    """Return the organisation's loss reports that still wait for a filing."""
    return _losses(session, organisation_id, LossReport.notice_filed_at.is_(None)
                   | LossReport.form_106_filed_at.is_(None))


def _quarantined(session: Session, scope: Scope) -> list[f.QuarantinedEvent]:
    query = select(QuarantinedEvent).where(
        QuarantinedEvent.organisation_id == scope.organisation_id,
        QuarantinedEvent.received_at >= scope.since, QuarantinedEvent.received_at <= scope.as_of)
    if scope.nurse_id:
        query = query.where(QuarantinedEvent.user_id == scope.nurse_id)
    return [quarantined_fact(row) for row in session.scalars(query)]


def quarantined_fact(row: QuarantinedEvent) -> f.QuarantinedEvent:
    """Return a quarantined record as the rules see it."""
    return f.QuarantinedEvent(id=str(row.id), record_type=row.record_type,
                              record_id=row.record_id, user_id=str(row.user_id),
                              device_id=_text(row.device_id), visit_id=_text(row.visit_id),
                              reason=row.reason, received_at=row.received_at)


def _clocks(dose_rows: Iterable[Any], evv: Iterable[f.EvvEvent]) -> list[f.DeviceClock]:
    """Return each device's largest lead of its own clock over the server's receipt."""
    seen: dict[str, list] = {}
    for device, nurse, event, occurred, received in (
            *((_text(r.device_id), str(r.nurse_id), str(r.id), r.occurred_at, r.received_at)
              for r in dose_rows),
            *((e.device_id, e.nurse_id, e.id, e.occurred_at, e.received_at) for e in evv)):
        if device is None:
            continue
        lead = int((occurred - received).total_seconds())
        held = seen.setdefault(device, [nurse, 0, lead, event, received])
        held[1] += 1
        if lead > held[2]:
            held[2], held[3] = lead, event
        held[4] = max(held[4], received)
    return [f.DeviceClock(device_id=device, nurse_id=nurse, events=count,
                          max_lead_seconds=max(lead, 0), last_event_id=event,
                          last_received_at=received)
            for device, (nurse, count, lead, event, received) in seen.items()]


def _activity(scope: Scope, zone: ZoneInfo, roles: dict[str, str], visits: list[f.Visit],
              doses: list[f.Dose], wastes: list[f.Waste]) -> list[f.NurseActivity]:
    """Sum each nurse's visits, doses and wastes within the window, for peer comparison."""
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "visits": 0, "days": set(), "doses": 0, "administered_ug": 0, "wastes": 0,
        "wasted_ug": 0, "ug_per_kg_total": Decimal(0)})
    for visit in visits:
        if visit.status in WORKED and visit.scheduled_start >= scope.since:
            total = totals[visit.nurse_id]
            total["visits"] += 1
            total["days"].add(visit.scheduled_start.astimezone(zone).date())
    for dose in doses:
        if dose.given_at >= scope.since:
            total = totals[dose.nurse_id]
            total["doses"] += 1
            total["administered_ug"] += dose.quantity_ug
            total["ug_per_kg_total"] += dose.ug_per_kg or 0
    for waste in wastes:
        if waste.occurred_at >= scope.since:
            totals[waste.nurse_id]["wastes"] += 1
            totals[waste.nurse_id]["wasted_ug"] += waste.quantity_ug
    return [f.NurseActivity(nurse_id=nurse, role=roles.get(nurse, Role.NURSE.value),
                            visits=t["visits"], days_worked=len(t["days"]), doses=t["doses"],
                            administered_ug=t["administered_ug"], wastes=t["wastes"],
                            wasted_ug=t["wasted_ug"], ug_per_kg_total=t["ug_per_kg_total"])
            for nurse, t in totals.items()]


def _witness_pairs(scope: Scope, wastes: list[f.Waste],
                   witnesses_available: int) -> list[f.WitnessPair]:
    per_nurse: dict[str, int] = defaultdict(int)
    together: dict[tuple[str, str], int] = defaultdict(int)
    for waste in wastes:
        if waste.occurred_at < scope.since:
            continue
        per_nurse[waste.nurse_id] += 1
        for witness in waste.witness_ids:
            together[waste.nurse_id, witness] += 1
    # Anyone but the nurse herself could have witnessed: the pool is the others.
    return [f.WitnessPair(nurse_id=nurse, witness_id=witness, together=count,
                          nurse_wastes=per_nurse[nurse],
                          available_witnesses=max(witnesses_available - 1, 1))
            for (nurse, witness), count in together.items()]


def _plan_overrides(session: Session, scope: Scope) -> dict[str, dict[str, object]]:
    rows = session.execute(
        select(PlanVersion.id, PlanVersion.policy_overrides)
        .join(TreatmentPlan, TreatmentPlan.id == PlanVersion.plan_id)
        .where(TreatmentPlan.organisation_id == scope.organisation_id,
               PlanVersion.policy_overrides.is_not(None)))
    return {str(version): dict(overrides) for version, overrides in rows if overrides}


def load(session: Session, scope: Scope, *, population: bool) -> f.Facts:
    """Return the facts in `scope`; `population` adds the peer, witness and clock summaries."""
    organisation = session.get(Organisation, scope.organisation_id)
    zone = ZoneInfo(organisation.timezone)
    dose_rows = _doses(session, scope)
    phases: dict[tuple, f.Phase] = {}
    doses = [_dose(row, phases) for row in dose_rows]
    wastes = _wastes(session, scope)
    visits = _visits(session, scope)
    evv = _evv(session, scope)
    extra: dict[str, Any] = {}
    if population:
        people = dict(session.execute(select(User.id, User.role).where(
            User.organisation_id == scope.organisation_id, User.active)).all())
        roles = {str(user): str(role) for user, role in people.items()}
        witnesses = sum(role in (Role.NURSE, Role.PHARMACIST) for role in people.values())
        extra = {"activity": tuple(_activity(scope, zone, roles, visits, doses, wastes)),
                 "witness_pairs": tuple(_witness_pairs(scope, wastes, witnesses)),
                 "clocks": tuple(_clocks(
                     (r for r in dose_rows if r.infusion_started_at >= scope.since), evv)),
                 # Open deadlines matter however old the loss; filed ones within the window.
                 "losses": tuple(_losses(
                     session, scope.organisation_id, LossReport.form_106_filed_at.is_(None)
                     | (LossReport.discovered_at >= scope.since))),
                 "quarantined": tuple(_quarantined(session, scope))}
    return f.Facts(organisation_id=str(scope.organisation_id), as_of=scope.as_of,
                   timezone=organisation.timezone, doses=tuple(doses), wastes=tuple(wastes),
                   visits=tuple(visits), evv=tuple(evv),
                   plan_overrides=_plan_overrides(session, scope), **extra)
