"""Turn an organisation's rows into safeguards facts, in a few wide reads rather than per row."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Integer,
    String,
    Uuid,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.orm import Session, aliased, selectinload

from backend.accounts.models import Organisation, Role, User
from backend.administration.models import (
    Discharge,
    DoseRecord,
    Observation,
    PreDose,
    QuarantinedEvent,
)
from backend.audit.models import AuditEvent
from backend.custody import vault
from backend.custody.counts import COUNTED
from backend.custody.models import CustodyBalance, CustodyEntry, Kind, LossReport
from backend.custody.service import refusal_facts
from backend.db import id_text, ids_text
from backend.patients.models import Patient, PatientWeight
from backend.phi.sealed import cipher_of, open_stored
from backend.plans.models import PlanPhase, PlanVersion, TreatmentPlan
from backend.plans.service import ACTIVE, counted_from, plan_fact
from backend.policy.service import policy_for, stored_value
from backend.products.models import DrugProduct
from backend.visits.models import EvvEvent, Visit, VisitStatus
from safeguards import facts as f
from safeguards.policy import Policy

# The 28-day limit and a dose's interval look back this far before the scan window.
CONTEXT = timedelta(days=28)
# Visits the nurse made: checked in or completed. They are her activity for the peer rules.
WORKED = (VisitStatus.COMPLETED, VisitStatus.CHECKED_IN)
# The fewest witnesses a nurse is taken to choose from, however few she used.
MIN_CIRCLE = 2


@dataclass(frozen=True)
class Scope:
    """What to load: one organisation, a window, and optionally one patient or one nurse."""

    organisation_id: uuid.UUID
    as_of: datetime
    since: datetime
    patient_id: uuid.UUID | None = None
    nurse_id: uuid.UUID | None = None
    # A page shows the window alone: no look-back before it, nothing after it.
    window_only: bool = False

    @property
    def context_since(self) -> datetime:
        """Return the start of what is read: the window plus the rules' look-back."""
        return self.since if self.window_only else self.since - CONTEXT

    def bounded(self, query: Any, column: Any) -> Any:
        """Return `query` also limited to `column` up to `as_of` when the window is all."""
        return query.where(column <= self.as_of) if self.window_only else query


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _planned_ug(dose_ug: int | None, ug_per_kg: int | None, weight_g: int | None) -> int | None:
    if dose_ug is not None:
        return dose_ug
    if ug_per_kg is not None and weight_g:
        return ug_per_kg * weight_g // 1000
    return None


def _in_scope(query: Any, scope: Scope, phase: Any) -> Any:
    """Join a query of doses to their visit, plan version, product and phase, in `scope`."""
    query = (query
             .join(Visit, Visit.id == DoseRecord.visit_id)
             .join(PlanVersion, PlanVersion.id == DoseRecord.plan_version_id)
             .join(DrugProduct, DrugProduct.id == DoseRecord.product_id)
             .outerjoin(phase, and_(phase.version_id == Visit.plan_version_id,
                                    phase.ordinal == Visit.phase_ordinal))
             .where(DoseRecord.organisation_id == scope.organisation_id,
                    DoseRecord.infusion_started_at >= scope.context_since))
    return scope.bounded(query, DoseRecord.infusion_started_at)


def _doses(session: Session, scope: Scope) -> list[Any]:
    phase = aliased(PlanPhase)
    query = select(
        *ids_text(session, DoseRecord.id, Visit.patient_id, DoseRecord.nurse_id,
                   DoseRecord.visit_id, DoseRecord.device_id, DoseRecord.plan_version_id,
                   DoseRecord.product_id, DoseRecord.custody_entry_id),
        id_text(session, PlanVersion.product_id).label("plan_product_id"),
        DoseRecord.infusion_started_at,
        DoseRecord.infusion_ended_at, DoseRecord.occurred_at, DoseRecord.received_at,
        DoseRecord.quantity_ug, DoseRecord.ug_per_kg, DoseRecord.weight_g, DoseRecord.lot,
        PlanVersion.max_dose_ug, PlanVersion.dose_ug, PlanVersion.dose_ug_per_kg,
        phase.name, phase.min_interval_hours, phase.max_per_7_days, phase.max_per_28_days,
        phase.ordinal, phase.starts_on,
        phase.dose_ug.label("phase_dose_ug"), phase.dose_ug_per_kg.label("phase_ug_per_kg"),
        DrugProduct.ug_per_unit, DrugProduct.units_per_container, DoseRecord.route,
        PlanVersion.route.label("plan_route"))
    query = _in_scope(query, scope, phase)
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(DoseRecord.nurse_id == scope.nurse_id)
    return list(session.execute(query))


def _dose(row: Any, phases: dict[tuple, f.Phase]) -> f.Dose:
    phase = None
    if row.name is not None:
        key = (row.name, row.min_interval_hours, row.max_per_7_days, row.max_per_28_days,
               counted_from(row.ordinal, row.starts_on))
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


def _planned_dose(phase: Any) -> Any:
    """Return SQL for a dose's planned µg as _dose works it out: the phase's dose, else the
    version's, each in µg or µg/kg times the weight recorded with the dose."""
    weight = func.nullif(DoseRecord.weight_g, 0)
    return func.coalesce(
        func.nullif(func.coalesce(phase.dose_ug, phase.dose_ug_per_kg * weight // 1000), 0),
        PlanVersion.dose_ug, PlanVersion.dose_ug_per_kg * weight // 1000)


def _series_kinds(columns: Any) -> tuple[Any, ...]:
    """Return SQL for the kinds of dose f.DoseSeries keeps the latest of: all, planned,
    weighed, weighed above zero."""
    return (true(), columns.planned_ug != 0, columns.ug_per_kg.is_not(None),
            columns.ug_per_kg != 0)


def _series_rows(scope: Scope, tail: int) -> Any:
    """Return SQL for the doses _doses reads, each patient's latest `tail` of each kind (see
    f.DoseSeries) one by one and the rest grouped by their figures, with their count."""
    phase = aliased(PlanPhase)
    doses = select(
        Visit.patient_id, DoseRecord.id, DoseRecord.nurse_id, DoseRecord.plan_version_id,
        DoseRecord.infusion_started_at.label("given_at"), DoseRecord.quantity_ug,
        DoseRecord.ug_per_kg, _planned_dose(phase).label("planned_ug"))
    doses = _in_scope(doses, scope, phase).subquery()
    # How many doses of each kind the patient had from this one on, the newest counting 1.
    newest_first = {"partition_by": doses.c.patient_id,
                    "order_by": (doses.c.given_at.desc(), doses.c.id.desc())}
    ranked = select(doses, *(
        func.sum(case((kind, 1), else_=0)).over(**newest_first).label(f"newest_{number}")
        for number, kind in enumerate(_series_kinds(doses.c)))).subquery()
    latest = or_(*(and_(kind, ranked.c[f"newest_{number}"] <= tail)
                   for number, kind in enumerate(_series_kinds(ranked.c))))
    marked = select(ranked.c.patient_id, ranked.c.quantity_ug, ranked.c.ug_per_kg,
                    ranked.c.planned_ug, *(case((latest, ranked.c[name])).label(name) for name in
                                           ("id", "nurse_id", "plan_version_id", "given_at"))
                    ).subquery()
    columns = [marked.c[name] for name in ("patient_id", "id", "nurse_id", "plan_version_id",
                                           "given_at", "quantity_ug", "ug_per_kg", "planned_ug")]
    return select(*columns, func.count().label("doses")).group_by(*columns)


def _series_tail(policy: Policy, overrides: dict[str, dict[str, object]]) -> int:
    """Return how many of a patient's latest doses of a kind the trends may read one by one:
    the most that the policy, or a plan's override, asks dosing.creep or
    plausibility.mg_rise_flat_per_kg to compare."""
    asked = [policy.value("creep_recent_doses"), policy.value("weight_dose_recent_doses")]
    asked += [int(values["creep_recent_doses"]) for values in overrides.values()
              if "creep_recent_doses" in values]
    return max(1, *(int(value) for value in asked))


def _dose_series(session: Session, scope: Scope, tail: int) -> list[f.DoseSeries]:
    """Return each patient's doses as the trends read them, their statistics' inputs summed
    up in the database: of a million doses only each patient's latest few leave it whole."""
    latest: dict[str, list[f.SeriesDose]] = defaultdict(list)
    earlier: dict[str, list[f.DoseTally]] = defaultdict(list)
    series = _series_rows(scope, tail).subquery()
    # Ids as text and rows by position: tens of thousands of rows leave the database.
    for (patient_id, dose_id, nurse_id, plan_version_id, given_at, quantity_ug, ug_per_kg,
         planned_ug, doses) in session.execute(select(
            *(id_text(session, series.c[name]) for name in
              ("patient_id", "id", "nurse_id", "plan_version_id")),
            *(series.c[name] for name in
              ("given_at", "quantity_ug", "ug_per_kg", "planned_ug", "doses")))):
        if dose_id is None:
            earlier[patient_id].append(f.DoseTally(
                quantity_ug=quantity_ug, ug_per_kg=ug_per_kg, planned_ug=planned_ug,
                doses=doses))
            continue
        latest[patient_id].append(f.SeriesDose(
            id=dose_id, nurse_id=nurse_id, plan_version_id=plan_version_id, given_at=given_at,
            quantity_ug=quantity_ug, ug_per_kg=ug_per_kg, planned_ug=planned_ug))
    return [f.DoseSeries(patient_id=patient, tail=tail,
                         latest=tuple(sorted(doses, key=lambda dose: (dose.given_at, dose.id))),
                         earlier=tuple(earlier[patient]))
            for patient, doses in sorted(latest.items())]


def _wastes(session: Session, scope: Scope) -> list[f.Waste]:
    query = (
        select(*ids_text(session, CustodyEntry.id, CustodyEntry.actor_id,
                          CustodyEntry.visit_id, Visit.patient_id),
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


def _attestations(session: Session, scope: Scope) -> list[f.WitnessAttestation]:
    """Return each confirmation of the window's wastes whose witness's phone timed it."""
    query = (
        select(*ids_text(session, CustodyEntry.id, CustodyEntry.actor_id,
                          CustodyEntry.visit_id, Visit.patient_id),
               CustodyEntry.occurred_at, CustodyEntry.confirmations)
        .outerjoin(Visit, Visit.id == CustodyEntry.visit_id)
        .where(CustodyEntry.organisation_id == scope.organisation_id,
               CustodyEntry.kind == Kind.WASTE, CustodyEntry.occurred_at >= scope.since,
               # Only phones that time their confirmations: most wastes need no reading.
               cast(CustodyEntry.confirmations, String).like('%"attested_at"%')))
    return [f.WitnessAttestation(
                waste_id=str(row.id), nurse_id=str(row.actor_id), witness_id=c["user_id"],
                device_id=c["device_id"], occurred_at=row.occurred_at,
                attested_at=datetime.fromisoformat(c["attested_at"]),
                patient_id=_text(row.patient_id), visit_id=_text(row.visit_id))
            for row in session.execute(query) for c in row.confirmations
            if c.get("attested_at")]


def _opened(session: Session, model: type, name: str, organisation_id: uuid.UUID,
            row_id: uuid.UUID, stored: str | None) -> str | None:
    """Return a free-text value read as ciphertext; only the few rows a rule quotes need it."""
    return open_stored(cipher_of(session), model, name, organisation_id, row_id, stored)


def _visit_fact(session: Session, scope: Scope, row: Any) -> f.Visit:
    # Rules quote a reason only for a missed visit or an override: decrypt those alone.
    status_reason = (_opened(session, Visit, "status_reason", scope.organisation_id, row.id,
                             row.status_reason_enc)
                     if row.status == VisitStatus.MISSED else None)
    override_reason = _opened(session, Visit, "override_reason", scope.organisation_id, row.id,
                              row.override_reason_enc)
    return f.Visit(id=str(row.id), patient_id=str(row.patient_id), nurse_id=str(row.nurse_id),
                   scheduled_start=row.scheduled_start, scheduled_end=row.scheduled_end,
                   status=str(row.status), override=row.override_reason_enc is not None,
                   override_reason=override_reason, override_by_id=_text(row.override_by_id),
                   status_reason=status_reason, series=row.series_id is not None,
                   created_at=row.created_at, checked_in_at=row.checked_in_at,
                   checked_out_at=row.checked_out_at,
                   plan_infusion_minutes=row.infusion_minutes)


def _visits(session: Session, scope: Scope, *where: Any) -> list[f.Visit]:
    query = (
        select(Visit.id, *ids_text(session, Visit.patient_id, Visit.nurse_id,
                                    Visit.override_by_id),
               Visit.scheduled_start, Visit.scheduled_end, Visit.status,
               Visit.override_reason_enc, Visit.series_id, Visit.created_at,
               Visit.checked_in_at, Visit.checked_out_at, Visit.status_reason_enc,
               PlanVersion.infusion_minutes)
        .join(PlanVersion, PlanVersion.id == Visit.plan_version_id)
        .where(Visit.organisation_id == scope.organisation_id,
               Visit.scheduled_start >= scope.context_since, *where))
    query = scope.bounded(query, Visit.scheduled_start)
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(Visit.nurse_id == scope.nurse_id)
    return [_visit_fact(session, scope, row) for row in session.execute(query)]


def _evv(session: Session, scope: Scope) -> list[f.EvvEvent]:
    query = (
        select(EvvEvent.id, EvvEvent.visit_id, EvvEvent.nurse_id, Visit.patient_id,
               EvvEvent.device_id, EvvEvent.kind, EvvEvent.occurred_at, EvvEvent.received_at,
               EvvEvent.latitude, EvvEvent.longitude, EvvEvent.accuracy_m, EvvEvent.distance_m,
               EvvEvent.radius_m, EvvEvent.reason_enc)
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
                       radius_m=row.radius_m,
                       reason=_opened(session, EvvEvent, "reason", scope.organisation_id,
                                      row.id, row.reason_enc))
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


def losses_by_id(session: Session, organisation_id: uuid.UUID,
                 report_ids: set[uuid.UUID]) -> list[f.Loss]:
    """Return the organisation's loss reports with these ids."""
    return _losses(session, organisation_id, LossReport.id.in_(report_ids)) if report_ids else []


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


def quarantined_by_id(session: Session, organisation_id: uuid.UUID,
                      held_ids: set[uuid.UUID]) -> list[f.QuarantinedEvent]:
    """Return the organisation's quarantined records with these ids."""
    if not held_ids:
        return []
    return [quarantined_fact(row) for row in session.scalars(select(QuarantinedEvent).where(
        QuarantinedEvent.organisation_id == organisation_id, QuarantinedEvent.id.in_(held_ids)))]


def quarantined_fact(row: QuarantinedEvent) -> f.QuarantinedEvent:
    """Return a quarantined record as the rules see it."""
    return f.QuarantinedEvent(id=str(row.id), record_type=row.record_type,
                              record_id=row.record_id, user_id=str(row.user_id),
                              device_id=_text(row.device_id), visit_id=_text(row.visit_id),
                              reason=row.reason, received_at=row.received_at)


def _seconds_between(later: Any, earlier: Any, dialect: str) -> Any:
    """Return SQL for `later - earlier` in seconds, on either database."""
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86_400


def _clocks(session: Session, scope: Scope) -> list[f.DeviceClock]:
    """Return each device's largest lead of its own clock over the server's receipt."""
    dialect = session.get_bind().dialect.name
    seen: dict[str, list] = {}
    for model, owner in ((DoseRecord, DoseRecord.nurse_id), (EvvEvent, EvvEvent.nurse_id)):
        lead = func.max(_seconds_between(model.occurred_at, model.received_at, dialect))
        for device, nurse, count, most, last in session.execute(
                select(model.device_id, owner, func.count(), lead, func.max(model.received_at))
                .where(model.organisation_id == scope.organisation_id,
                       model.received_at >= scope.since, model.device_id.is_not(None))
                .group_by(model.device_id, owner)):
            held = seen.setdefault(str(device), [str(nurse), 0, 0, last])
            held[1] += count
            held[2] = max(held[2], int(most or 0))
            held[3] = max(held[3], last)
    return [f.DeviceClock(device_id=device, nurse_id=nurse, events=count,
                          max_lead_seconds=max(lead, 0), last_received_at=last)
            for device, (nurse, count, lead, last) in seen.items()]


def _days_worked(session: Session, scope: Scope, zone: ZoneInfo) -> dict[str, int]:
    """Return how many local calendar days each nurse had a visit she worked."""
    worked = (Visit.organisation_id == scope.organisation_id, Visit.status.in_(WORKED),
              Visit.scheduled_start >= scope.since)
    if session.get_bind().dialect.name == "postgresql":
        day = func.date(func.timezone(zone.key, Visit.scheduled_start))
        return {str(nurse): days for nurse, days in session.execute(
            select(Visit.nurse_id, func.count(day.distinct())).where(*worked)
            .group_by(Visit.nurse_id))}
    # SQLite knows no time zones: the local day is worked out here, one row per visit.
    days: dict[str, set] = defaultdict(set)
    for nurse, start in session.execute(select(Visit.nurse_id, Visit.scheduled_start)
                                        .where(*worked)):
        days[str(nurse)].add(start.astimezone(zone).date())
    return {nurse: len(dates) for nurse, dates in days.items()}


def _plan_sums(session: Session, scope: Scope, recent_since: datetime | None) -> Any:
    """Return per nurse, summed in the database over the window and, with `recent_since`,
    over its last days (columns `recent_…`): her doses whose plan set a dose, what they gave
    and what was planned (the loaders' own planned dose, _dose's), and what the plans left in
    her doses' containers (NurseActivity.planned_remainder_ug).

    What a dose's plan left: the containers its larger of given and planned needs, times their
    size, less the planned dose (the dose given when no plan set one), never below nothing.
    """
    phase = aliased(PlanPhase)
    given = DoseRecord.quantity_ug
    planned = _planned_dose(phase)
    container = cast(DrugProduct.ug_per_unit * DrugProduct.units_per_container, Integer)
    meant = func.coalesce(planned, given)
    larger = case((given > meant, given), else_=meant)
    # The containers `larger` needs times their size, less `larger`, plus what it exceeds the
    # plan by: the containers' size less the planned dose, in whole-integer arithmetic.
    left = case((container > 0, (container - larger % container) % container
                 + (larger - meant)), else_=0)
    sums = _plan_figures(planned, given, left, None)
    if recent_since:
        sums += _plan_figures(planned, given, left,
                              DoseRecord.infusion_started_at >= recent_since)
    return session.execute(
        select(DoseRecord.nurse_id, *sums)
        .join(DrugProduct, DrugProduct.id == DoseRecord.product_id)
        .outerjoin(Visit, Visit.id == DoseRecord.visit_id)
        .outerjoin(PlanVersion, PlanVersion.id == DoseRecord.plan_version_id)
        .outerjoin(phase, and_(phase.version_id == Visit.plan_version_id,
                               phase.ordinal == Visit.phase_ordinal))
        .where(DoseRecord.organisation_id == scope.organisation_id,
               DoseRecord.infusion_started_at >= scope.since)
        .group_by(DoseRecord.nurse_id))


def _plan_figures(planned: Any, given: Any, left: Any, recent: Any) -> list[Any]:
    """Return the sums _plan_sums gives, over the doses `recent` marks (all when None)."""
    prefix = "recent_" if recent is not None else ""
    counted = planned.is_not(None) if recent is None else and_(planned.is_not(None), recent)
    return [func.count(case((counted, 1))).label(f"{prefix}planned_doses"),
            func.sum(case((counted, given), else_=0)).label(f"{prefix}planned_given_ug"),
            func.sum(case((counted, planned), else_=0)).label(f"{prefix}planned_ug"),
            func.sum(left if recent is None else case((recent, left), else_=0))
            .label(f"{prefix}remainder_ug")]


def _recent_sums(session: Session, scope: Scope, recent_since: datetime) -> Any:
    """Return per nurse her doses, µg given and µg wasted since `recent_since`."""
    doses = (select(DoseRecord.nurse_id.label("nurse"), func.count().label("doses"),
                    func.sum(DoseRecord.quantity_ug).label("given"),
                    func.sum(0).label("wasted"))
             .where(DoseRecord.organisation_id == scope.organisation_id,
                    DoseRecord.infusion_started_at >= max(recent_since, scope.since))
             .group_by(DoseRecord.nurse_id))
    wastes = (select(CustodyEntry.actor_id.label("nurse"), func.sum(0).label("doses"),
                     func.sum(0).label("given"),
                     func.sum(CustodyEntry.quantity_ug).label("wasted"))
              .where(CustodyEntry.organisation_id == scope.organisation_id,
                     CustodyEntry.kind == Kind.WASTE,
                     CustodyEntry.occurred_at >= max(recent_since, scope.since))
              .group_by(CustodyEntry.actor_id))
    both = union_all(doses, wastes).subquery()
    return session.execute(select(both.c.nurse, func.sum(both.c.doses), func.sum(both.c.given),
                                  func.sum(both.c.wasted)).group_by(both.c.nurse))


def _activity(session: Session, scope: Scope, zone: ZoneInfo, roles: dict[str, str],
              recent_days: int | None = None) -> list[f.NurseActivity]:
    """Sum each nurse's visits, doses and wastes within the window, in the database; with
    `recent_days`, also her doses and wastes over the window's last days on their own."""
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "visits": 0, "doses": 0, "administered_ug": 0, "wastes": 0, "wasted_ug": 0,
        "ug_per_kg_total": Decimal(0)})
    for nurse, visits in session.execute(
            select(Visit.nurse_id, func.count()).where(
                Visit.organisation_id == scope.organisation_id, Visit.status.in_(WORKED),
                Visit.scheduled_start >= scope.since).group_by(Visit.nurse_id)):
        totals[str(nurse)]["visits"] = visits
    for nurse, doses, given, per_kg in session.execute(
            select(DoseRecord.nurse_id, func.count(), func.sum(DoseRecord.quantity_ug),
                   func.sum(DoseRecord.ug_per_kg)).where(
                DoseRecord.organisation_id == scope.organisation_id,
                DoseRecord.infusion_started_at >= scope.since).group_by(DoseRecord.nurse_id)):
        totals[str(nurse)].update(doses=doses, administered_ug=int(given),
                                  ug_per_kg_total=Decimal(per_kg or 0))
    for nurse, wastes, wasted in session.execute(
            select(CustodyEntry.actor_id, func.count(), func.sum(CustodyEntry.quantity_ug))
            .where(CustodyEntry.organisation_id == scope.organisation_id,
                   CustodyEntry.kind == Kind.WASTE, CustodyEntry.occurred_at >= scope.since)
            .group_by(CustodyEntry.actor_id)):
        totals[str(nurse)].update(wastes=wastes, wasted_ug=int(wasted))
    recent_since = scope.as_of - timedelta(days=recent_days) if recent_days else None
    for row in _plan_sums(session, scope, recent_since):
        figures = totals[str(row.nurse_id)]
        if row.planned_doses:
            figures.update(planned_doses=row.planned_doses,
                           planned_given_ug=int(row.planned_given_ug),
                           planned_ug=int(row.planned_ug))
        figures.update(planned_remainder_ug=max(int(row.remainder_ug or 0), 0))
        if recent_since and row.recent_planned_doses:
            figures.update(recent_planned_doses=row.recent_planned_doses,
                           recent_planned_given_ug=int(row.recent_planned_given_ug),
                           recent_planned_ug=int(row.recent_planned_ug))
        if recent_since:
            figures.update(recent_planned_remainder_ug=max(int(row.recent_remainder_ug or 0), 0))
    if recent_since:
        for figures in totals.values():
            figures["recent_since"] = recent_since
        for nurse, doses, given, wasted in _recent_sums(session, scope, recent_since):
            if str(nurse) in totals:
                totals[str(nurse)].update(recent_doses=int(doses or 0),
                                          recent_administered_ug=int(given or 0),
                                          recent_wasted_ug=int(wasted or 0))
    days = _days_worked(session, scope, zone)
    return [f.NurseActivity(nurse_id=nurse, role=roles.get(nurse, Role.NURSE.value),
                            days_worked=days.get(nurse, 0), **figures)
            for nurse, figures in totals.items()]


def _witness_pairs(session: Session, scope: Scope,
                   recent_days: int | None = None) -> list[f.WitnessPair]:
    """Count each witness on each nurse's wastes in the window; with `recent_days`, also over
    the window's last days on their own (the database marks which wastes are recent)."""
    recent_since = scope.as_of - timedelta(days=recent_days) if recent_days else None
    count = (_witness_counts_in_sql if session.get_bind().dialect.name == "postgresql"
             else _witness_counts)
    wastes, pairs = count(session, scope, recent_since)
    circle: dict[str, set[str]] = defaultdict(set)
    for nurse, witness in pairs:
        circle[nurse].add(witness)
    # Chance is judged within her own circle (see WitnessPair), never fewer than two people.
    return [f.WitnessPair(nurse_id=nurse, witness_id=witness, together=together,
                          nurse_wastes=wastes[nurse][0],
                          available_witnesses=max(len(circle[nurse]), MIN_CIRCLE),
                          recent_together=recent_together, recent_wastes=wastes[nurse][1])
            for (nurse, witness), (together, recent_together) in pairs.items()]


# Each nurse's wastes and each (nurse, witness) pair's, counted in all and in the recent days.
_Counts = tuple[dict[str, tuple[int, int]], dict[tuple[str, str], tuple[int, int]]]


def _witness_counts(session: Session, scope: Scope, recent_since: datetime | None) -> _Counts:
    """Count wastes and witnesses by reading every waste's confirmations."""
    wastes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    recent_column = ([case((CustodyEntry.occurred_at >= recent_since, 1), else_=0)]
                     if recent_since else [])
    for nurse, confirmations, *recent in session.execute(
            select(CustodyEntry.actor_id, CustodyEntry.confirmations, *recent_column).where(
                CustodyEntry.organisation_id == scope.organisation_id,
                CustodyEntry.kind == Kind.WASTE, CustodyEntry.occurred_at >= scope.since)):
        counts_recent = int(recent[0]) if recent else 0
        totals = wastes[str(nurse)]
        totals[0] += 1
        totals[1] += counts_recent
        for confirmation in confirmations or ():
            together = pairs[str(nurse), confirmation["user_id"]]
            together[0] += 1
            together[1] += counts_recent
    return ({nurse: (n, r) for nurse, (n, r) in wastes.items()},
            {pair: (n, r) for pair, (n, r) in pairs.items()})


# The same counts, grouped by PostgreSQL: a window's tens of thousands of wastes never leave it.
WITNESS_COUNTS = text("""
SELECT actor_id::text, NULL, count(*), count(*) FILTER (WHERE occurred_at >= :recent)
FROM custody_entry
WHERE organisation_id = :organisation_id AND kind = 'waste' AND occurred_at >= :since
GROUP BY actor_id
UNION ALL
SELECT entry.actor_id::text, confirmation ->> 'user_id', count(*),
       count(*) FILTER (WHERE entry.occurred_at >= :recent)
FROM custody_entry AS entry
CROSS JOIN LATERAL json_array_elements(CASE json_typeof(entry.confirmations)
                                       WHEN 'array' THEN entry.confirmations END) AS confirmation
WHERE entry.organisation_id = :organisation_id AND entry.kind = 'waste'
  AND entry.occurred_at >= :since AND confirmation ->> 'user_id' IS NOT NULL
GROUP BY entry.actor_id, confirmation ->> 'user_id'""")


def _witness_counts_in_sql(session: Session, scope: Scope,
                           recent_since: datetime | None) -> _Counts:
    """Count wastes and witnesses in PostgreSQL."""
    wastes: dict[str, tuple[int, int]] = {}
    pairs: dict[tuple[str, str], tuple[int, int]] = {}
    # Without a recent look, no waste is recent, whatever date its phone gave it.
    never = datetime.max.replace(tzinfo=UTC)
    for nurse, witness, together, recent in session.execute(WITNESS_COUNTS, {
            "organisation_id": scope.organisation_id, "since": scope.since,
            "recent": recent_since or never}):
        if witness is None:
            wastes[nurse] = (together, recent)
        else:
            pairs[nurse, witness] = (together, recent)
    return wastes, pairs


def nurse_activity(session: Session, organisation_id: uuid.UUID, since: datetime,
                   as_of: datetime) -> list[f.NurseActivity]:
    """Return each nurse's visits, doses and wastes since `since`, summed per nurse in the
    database as the peer rules read them; a nurse with none in the window is left out."""
    organisation = session.get(Organisation, organisation_id)
    nurses = {str(user) for user in session.scalars(select(User.id).where(
        User.organisation_id == organisation_id, User.role == Role.NURSE))}
    activity = _activity(session, Scope(organisation_id, as_of, since),
                         ZoneInfo(organisation.timezone), dict.fromkeys(nurses, Role.NURSE.value))
    # Wastes are summed by whoever recorded them: only nurses are one another's peers.
    return [nurse for nurse in activity if nurse.nurse_id in nurses]


def witness_pairs(session: Session, organisation_id: uuid.UUID, since: datetime,
                  as_of: datetime) -> list[f.WitnessPair]:
    """Return how often each witness signed each nurse's wastes since `since`."""
    return _witness_pairs(session, Scope(organisation_id, as_of, since))


# A visit in one of these is over: it holds no stock out of the vault any longer.
OVER = (VisitStatus.COMPLETED, VisitStatus.CANCELLED, VisitStatus.MISSED)


@dataclass
class _Kit:
    """Stock dispensed to a bag under one seal: its latest dispense and what it still holds."""

    entry: CustodyEntry
    held_ug: int = 0


def _holdings(session: Session, scope: Scope, hours: int) -> list[f.BagHolding]:
    """Return each kit still in a bag, due back once the visits it went out for are over.

    Judged per dispense, whatever else the nurse has open: a kit kept after its own visit was
    cancelled is due back then, though she has other visits booked.
    """
    held = session.scalars(select(CustodyBalance).where(
        CustodyBalance.organisation_id == scope.organisation_id,
        CustodyBalance.holder.like("bag:%"), CustodyBalance.quantity_ug > 0)).all()
    if not held:
        return []
    kits = _kits(session, scope, held)
    earliest = min((kit.entry.received_at for kit in kits), default=scope.as_of)
    bags = {balance.holder for balance in held}
    visits = session.scalars(select(Visit).where(
        Visit.organisation_id == scope.organisation_id,
        Visit.nurse_id.in_({uuid.UUID(holder.removeprefix("bag:")) for holder in bags}),
        Visit.scheduled_end >= earliest, Visit.status != VisitStatus.RESCHEDULED)).all()
    dispensed = session.execute(select(CustodyEntry.to_holder, CustodyEntry.received_at).where(
        CustodyEntry.organisation_id == scope.organisation_id, CustodyEntry.kind == Kind.DISPENSE,
        CustodyEntry.to_holder.in_(bags), CustodyEntry.received_at >= earliest)).all()
    zone = ZoneInfo(session.get(Organisation, scope.organisation_id).timezone)
    facts = []
    for kit in kits:
        entry = kit.entry
        own = _own_visits(entry, visits, dispensed, zone)
        if any(visit.status not in OVER for visit in own):
            continue
        due = max([entry.received_at, *(visit.checked_out_at or visit.updated_at
                                        for visit in own)])
        facts.append(f.BagHolding(
            nurse_id=entry.to_holder.removeprefix("bag:"), lot=entry.lot,
            product_id=str(entry.product_id), quantity_ug=kit.held_ug,
            due_back_at=due + timedelta(hours=hours), dispense_id=str(entry.id),
            seal_id=entry.details.get("seal_id"), visit_id=_text(entry.visit_id)))
    return facts


def _kits(session: Session, scope: Scope, held: list[CustodyBalance]) -> list[_Kit]:
    """Return the kits that hold each bag's balance of a lot: the newest kits hold what is
    left, as stock is used oldest kit first."""
    lots = {(balance.holder, balance.product_id, balance.lot): balance.quantity_ug
            for balance in held}
    bags = {holder for holder, _, _ in lots}
    entries = session.scalars(select(CustodyEntry).where(
        CustodyEntry.organisation_id == scope.organisation_id,
        CustodyEntry.lot.in_({lot for _, _, lot in lots}),
        ((CustodyEntry.kind == Kind.DISPENSE) & CustodyEntry.to_holder.in_(bags))
        | ((CustodyEntry.kind == Kind.RETURN) & CustodyEntry.from_holder.in_(bags)))
        .order_by(CustodyEntry.seq))
    by_seal: dict[tuple, _Kit] = {}
    for entry in entries:
        bag_holder = entry.to_holder if entry.kind == Kind.DISPENSE else entry.from_holder
        key = (bag_holder, entry.product_id, entry.lot, entry.details.get("seal_id"))
        kit = by_seal.get(key)
        if entry.kind == Kind.DISPENSE:
            kit = by_seal[key] = _Kit(entry, (kit.held_ug if kit else 0))
            kit.held_ug += entry.quantity_ug
        elif kit is not None:
            kit.held_ug -= entry.quantity_ug
    kits = []
    for kit in sorted(by_seal.values(), key=lambda kit: kit.entry.seq, reverse=True):
        lot = (kit.entry.to_holder, kit.entry.product_id, kit.entry.lot)
        kit.held_ug = min(max(kit.held_ug, 0), lots.get(lot, 0))
        if kit.held_ug:
            lots[lot] -= kit.held_ug
            kits.append(kit)
    return kits


def _own_visits(dispense: CustodyEntry, visits: list[Visit], dispensed: list[Any],
                zone: ZoneInfo) -> list[Visit]:
    """Return the visits a kit went out for: the one it names, else the nurse's visits ending
    after it went out and starting before her next kit went out or the end of the next local
    day, whichever is first (a kit taken the evening before serves the morning's visits)."""
    if dispense.visit_id is not None:
        return [visit for visit in visits if visit.id == dispense.visit_id]
    out, bag_holder = dispense.received_at, dispense.to_holder
    local = out.astimezone(zone).date() + timedelta(days=2)
    until = min([datetime.combine(local, time(), zone),
                 *(at for holder, at in dispensed if holder == bag_holder and at > out)])
    nurse = bag_holder.removeprefix("bag:")
    return [visit for visit in visits if str(visit.nurse_id) == nurse
            and visit.scheduled_end >= out and visit.scheduled_start < until]


def _refusals(session: Session, scope: Scope) -> list[f.CustodyRefusal]:
    """Return the custody writes refused at the door in the scope, by the nurse they concern."""
    if scope.patient_id:
        return []
    return refusal_facts(session, scope.organisation_id, scope.context_since, scope.as_of,
                         scope.nurse_id)


def _vault(session: Session, scope: Scope) -> dict[str, Any]:
    """Return the pharmacy's movements over the window and its counts that found a difference."""
    movements = vault.movements(session, scope.organisation_id, scope.since, scope.as_of)
    reasons = {m.id: m.reason for m in movements if m.kind == Kind.ADJUST}
    return {"vault_movements": tuple(movements), "vault_since": scope.since,
            "counts": tuple(_counts(session, scope, reasons))}


def _counts(session: Session, scope: Scope, reasons: dict[str, str | None]) -> list[f.Count]:
    """Return each lot of each count recorded in the window that did not match the ledger."""
    recorded: dict[str, list[AuditEvent]] = defaultdict(list)
    for event in session.scalars(select(AuditEvent).where(
            AuditEvent.organisation_id == scope.organisation_id, AuditEvent.action == COUNTED,
            AuditEvent.occurred_at >= scope.since, AuditEvent.occurred_at <= scope.as_of)
            .order_by(AuditEvent.occurred_at, AuditEvent.id)):
        recorded[event.object_id].append(event)
    return [count for events in recorded.values() for count in _count_facts(events, reasons)]


def _count_facts(events: list[AuditEvent], reasons: dict[str, str | None]) -> list[f.Count]:
    """Return a count's differing lots as first recorded, with the adjustments made since."""
    first, detail = events[0], events[0].detail
    # A retried count or a reason given later adds its adjustment under the same count id.
    adjusted = {(lot["product_id"], lot["lot"]): lot["adjustment_id"]
                for event in events for lot in event.detail["lots"] if lot.get("adjustment_id")}
    holder = detail["holder"]
    nurse = holder.removeprefix("bag:") if holder.startswith("bag:") else None
    return [f.Count(id=first.object_id, holder=holder, lot=lot["lot"],
                    product_id=lot["product_id"],
                    counted_at=datetime.fromisoformat(detail["counted_at"]),
                    counted_by_id=str(first.user_id), expected_ug=lot["ledger_ug"],
                    counted_ug=lot["counted_ug"], nurse_id=nurse,
                    adjustment_id=(adjustment := adjusted.get((lot["product_id"], lot["lot"]))),
                    reason=reasons.get(adjustment))
            for lot in detail["lots"] if lot["counted_ug"] != lot["ledger_ug"]]


def _plan_overrides(session: Session, scope: Scope) -> dict[str, dict[str, object]]:
    query = (select(PlanVersion.id, PlanVersion.policy_overrides)
             .join(TreatmentPlan, TreatmentPlan.id == PlanVersion.plan_id)
             .where(TreatmentPlan.organisation_id == scope.organisation_id,
                    PlanVersion.policy_overrides.is_not(None)))
    # An inline check needs only the plans of the patient or the nurse's visits in scope.
    if scope.patient_id:
        query = query.where(TreatmentPlan.patient_id == scope.patient_id)
    if scope.nurse_id:
        query = query.where(PlanVersion.id.in_(select(Visit.plan_version_id).where(
            Visit.nurse_id == scope.nurse_id, Visit.scheduled_start >= scope.context_since)))
    rows, base = session.execute(query), Policy()
    # Stored as decimal strings: the rules take them as the numbers their thresholds hold.
    return {str(version): {name: stored_value(base, name, raw) for name, raw in overrides.items()}
            for version, overrides in rows if overrides}


# Time and plausibility (issue 17 items 2 and 3): work by the hour, weighings, readings.
# A patient's weighings reach back this far before the loaders' context, so that the first
# doses of a window still have the patient's usual weight to be compared with.
WEIGHT_HISTORY = timedelta(days=90)
# The movements of a nurse's bag that are her work: each happened at an hour.
BAG_WORK = (Kind.DISPENSE, Kind.RETURN, Kind.TRANSFER, Kind.WASTE, Kind.ADMINISTER, Kind.LOSS)


def _bag_nurse(from_holder: str, to_holder: str) -> str:
    """Return the nurse whose bag the movement left, else the one it went into."""
    holder = from_holder if from_holder.startswith("bag:") else to_holder
    return holder.removeprefix("bag:")


def _work_events(session: Session, scope: Scope) -> list[f.WorkEvent]:
    """Return the window's work by the hour: each visit's first dose, check-in or bag movement,
    marked with a reason when any of its check-ins gave one, and each bag movement outside a
    visit.

    A visit is one occasion however many events it had (safeguards.rules.hours.occasions),
    dated by its first: the database picks that one, so the rest never leave it.
    """
    org, since, until = scope.organisation_id, scope.since, scope.as_of
    no_nurse, no_holder = cast(null(), Uuid), cast(null(), String)
    doses = (
        select(DoseRecord.id, literal("dose", String).label("kind"), DoseRecord.nurse_id,
               no_holder.label("from_holder"), no_holder.label("to_holder"),
               DoseRecord.infusion_started_at.label("occurred_at"), DoseRecord.visit_id,
               Visit.patient_id, false().label("has_reason"))
        .join(Visit, Visit.id == DoseRecord.visit_id)
        .where(DoseRecord.organisation_id == org, DoseRecord.infusion_started_at >= since,
               DoseRecord.infusion_started_at <= until))
    check_ins = (
        select(EvvEvent.id, literal("check_in", String), EvvEvent.nurse_id, no_holder,
               no_holder, EvvEvent.occurred_at, EvvEvent.visit_id, Visit.patient_id,
               EvvEvent.reason_enc.is_not(None))
        .join(Visit, Visit.id == EvvEvent.visit_id)
        .where(EvvEvent.organisation_id == org, EvvEvent.kind == "check_in",
               EvvEvent.occurred_at >= since, EvvEvent.occurred_at <= until))
    moves = (
        select(CustodyEntry.id, CustodyEntry.kind, no_nurse, CustodyEntry.from_holder,
               CustodyEntry.to_holder, CustodyEntry.occurred_at, CustodyEntry.visit_id,
               Visit.patient_id, false())
        .outerjoin(Visit, Visit.id == CustodyEntry.visit_id)
        .where(CustodyEntry.organisation_id == org, CustodyEntry.kind.in_(BAG_WORK),
               CustodyEntry.occurred_at >= since, CustodyEntry.occurred_at <= until,
               CustodyEntry.from_holder.like("bag:%") | CustodyEntry.to_holder.like("bag:%")))
    work = union_all(doses, check_ins, moves).subquery()
    per_visit = {"partition_by": work.c.visit_id}
    ranked = select(
        work, func.row_number().over(**per_visit, order_by=(work.c.occurred_at, work.c.id))
        .label("order_in_visit"),
        func.max(case((work.c.has_reason, 1), else_=0)).over(**per_visit)
        .label("visit_has_reason")).subquery()
    ids = {name: id_text(session, ranked.c[name])
           for name in ("id", "nurse_id", "visit_id", "patient_id")}
    rows = session.execute(
        select(ids["id"], ranked.c.kind, ids["nurse_id"], ranked.c.from_holder,
               ranked.c.to_holder, ranked.c.occurred_at, ids["visit_id"], ids["patient_id"],
               case((ranked.c.visit_id.is_(None), ranked.c.has_reason),
                    else_=ranked.c.visit_has_reason == 1))
        .where(ranked.c.visit_id.is_(None) | (ranked.c.order_in_visit == 1)))
    # Unpacked by position and ids read as text: a window holds a hundred thousand occasions,
    # and reading each row's columns by name, and its UUIDs, cost as much as the query.
    return [f.WorkEvent(id=row_id, kind=kind,
                        nurse_id=nurse_id or _bag_nurse(from_holder, to_holder),
                        occurred_at=occurred_at, patient_id=patient_id, visit_id=visit_id,
                        has_reason=bool(has_reason))
            for (row_id, kind, nurse_id, from_holder, to_holder, occurred_at, visit_id,
                 patient_id, has_reason) in rows]


def _weighings(session: Session, scope: Scope, zone: ZoneInfo) -> list[f.Weighing]:
    """Return the patients' weighings in the window and before it, each with the recording
    nurse's visit to the patient that local day."""
    if scope.nurse_id and not scope.patient_id:
        # A nurse's inline check weighs no one: her patients' own checks read their weights.
        return []
    query = (select(PatientWeight.id, PatientWeight.patient_id, PatientWeight.weight_g,
                    PatientWeight.measured_at, PatientWeight.recorded_by_id)
             .join(Patient, Patient.id == PatientWeight.patient_id)
             .where(Patient.organisation_id == scope.organisation_id,
                    PatientWeight.measured_at >= scope.context_since - WEIGHT_HISTORY))
    query = scope.bounded(query, PatientWeight.measured_at)
    if scope.patient_id:
        query = query.where(PatientWeight.patient_id == scope.patient_id)
    rows = list(session.execute(query))
    visits = _weighing_visits(session, scope, rows, zone)
    return [f.Weighing(id=str(row.id), patient_id=str(row.patient_id), weight_g=row.weight_g,
                       measured_at=row.measured_at, recorded_by_id=str(row.recorded_by_id),
                       visit_id=visits.get((row.patient_id, row.recorded_by_id,
                                            row.measured_at.astimezone(zone).date())))
            for row in rows]


def _weighing_visits(session: Session, scope: Scope, rows: list[Any],
                     zone: ZoneInfo) -> dict[tuple, str]:
    """Return the visits by patient, nurse and local day over the weighings' span."""
    if not rows:
        return {}
    query = select(Visit.id, Visit.patient_id, Visit.nurse_id, Visit.scheduled_start).where(
        Visit.organisation_id == scope.organisation_id,
        Visit.scheduled_start >= min(row.measured_at for row in rows) - timedelta(days=1),
        Visit.scheduled_start <= max(row.measured_at for row in rows) + timedelta(days=1))
    if scope.patient_id:
        query = query.where(Visit.patient_id == scope.patient_id)
    return {(row.patient_id, row.nurse_id, row.scheduled_start.astimezone(zone).date()):
            str(row.id) for row in session.execute(query)}


def _readings(session: Session, scope: Scope) -> list[f.SessionReadings]:
    """Return each session's readings in the window: pre-dose, observations, discharge."""
    sessions: dict[uuid.UUID, dict[str, Any]] = {}
    for model in (PreDose, Observation, Discharge):
        rows = session.execute(
            select(model.visit_id, model.nurse_id, model.occurred_at, model.systolic,
                   model.diastolic, model.heart_rate, model.spo2, model.respiratory_rate,
                   model.moaas, model.cadss_total, Visit.patient_id)
            .join(Visit, Visit.id == model.visit_id)
            .where(model.organisation_id == scope.organisation_id,
                   model.occurred_at >= scope.since, model.occurred_at <= scope.as_of)
            .order_by(model.occurred_at))
        for row in rows:
            held = sessions.setdefault(row.visit_id, {
                "nurse_id": str(row.nurse_id), "patient_id": str(row.patient_id),
                "recorded_at": row.occurred_at, "pre_dose": None, "after_dose": []})
            vitals = f.Vitals(systolic=row.systolic, diastolic=row.diastolic,
                              heart_rate=row.heart_rate, spo2=row.spo2,
                              respiratory_rate=row.respiratory_rate, moaas=row.moaas,
                              cadss_total=row.cadss_total)
            if model is PreDose:
                held["pre_dose"] = vitals
            else:
                held["after_dose"].append(vitals)
    return [f.SessionReadings(visit_id=str(visit_id), nurse_id=held["nurse_id"],
                              patient_id=held["patient_id"], recorded_at=held["recorded_at"],
                              pre_dose=held["pre_dose"], after_dose=tuple(held["after_dose"]))
            for visit_id, held in sessions.items()]


def _latest_weights(session: Session, patient_ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Return each patient's most recently measured weight, for those who have one."""
    rows = session.execute(select(PatientWeight.patient_id, PatientWeight.weight_g)
                           .where(PatientWeight.patient_id.in_(patient_ids))
                           .order_by(PatientWeight.measured_at, PatientWeight.recorded_at))
    return dict(rows.all())


def _plans(session: Session, scope: Scope) -> list[f.PlanFact]:
    """Return the plan versions written in the window and those in force, with the frequency
    overrides booked under each, for comparing prescribers."""
    written = (select(PlanVersion, TreatmentPlan.patient_id)
               .join(TreatmentPlan, TreatmentPlan.id == PlanVersion.plan_id)
               .where(TreatmentPlan.organisation_id == scope.organisation_id,
                      (PlanVersion.created_at >= scope.since)
                      | ((TreatmentPlan.status == ACTIVE)
                         & (PlanVersion.version == TreatmentPlan.current_version)))
               .options(selectinload(PlanVersion.phases)).order_by(PlanVersion.created_at))
    versions = session.execute(scope.bounded(written, PlanVersion.created_at)).all()
    overrides = dict(session.execute(
        select(Visit.plan_version_id, func.count()).where(
            Visit.organisation_id == scope.organisation_id,
            Visit.override_reason_enc.is_not(None),
            Visit.plan_version_id.in_([version.id for version, _ in versions]))
        .group_by(Visit.plan_version_id)).all())
    weights = _latest_weights(session, {patient_id for _, patient_id in versions})
    return [plan_fact(version, patient_id, weights.get(patient_id), overrides.get(version.id, 0))
            for version, patient_id in versions]


def organisation_ids(session: Session) -> list[uuid.UUID]:
    """Return every organisation's id."""
    return list(session.scalars(select(Organisation.id).order_by(Organisation.id)))


def facts_of(session: Session, organisation_id: uuid.UUID, now: datetime,
             **given: tuple[Any, ...]) -> f.Facts:
    """Return just the `given` facts, in the organisation's calendar."""
    organisation = session.get(Organisation, organisation_id)
    return f.Facts(organisation_id=str(organisation_id), as_of=now,
                   timezone=organisation.timezone, **given)


def load(session: Session, scope: Scope) -> f.Facts:
    """Return the events in `scope`: doses, wastes, visits, check-ins and quarantined records."""
    organisation = session.get(Organisation, scope.organisation_id)
    phases: dict[tuple, f.Phase] = {}
    return f.Facts(organisation_id=str(scope.organisation_id), as_of=scope.as_of,
                   timezone=organisation.timezone,
                   doses=tuple(_dose(row, phases) for row in _doses(session, scope)),
                   wastes=tuple(_wastes(session, scope)), visits=tuple(_visits(session, scope)),
                   evv=tuple(_evv(session, scope)),
                   quarantined=tuple(_quarantined(session, scope)),
                   refusals=tuple(_refusals(session, scope)),
                   weighings=tuple(_weighings(session, scope,
                                              ZoneInfo(organisation.timezone))),
                   plan_overrides=_plan_overrides(session, scope))


def window(session: Session, scope: Scope) -> f.Facts:
    """Return the visits, check-ins and doses of the scope's window alone (a page's timeline)."""
    bounded = replace(scope, window_only=True)
    phases: dict[tuple, f.Phase] = {}
    return f.Facts(organisation_id=str(scope.organisation_id), as_of=scope.as_of,
                   timezone=session.get(Organisation, scope.organisation_id).timezone,
                   doses=tuple(_dose(row, phases) for row in _doses(session, bounded)),
                   visits=tuple(_visits(session, bounded)), evv=tuple(_evv(session, bounded)))


def load_population(session: Session, scope: Scope, bag_return_hours: int) -> f.Facts:
    """Return the population over the scope's window: peer sums, witness pairs and timed
    confirmations, clocks, the doses and extra visits trends need, open losses, unreturned
    stock and the vault's movements and counts."""
    organisation = session.get(Organisation, scope.organisation_id)
    zone = ZoneInfo(organisation.timezone)
    people = dict(session.execute(select(User.id, User.role).where(
        User.organisation_id == scope.organisation_id, User.active)).all())
    roles = {str(user): str(role) for user, role in people.items()}
    overrides = _plan_overrides(session, scope)
    # With the loaders' look-back: a trend needs the doses before the window to compare with.
    series = _dose_series(session, scope, _series_tail(policy_for(
        session, scope.organisation_id), overrides))
    extra_visits = _visits(session, scope, Visit.override_reason_enc.is_not(None)
                           | Visit.series_id.is_(None))
    return f.Facts(
        organisation_id=str(scope.organisation_id), as_of=scope.as_of,
        timezone=organisation.timezone, dose_series=tuple(series),
        visits=tuple(extra_visits),
        activity=tuple(_activity(session, scope, zone, roles, int(policy_for(
            session, scope.organisation_id).value("waste_share_recent_days")))),
        witness_pairs=tuple(_witness_pairs(session, scope, int(policy_for(
            session, scope.organisation_id).value("witness_pair_recent_days")))),
        attestations=tuple(_attestations(session, scope)),
        clocks=tuple(_clocks(session, scope)),
        work_events=tuple(_work_events(session, scope)),
        weighings=tuple(_weighings(session, scope, zone)),
        readings=tuple(_readings(session, scope)),
        # Open deadlines matter however old the loss; filed ones within the window.
        losses=tuple(_losses(session, scope.organisation_id,
                             LossReport.form_106_filed_at.is_(None)
                             | (LossReport.discovered_at >= scope.since))),
        holdings=tuple(_holdings(session, scope, bag_return_hours)),
        plans=tuple(_plans(session, scope)),
        # The pharmacy side: its movements and differing counts over the window.
        **_vault(session, scope),
        plan_overrides=overrides)
