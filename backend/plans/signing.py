"""Sign a plan version as an order: the SHA-256 of its canonical content, who, when, what factor.

A treatment plan is a prescriber's order for a Schedule III substance. As an electronic
prescription for a controlled substance must be (21 CFR 1311.120(b)(11), 1311.140), it is signed
at the moment it is written, with the prescriber's second factor proved within the step-up
window, and the signature is kept with it: the canonical JSON (RFC 8785) of everything the
order says — patient, drug, route, doses, ceiling, infusion time, phases, thresholds — and of
who signed it, when, and with which factor, hashed with SHA-256. A version is never changed
after it is written; a change is a new version, signed again. `verify` recomputes the hash
from the stored rows: any later edit of a signed row shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import rfc8785

from backend.auth.caller import Caller
from backend.plans.models import PlanPhase, PlanVersion, TreatmentPlan

PHASE_FIELDS = ("ordinal", "name", "starts_on", "dose_ug_per_kg", "dose_ug",
                "min_interval_hours", "max_per_7_days", "max_per_28_days")


def _text(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else (
        str(value) if value is not None and not isinstance(value, (int, str, bool)) else value)


def content(plan: TreatmentPlan, version: PlanVersion, phases: Sequence[PlanPhase]) -> dict:
    """Return what the signature covers: the order as written, and who signed it, when, how."""
    return {
        "organisation_id": str(version.organisation_id), "plan_id": str(plan.id),
        "patient_id": str(plan.patient_id), "version": version.version,
        "product_id": str(version.product_id), "route": version.route,
        "dose_ug_per_kg": version.dose_ug_per_kg, "dose_ug": version.dose_ug,
        "max_dose_ug": version.max_dose_ug, "infusion_minutes": version.infusion_minutes,
        "policy_overrides": version.policy_overrides or {},
        "phases": [{name: _text(getattr(phase, name)) for name in PHASE_FIELDS}
                   for phase in sorted(phases, key=lambda phase: phase.ordinal)],
        "signer_id": str(version.prescriber_id), "signed_at": _text(version.signed_at),
        "factor": {"method": version.signature_method,
                   "factor_id": _text(version.signature_factor_id),
                   "proved_at": _text(version.factor_proved_at)},
    }


def digest(plan: TreatmentPlan, version: PlanVersion, phases: Sequence[PlanPhase]) -> str:
    """Return the hex SHA-256 of the canonical JSON of `content`."""
    return hashlib.sha256(rfc8785.dumps(content(plan, version, phases))).hexdigest()


def sign(caller: Caller, now: datetime, plan: TreatmentPlan, version: PlanVersion,
         phases: Sequence[PlanPhase]) -> None:
    """Sign `version` (before it is stored) with the caller's second factor."""
    factor = caller.factor
    version.signed_at = now
    version.signature_method = factor.method
    version.signature_factor_id = factor.factor_id
    version.factor_proved_at = factor.proved_at
    version.content_hash = digest(plan, version, phases)


def verify(plan: TreatmentPlan, version: PlanVersion) -> bool | None:
    """Return whether a signed version's stored content still matches its hash; None if unsigned."""
    if version.content_hash is None:
        return None
    return digest(plan, version, version.phases) == version.content_hash
