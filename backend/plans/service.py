"""Write treatment plans as immutable, signed versions; find the version and phase in force."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import changes
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.db import new_id
from backend.errors import Conflict, InvalidField
from backend.mfa.policy import Action, require_fresh
from backend.patients.service import latest_weight, visible_patient
from backend.plans import signing
from backend.plans.models import PlanPhase, PlanVersion, TreatmentPlan
from backend.policy.service import policy_for
from backend.products import service as products
from backend.runtime import Runtime
from backend.tenancy import assigned, owned
from safeguards import facts as f
from safeguards.policy import Number, Policy
from safeguards.stats import rounded

ACTIVE = "active"


@dataclass(frozen=True)
class PhaseSpec:
    """A phase as the prescriber writes it; limits left out come from policy."""

    name: str
    starts_on: date
    min_interval_hours: int
    max_per_7_days: int
    max_per_28_days: int
    dose_ug_per_kg: int | None = None
    dose_ug: int | None = None


@dataclass(frozen=True)
class PlanSpec:
    """What a prescriber writes: drug, route, dose, ceiling, infusion time and phases."""

    product_id: uuid.UUID
    route: str
    max_dose_ug: int
    infusion_minutes: int
    starts_on: date
    phases: list[PhaseSpec]
    dose_ug_per_kg: int | None = None
    dose_ug: int | None = None
    policy_overrides: Mapping[str, Number] = dataclasses.field(default_factory=dict)
    # Why the dose is above the protocol dose; required when it is (PHI, kept encrypted).
    dose_justification: str | None = None


def default_phases(policy: Policy, starts_on: date) -> list[PhaseSpec]:
    """Return induction, maintenance and taper phases from policy (CLINICAL.md Frequency)."""
    phases, start = [], starts_on
    for name in ("induction", "maintenance", "taper"):
        phases.append(PhaseSpec(
            name=name, starts_on=start,
            min_interval_hours=int(policy.value("min_interval_hours")),
            max_per_7_days=int(policy.value(f"{name}_max_per_7_days")),
            max_per_28_days=int(policy.value(f"{name}_max_per_28_days"))))
        if name != "taper":
            start += timedelta(weeks=int(policy.value(f"{name}_weeks")))
    return phases


def _check(session: Session, caller: Caller, policy: Policy, spec: PlanSpec) -> None:
    product = products.get(session, caller, spec.product_id)
    if spec.route not in product.allowed_routes:
        raise InvalidField("route", f"{product.name} allows {', '.join(product.allowed_routes)}")
    if (spec.dose_ug_per_kg is None) == (spec.dose_ug is None):
        raise InvalidField("dose_ug_per_kg", "give exactly one of dose_ug_per_kg and dose_ug")
    # A plan may lower the ceiling for its patient but not lift it above the organisation's:
    # the prescriber who writes the plan is the one the ceiling holds to.
    ceiling = min(policy.value("max_mg_per_kg_racemic_iv"), policy.with_overrides(
        spec.policy_overrides).value("max_mg_per_kg_racemic_iv")) * 1000
    for field, value in (("dose_ug_per_kg", spec.dose_ug_per_kg),
                         *((f"phases.{i}.dose_ug_per_kg", p.dose_ug_per_kg)
                           for i, p in enumerate(spec.phases))):
        if value is not None and value > ceiling:
            raise InvalidField(field, f"above the policy ceiling of {ceiling} µg/kg")
    starts = [phase.starts_on for phase in spec.phases]
    if not starts or starts[0] != spec.starts_on or starts != sorted(set(starts)):
        raise InvalidField("phases", "the first phase starts with the plan; starts increase")


def highest_doses(written: PlanSpec | PlanVersion) -> tuple[int | None, int | None]:
    """Return the highest per-kg (µg/kg) and fixed (µg) dose a plan or any phase of it sets."""
    per_kg = [d for d in (written.dose_ug_per_kg, *(p.dose_ug_per_kg for p in written.phases))
              if d is not None]
    fixed = [d for d in (written.dose_ug, *(p.dose_ug for p in written.phases)) if d is not None]
    return max(per_kg, default=None), max(fixed, default=None)


def _check_justified(policy: Policy, spec: PlanSpec, weight_g: int | None) -> None:
    """Refuse a plan above the protocol dose that does not say why (CLINICAL.md)."""
    # The organisation's protocol dose: the plan's own overrides cannot lift it for itself.
    protocol = policy.value("protocol_mg_per_kg")
    planned = f.planned_ug_per_kg(*highest_doses(spec), weight_g)
    if planned is None or planned <= protocol * 1000 or (spec.dose_justification or "").strip():
        return
    raise InvalidField("dose_justification", (
        f"the plan's dose, {rounded(planned / 1000, 3)} mg/kg at its highest, is above the "
        f"{protocol} mg/kg protocol dose: record why in dose_justification"))


def justified_above_protocol(session: Session, version: PlanVersion,
                             weight_g: int | None) -> bool:
    """Tell whether the version is above the protocol dose (at `weight_g`) and says why."""
    if version.dose_justification_enc is None:
        return False
    planned = f.planned_ug_per_kg(*highest_doses(version), weight_g)
    protocol = policy_for(session, version.organisation_id).value("protocol_mg_per_kg")
    return planned is not None and planned > protocol * 1000


def _checked(session: Session, caller: Caller, spec: PlanSpec,
             patient_id: uuid.UUID) -> int | None:
    """Refuse a spec the product, the ceiling or the protocol refuses; return the weight used."""
    policy = policy_for(session, caller.organisation_id)
    _check(session, caller, policy, spec)
    weighed = latest_weight(session, patient_id)
    weight_g = weighed.weight_g if weighed else None
    _check_justified(policy, spec, weight_g)
    return weight_g


def plan_fact(version: PlanVersion, patient_id: uuid.UUID, weight_g: int | None,
              overrides: int = 0) -> f.PlanFact:
    """Return the rules' fact of a plan version: its highest doses, weight and overrides."""
    per_kg, fixed = highest_doses(version)
    return f.PlanFact(
        id=str(version.id), plan_id=str(version.plan_id), version=version.version,
        patient_id=str(patient_id), prescriber_id=str(version.prescriber_id),
        created_at=version.created_at, dose_ug_per_kg=per_kg, dose_ug=fixed,
        max_dose_ug=version.max_dose_ug, weight_g=weight_g,
        justified=version.dose_justification_enc is not None, overrides=overrides)


def _written(session: Session, plan: TreatmentPlan, version: PlanVersion,
             weight_g: int | None) -> None:
    """Note the new version for the rules, judged as this unit of work commits."""
    changes.facts(session, plan.organisation_id,
                  plans=(plan_fact(version, plan.patient_id, weight_g),))


def _write_version(session: Session, caller: Caller, now: datetime, plan: TreatmentPlan,
                   spec: PlanSpec, reason: str | None) -> PlanVersion:
    version = PlanVersion(
        id=new_id(), plan_id=plan.id, organisation_id=plan.organisation_id,
        version=plan.current_version, product_id=spec.product_id, route=spec.route,
        dose_ug_per_kg=spec.dose_ug_per_kg, dose_ug=spec.dose_ug, max_dose_ug=spec.max_dose_ug,
        infusion_minutes=spec.infusion_minutes, prescriber_id=caller.user_id, created_at=now,
        change_reason=reason, dose_justification=(spec.dose_justification or "").strip() or None,
        policy_overrides={name: str(value) for name, value in spec.policy_overrides.items()}
        or None)
    phases = [PlanPhase(version_id=version.id, ordinal=i, name=p.name, starts_on=p.starts_on,
                        dose_ug_per_kg=p.dose_ug_per_kg, dose_ug=p.dose_ug,
                        min_interval_hours=p.min_interval_hours,
                        max_per_7_days=p.max_per_7_days, max_per_28_days=p.max_per_28_days)
              for i, p in enumerate(spec.phases)]
    signing.sign(caller, now, plan, version, phases)
    session.add(version)
    session.flush()
    session.add_all(phases)
    session.flush()
    return version


def create(session: Session, rt: Runtime, caller: Caller, patient_id: uuid.UUID,
           spec: PlanSpec, plan_id: uuid.UUID | None = None) -> TreatmentPlan:
    """Write a patient's first plan version; a patient has one active plan at a time."""
    patient = visible_patient(session, caller, patient_id)
    require_fresh(session, rt, caller, Action.SIGN_PLAN)
    weight_g = _checked(session, caller, spec, patient.id)
    if session.scalar(select(TreatmentPlan.id).where(TreatmentPlan.patient_id == patient.id,
                                                     TreatmentPlan.status == ACTIVE)):
        raise Conflict("The patient already has an active plan; change it with PUT.",
                       {"rule": "active_plan_exists"})
    now = rt.clock.now()
    plan = TreatmentPlan(id=plan_id or uuid.uuid4(), organisation_id=caller.organisation_id,
                         patient_id=patient.id, status=ACTIVE, current_version=1,
                         created_at=now, created_by_id=caller.user_id)
    session.add(plan)
    _written(session, plan, _write_version(session, caller, now, plan, spec, None), weight_g)
    audit.record(session, now, caller, "plan.create", "treatment_plan", plan.id)
    return plan


def revise(session: Session, rt: Runtime, caller: Caller, plan_id: uuid.UUID, spec: PlanSpec,
           reason: str) -> TreatmentPlan:
    """Write a new version of an active plan; earlier versions stay as they were."""
    plan = get(session, caller, plan_id)
    if plan.status != ACTIVE:
        raise Conflict("Only an active plan can be changed.", {"rule": "plan_not_active"})
    require_fresh(session, rt, caller, Action.SIGN_PLAN)
    weight_g = _checked(session, caller, spec, plan.patient_id)
    now = rt.clock.now()
    plan.current_version += 1
    _written(session, plan, _write_version(session, caller, now, plan, spec, reason), weight_g)
    session.refresh(plan, ["versions"])
    audit.record(session, now, caller, "plan.revise", "treatment_plan", plan.id,
                 detail={"version": plan.current_version})
    return plan


def get(session: Session, caller: Caller, plan_id: uuid.UUID) -> TreatmentPlan:
    """Return a plan whose patient the caller may see, or raise NotFound."""
    return owned(session, caller, TreatmentPlan, plan_id, what="plan",
                 nurse_sees=assigned("patient_id"))


def active_version(session: Session, patient_id: uuid.UUID) -> PlanVersion | None:
    """Return the version in force of the patient's active plan, if there is one."""
    return session.scalar(
        select(PlanVersion).join(TreatmentPlan, PlanVersion.plan_id == TreatmentPlan.id)
        .where(TreatmentPlan.patient_id == patient_id, TreatmentPlan.status == ACTIVE,
               PlanVersion.version == TreatmentPlan.current_version))


def counted_from(ordinal: int, starts_on: date) -> date | None:
    """Return the first local date whose doses count toward a phase's 7- and 28-day limits."""
    # A phase's limits are for its own doses: induction's twice weekly must not fill the
    # 28 days of the weekly maintenance that follows it. The first phase reaches back before
    # the plan, so an earlier plan's last doses still count toward it.
    return starts_on if ordinal else None


def counted_dates(version: PlanVersion, phase: PlanPhase) -> tuple[date | None, date | None]:
    """Return the local dates, first and after the last, whose doses count toward `phase`'s
    7- and 28-day limits; the last phase's are open-ended."""
    later = [p.starts_on for p in version.phases if p.ordinal > phase.ordinal]
    return counted_from(phase.ordinal, phase.starts_on), min(later, default=None)


def phase_at(version: PlanVersion, at: datetime, zone: tzinfo) -> PlanPhase | None:
    """Return the phase in force at `at`, judged by the date in the organisation's `zone`."""
    local_day = at.astimezone(zone).date()
    started = [phase for phase in version.phases if phase.starts_on <= local_day]
    return started[-1] if started else None
