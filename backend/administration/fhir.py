"""Export a home session as a FHIR R4 Bundle: the dose and every observation, coded."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from backend.administration.models import Discharge, DoseRecord, Observation, PreDose
from backend.administration.service import read_session
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.visits.models import Visit

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# MOAA/S and CADSS have no LOINC codes (CLINICAL.md): they are coded in Vigil's own system.
SCALES = "https://vigil.example/fhir/CodeSystem/scales"
PRODUCTS = "https://vigil.example/fhir/CodeSystem/products"
# Record attribute → (code system, code, display, UCUM unit or None for a score, category).
CODES = {
    "systolic": (LOINC, "8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs"),
    "diastolic": (LOINC, "8462-4", "Diastolic blood pressure", "mm[Hg]", "vital-signs"),
    "heart_rate": (LOINC, "8867-4", "Heart rate", "/min", "vital-signs"),
    "respiratory_rate": (LOINC, "9279-1", "Respiratory rate", "/min", "vital-signs"),
    "spo2": (LOINC, "2708-6", "Oxygen saturation in Arterial blood", "%", "vital-signs"),
    "moaas": (SCALES, "moaas", "Modified Observer's Assessment of Alertness/Sedation", None,
              "survey"),
    "cadss_total": (SCALES, "cadss-total", "Clinician-Administered Dissociative States Scale "
                                           "total", None, "survey"),
}


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def _quantity(value: float | int, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def medication_administration(dose: DoseRecord, product: DrugProduct,
                              visit: Visit) -> dict[str, Any]:
    """Return the dose as a completed R4 MedicationAdministration, in mg (UCUM)."""
    return {
        "resourceType": "MedicationAdministration", "id": str(dose.id), "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": PRODUCTS, "code": str(product.id), "display": product.name}],
            "text": f"{product.name} ({product.active_ingredient})"},
        "subject": {"reference": f"Patient/{visit.patient_id}"},
        "effectivePeriod": {"start": dose.infusion_started_at.isoformat(),
                            "end": dose.infusion_ended_at.isoformat()},
        "performer": [{"actor": {"reference": f"Practitioner/{dose.nurse_id}"}}],
        "dosage": {"route": {"text": dose.route},
                   # Micrograms are integers, so mg to three places is exact in a JSON number.
                   "dose": _quantity(dose.quantity_ug / 1000, "mg")},
        "note": [{"text": f"Lot {dose.lot}, expiry {dose.expiry.isoformat()}"}],
    }


def observations(record: PreDose | Observation | Discharge, visit: Visit) -> list[dict]:
    """Return one final R4 Observation per vital or scale the record holds."""
    resources = []
    for attribute, (system, code, display, unit, category) in CODES.items():
        value = getattr(record, attribute)
        if value is None:
            continue
        resources.append({
            "resourceType": "Observation",
            # Stable per record and measure, so a re-export names the same resources.
            "id": str(uuid.uuid5(record.id, attribute)), "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}],
                     "text": display},
            "subject": {"reference": f"Patient/{visit.patient_id}"},
            "effectiveDateTime": record.occurred_at.isoformat(),
            **({"valueQuantity": _quantity(value, unit)} if unit
               else {"valueInteger": value})})
    return resources


def session_bundle(session: Session, rt: Runtime, caller: Caller,
                   visit_id: uuid.UUID) -> dict[str, Any]:
    """Return a visit's session as a FHIR R4 collection Bundle; audit the read."""
    record = read_session(session, caller, visit_id)
    visit = session.get(Visit, visit_id)
    resources = []
    if record.dose is not None:
        product = session.get(DrugProduct, record.dose.product_id)
        resources.append(medication_administration(record.dose, product, visit))
    for measured in (record.pre_dose, *record.observations, record.discharge):
        if measured is not None:
            resources.extend(observations(measured, visit))
    now = rt.clock.now()
    audit.record(session, now, caller, "session.fhir_export", "visit", visit.id,
                 detail={"patient_id": str(visit.patient_id)})
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection",
            "timestamp": now.isoformat(), "entry": [_entry(r) for r in resources]}
