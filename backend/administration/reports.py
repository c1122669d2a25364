"""Records drawn from sessions: the REMS-style monitoring record and a patient's trajectory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, User
from backend.accounts.service import organisation_zone
from backend.administration.models import (
    Discharge,
    DoseRecord,
    Observation,
    OutcomeScore,
    PreDose,
)
from backend.administration.schemas import MonitoringRecordSchema
from backend.administration.service import SessionRecord, read_session
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.custody.reports import csv_text
from backend.patients.service import PatientView, read_for_record, visible_patient
from backend.plans.models import PlanVersion
from backend.policy.service import policy_for
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.visits.evv import evv_record
from backend.visits.models import Visit
from safeguards.policy import Policy

THOUSANDTHS = Decimal("0.001")
HOME = "Patient's home"
# Where respiratory depression on the form comes from.
RECORDED, DERIVED, UNKNOWN = "recorded", "derived", "unknown"


@dataclass(frozen=True)
class MonitoringRecord:
    """The fields of the Spravato REMS patient monitoring form, for one home session."""

    visit_id: uuid.UUID
    patient_id: uuid.UUID
    patient_name: str | None
    patient_date_of_birth: date | None
    patient_sex: str | None
    prescriber_name: str
    clinician_name: str
    clinician_role: str
    clinician_phone: str | None
    clinician_email: str | None
    organisation_name: str
    setting_name: str
    setting_address: str | None
    date: str
    check_in_latitude: Decimal | None
    check_in_longitude: Decimal | None
    check_in_distance_m: int | None
    check_in_within_radius: bool | None
    product: str | None
    route: str | None
    lot: str | None
    dose_ug: int | None
    dose_mg: Decimal | None
    dose_mg_per_kg: Decimal | None
    dose_started_at: datetime | None
    discharged_at: datetime | None
    ready_to_leave_at: datetime | None
    minutes_monitored: int | None
    bp_pre_systolic: int | None
    bp_pre_diastolic: int | None
    bp_pre_at: datetime | None
    bp_40_min_systolic: int | None
    bp_40_min_diastolic: int | None
    bp_40_min_at: datetime | None
    bp_end_systolic: int | None
    bp_end_diastolic: int | None
    bp_end_at: datetime | None
    vitals_acceptable_pre: bool | None
    vitals_acceptable_end: bool | None
    sedation: bool | None
    dissociation: bool | None
    respiratory_depression: bool | None
    respiratory_depression_source: str
    sedating_co_medications: list[str]
    adverse_event_category: str | None
    adverse_events: str | None


def _mg(micrograms: Decimal | int | None) -> Decimal | None:
    return None if micrograms is None else (Decimal(micrograms) / 1000).quantize(THOUSANDTHS)


def vitals_acceptable(policy: Policy, vitals: PreDose | Discharge | None) -> bool | None:
    """Return whether BP is within the hold thresholds and SpO2 not alarming; None if unmeasured."""
    if vitals is None or None in (vitals.systolic, vitals.diastolic, vitals.spo2):
        return None
    return (vitals.systolic <= int(policy.value("bp_hold_systolic"))
            and vitals.diastolic <= int(policy.value("bp_hold_diastolic"))
            and vitals.spo2 >= int(policy.value("alarm_spo2")))


def bp_near_peak(policy: Policy, dose: DoseRecord | None,
                 observations: list[Observation]) -> Observation | None:
    """Return the blood-pressure reading nearest the policy's peak time (the REMS "~40 min")."""
    if dose is None:
        return None
    target = dose.infusion_started_at + timedelta(minutes=int(policy.value("bp_peak_minutes")))
    tolerance = timedelta(minutes=int(policy.value("bp_peak_tolerance_minutes")))
    near = [o for o in observations if o.systolic is not None
            and abs(o.occurred_at - target) <= tolerance]
    return min(near, key=lambda o: abs(o.occurred_at - target), default=None)


def _after_dose(record: SessionRecord) -> list[Observation | Discharge]:
    return [*record.observations, *([record.discharge] if record.discharge else [])]


def sedation(record: SessionRecord) -> bool | None:
    """Return whether any MOAA/S after the dose fell below the pre-dose baseline."""
    if record.pre_dose is None or record.pre_dose.moaas is None:
        return None
    return any(r.moaas is not None and r.moaas < record.pre_dose.moaas
               for r in _after_dose(record))


def dissociation(record: SessionRecord) -> bool | None:
    """Return whether any CADSS total after the dose rose above the pre-dose baseline."""
    if record.pre_dose is None:
        return None
    # The baseline CADSS is optional; without one, any dissociative symptom counts.
    baseline = record.pre_dose.cadss_total or 0
    return any(r.cadss_total is not None and r.cadss_total > baseline
               for r in _after_dose(record))


def respiratory_depression(policy: Policy, record: SessionRecord) -> tuple[bool | None, str]:
    """Return whether breathing was depressed after the dose, and whence that answer comes.

    The nurse's own yes/no from the discharge when her phone recorded it; else derived from
    the readings after the dose: a respiratory rate or SpO2 below the policy's alarm
    thresholds (those of the alarming-vitals rule); unknown when neither was measured.
    """
    if record.discharge is not None and record.discharge.respiratory_depression is not None:
        return record.discharge.respiratory_depression, RECORDED
    slowest, lowest = policy.value("alarm_respiratory_rate"), policy.value("alarm_spo2")
    measured = [r for r in _after_dose(record)
                if r.respiratory_rate is not None or r.spo2 is not None]
    if not measured:
        return None, UNKNOWN
    return any((r.respiratory_rate is not None and r.respiratory_rate < slowest)
               or (r.spo2 is not None and r.spo2 < lowest) for r in measured), DERIVED


def _minutes(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() // 60)


def _people(session: Session, visit: Visit) -> dict[str, Any]:
    """Return who prescribed (the plan version the visit followed) and who monitored."""
    nurse = session.get(User, visit.nurse_id)
    return {"prescriber_name": session.get(PlanVersion, visit.plan_version_id)
            .prescriber.display_name,
            "clinician_name": nurse.display_name, "clinician_role": nurse.role.value,
            "clinician_phone": nurse.phone, "clinician_email": nurse.email,
            "organisation_name": session.get(Organisation, visit.organisation_id).name,
            "setting_name": HOME}


def _patient(shown: PatientView | None) -> dict[str, Any]:
    """Return the form's patient lines: empty for a caller who may no longer see the patient."""
    return {"patient_name": shown.name if shown else None,
            "patient_date_of_birth": shown.date_of_birth if shown else None,
            "patient_sex": shown.sex if shown else None,
            "setting_address": shown.address if shown else None}


def _dose(session: Session, dose: DoseRecord | None) -> dict[str, Any]:
    product = session.get(DrugProduct, dose.product_id) if dose else None
    return {"product": product.name if product else None,
            "route": dose.route if dose else None, "lot": dose.lot if dose else None,
            "dose_ug": dose.quantity_ug if dose else None,
            "dose_mg": _mg(dose.quantity_ug) if dose else None,
            "dose_mg_per_kg": _mg(dose.ug_per_kg) if dose else None,
            "dose_started_at": dose.infusion_started_at if dose else None}


def _blood_pressures(policy: Policy, record: SessionRecord) -> dict[str, Any]:
    """Return the form's three blood pressures, each with when it was taken."""
    readings = {"pre": record.pre_dose, "40_min": bp_near_peak(policy, record.dose,
                                                              record.observations),
                "end": record.discharge}
    out: dict[str, Any] = {}
    for when, reading in readings.items():
        taken = reading is not None and reading.systolic is not None
        out[f"bp_{when}_systolic"] = reading.systolic if taken else None
        out[f"bp_{when}_diastolic"] = reading.diastolic if taken else None
        out[f"bp_{when}_at"] = reading.occurred_at if taken else None
    return out


def _end(policy: Policy, record: SessionRecord) -> dict[str, Any]:
    """Return the discharge's lines, the observations' yes/no and the adverse events."""
    end, pre = record.discharge, record.pre_dose
    depressed, source = respiratory_depression(policy, record)
    return {"discharged_at": end.occurred_at if end else None,
            "ready_to_leave_at": end.ready_to_leave_at if end else None,
            "minutes_monitored": _minutes(record.dose.infusion_started_at if record.dose
                                          else None, end.occurred_at if end else None),
            "vitals_acceptable_pre": vitals_acceptable(policy, pre),
            "vitals_acceptable_end": vitals_acceptable(policy, end),
            "sedation": sedation(record), "dissociation": dissociation(record),
            "respiratory_depression": depressed, "respiratory_depression_source": source,
            "sedating_co_medications": list(pre.co_medications) if pre else [],
            "adverse_event_category": end.adverse_event_category if end else None,
            "adverse_events": end.adverse_events if end else None}


# The form's fields that hold PHI, named in the audit row of each read that shows them.
PHI_FIELDS = ("patient_name", "patient_date_of_birth", "patient_sex", "setting_address",
              "adverse_events")


def monitoring_record(session: Session, rt: Runtime, caller: Caller,
                      visit_id: uuid.UUID) -> MonitoringRecord:
    """Return a visit's REMS monitoring record, its PHI decrypted; audit the read."""
    record = read_session(session, caller, visit_id)
    evv = evv_record(session, caller, visit_id)
    visit = session.get(Visit, visit_id)
    policy = policy_for(session, caller.organisation_id)
    check_in = evv.check_in
    form = MonitoringRecord(
        visit_id=visit.id, patient_id=visit.patient_id, date=evv.date,
        **_patient(read_for_record(session, rt, caller, visit.patient_id)),
        **_people(session, visit),
        check_in_latitude=check_in.latitude if check_in else None,
        check_in_longitude=check_in.longitude if check_in else None,
        check_in_distance_m=check_in.distance_m if check_in else None,
        check_in_within_radius=check_in.within_radius if check_in else None,
        **_dose(session, record.dose), **_blood_pressures(policy, record),
        **_end(policy, record))
    audit.record(session, rt.clock.now(), caller, "session.monitoring_record_read", "visit",
                 visit.id, detail={"patient_id": str(visit.patient_id),
                                   "phi": [name for name in PHI_FIELDS
                                           if getattr(form, name) is not None]})
    return form


def _csv_cell(value: Any) -> Any:
    # JSON's literals, which a spreadsheet reads as TRUE and FALSE, rather than Python's.
    return ("true" if value else "false") if isinstance(value, bool) else value


def monitoring_csv(forms: list[MonitoringRecord]) -> str:
    """Return monitoring records as CSV: the JSON's field names and values, a row each."""
    rows = [{name: _csv_cell(value) for name, value in MonitoringRecordSchema().dump(form)
             .items()} for form in forms]
    return csv_text(rows, list(MonitoringRecordSchema().fields))


@dataclass(frozen=True)
class ScorePoint:
    """One outcome score on a patient's trajectory."""

    instrument: str
    total: int
    date: date
    occurred_at: datetime
    visit_id: uuid.UUID


@dataclass(frozen=True)
class DosePoint:
    """One dose on a patient's trajectory."""

    date: date
    occurred_at: datetime
    quantity_ug: int
    ug_per_kg: Decimal | None
    visit_id: uuid.UUID


@dataclass(frozen=True)
class Trajectory:
    """A patient's outcome scores and doses over time, each oldest first."""

    patient_id: uuid.UUID
    scores: list[ScorePoint]
    doses: list[DosePoint]


def trajectory(session: Session, rt: Runtime, caller: Caller,
               patient_id: uuid.UUID) -> Trajectory:
    """Return a patient's outcome scores and doses by date (a nurse: her patient); audited."""
    patient = visible_patient(session, caller, patient_id)
    zone = organisation_zone(session, patient.organisation_id)
    of_patient = select(Visit.id).where(Visit.patient_id == patient.id)
    scores = session.scalars(select(OutcomeScore).where(OutcomeScore.visit_id.in_(of_patient))
                             .order_by(OutcomeScore.occurred_at, OutcomeScore.id))
    doses = session.scalars(select(DoseRecord).where(DoseRecord.visit_id.in_(of_patient))
                            .order_by(DoseRecord.infusion_started_at, DoseRecord.id))
    audit.record(session, rt.clock.now(), caller, "patient.trajectory_read", "patient",
                 patient.id)
    return Trajectory(
        patient_id=patient.id,
        scores=[ScorePoint(s.instrument, s.total, s.occurred_at.astimezone(zone).date(),
                           s.occurred_at, s.visit_id) for s in scores],
        doses=[DosePoint(d.infusion_started_at.astimezone(zone).date(), d.infusion_started_at,
                         d.quantity_ug, d.ug_per_kg, d.visit_id) for d in doses])
