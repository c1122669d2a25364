"""Turn visits' recorded sessions into the monitoring rules' facts."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.administration.models import Discharge, DoseRecord, Observation, PreDose, Vitals
from backend.plans.models import PlanVersion
from backend.plans.service import justified_above_protocol
from backend.products.models import DrugProduct
from backend.visits.models import Visit
from safeguards import facts as f


def _vitals(row: Vitals | None) -> f.Vitals | None:
    if row is None:
        return None
    return f.Vitals(systolic=row.systolic, diastolic=row.diastolic,
                        heart_rate=row.heart_rate, spo2=row.spo2,
                        respiratory_rate=row.respiratory_rate, moaas=row.moaas,
                        cadss_total=row.cadss_total)


def _rows(session: Session, model: type, visit_id: uuid.UUID,
          organisation_id: uuid.UUID) -> list:
    # Scoped to the organisation: a visit id from elsewhere must read as an empty session.
    return list(session.scalars(select(model).where(
        model.visit_id == visit_id, model.organisation_id == organisation_id)
        .order_by(model.occurred_at)))


def _dose_facts(session: Session, dose: DoseRecord | None) -> dict:
    if dose is None:
        return {}
    plan = session.get(PlanVersion, dose.plan_version_id)
    product = session.get(DrugProduct, dose.product_id)
    return {"dose_ug": dose.quantity_ug, "ug_per_kg": dose.ug_per_kg, "weight_g": dose.weight_g,
            "plan_max_dose_ug": plan.max_dose_ug, "plan_infusion_minutes": plan.infusion_minutes,
            "active_ingredient": product.active_ingredient if product else None,
            "route": dose.route, "infusion_started_at": dose.infusion_started_at,
            "infusion_ended_at": dose.infusion_ended_at,
            "plan_dose_justified": justified_above_protocol(session, plan, dose.weight_g)}


def session_facts(session: Session, visit_id: uuid.UUID,
                  organisation_id: uuid.UUID) -> f.SessionFacts:
    """Return what the visit's session recorded, as the monitoring rules' facts."""
    pre = next(iter(_rows(session, PreDose, visit_id, organisation_id)), None)
    dose = next(iter(_rows(session, DoseRecord, visit_id, organisation_id)), None)
    end = next(iter(_rows(session, Discharge, visit_id, organisation_id)), None)
    start = dose.infusion_started_at if dose else None
    observed = tuple(
        f.Observed((row.occurred_at - start) // timedelta(minutes=1) if start else None,
                       _vitals(row))
        for row in _rows(session, Observation, visit_id, organisation_id))
    return f.SessionFacts(
        visit_id=str(visit_id), pre_dose=_vitals(pre), pre_dose_at=pre.occurred_at if pre else None,
        bp_justification=pre.bp_justification if pre else None,
        weight_measured_at=pre.weight_measured_at if pre else None,
        **_dose_facts(session, dose), observations=observed,
        discharged_at=end.occurred_at if end else None, discharge=_vitals(end))



def visit_sessions(session: Session, organisation_id: uuid.UUID,
                   visit_ids: set[uuid.UUID]) -> list[tuple[uuid.UUID, f.SessionFacts]]:
    """Return each of the organisation's visits' patient and session facts."""
    if not visit_ids:
        return []
    visits = session.execute(select(Visit.id, Visit.patient_id).where(
        Visit.id.in_(visit_ids), Visit.organisation_id == organisation_id).order_by(Visit.id))
    return [(patient_id, session_facts(session, visit_id, organisation_id))
            for visit_id, patient_id in visits]
