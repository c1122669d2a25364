"""Export home sessions as FHIR R4 (4.0.1) collection Bundles that resolve whole.

A Bundle holds every resource its entries reference, each once under `urn:uuid:<id>`, and
every reference is that full URL: the Patient (only what the caller may read of them), the
Practitioners, the Organization, the patient's home as a Location, and per visit the
Encounter, Medication, MedicationRequest, MedicationAdministration, Observations and
AdverseEvent. Ids are stable per record (uuid5 where one record yields several resources), so a
re-export names the same resources and an importer updates rather than duplicates them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, User
from backend.administration.models import (
    Discharge,
    DoseRecord,
    Observation,
    OutcomeScore,
    PreDose,
)
from backend.administration.service import SessionRecord, read_session, read_sessions
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import NotFound
from backend.patients import service as patients
from backend.patients.models import Patient
from backend.patients.service import PatientView
from backend.plans.models import PlanPhase, PlanVersion
from backend.products.models import DrugProduct
from backend.products.ndc import formatted
from backend.runtime import Runtime
from backend.visits import service as visits
from backend.visits.models import EvvEvent, Visit, VisitStatus

Resource = dict[str, Any]
Reference = dict[str, str]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"
VIGIL = "https://vigil.example/fhir"
# MOAA/S, CADSS, BPRS and MADRS have no LOINC codes we can vouch for (CLINICAL.md): they are
# coded in Vigil's own systems.
SCALES = f"{VIGIL}/CodeSystem/scales"
ADVERSE_EVENT_CATEGORY = f"{VIGIL}/CodeSystem/adverse-event-category"

# The routes a product allows (backend.products.service.ROUTES) as SNOMED CT names them.
ROUTES = {"IV": ("47625008", "Intravenous route"), "IM": ("78421000", "Intramuscular route"),
          "SC": ("34206005", "Subcutaneous route"), "intranasal": ("46713006", "Nasal route")}
ADVERSE_EVENTS = {"hypertension": "Hypertension", "nausea_vomiting": "Nausea or vomiting",
                  "excess_sedation": "Excess sedation", "dissociation": "Dissociation",
                  "psychotomimetic": "Psychotomimetic symptoms",
                  "respiratory": "Respiratory event", "cardiac": "Cardiac event",
                  "other": "Other adverse event"}
HOME_VISIT = {"coding": [{"system": SNOMED, "code": "439708006", "display": "Home visit"}],
              "text": "Home visit"}
HOME_HEALTH = {"system": ACT_CODE, "code": "HH", "display": "home health"}
PRIMARY_PERFORMER = {"coding": [{"system": PARTICIPATION_TYPE, "code": "PPRF",
                                 "display": "primary performer"}]}


@dataclass(frozen=True)
class Vital:
    """How a vital sign is coded: its LOINC codes (the first names it), UCUM unit, profile."""

    codes: tuple[tuple[str, str], ...]
    unit: str
    profile: str


VITALS = {
    "heart_rate": Vital((("8867-4", "Heart rate"),), "/min", "heart-rate"),
    "respiratory_rate": Vital((("9279-1", "Respiratory rate"),), "/min", "respiratory-rate"),
    # US Core's pulse-oximetry profile asks for the arterial code beside the pulse-oximetry one.
    "spo2": Vital((("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
                   ("2708-6", "Oxygen saturation in Arterial blood")), "%", "pulse-oximetry"),
}
BLOOD_PRESSURE = (("85354-9", "Blood pressure panel with all children optional"),
                  ("systolic", "8480-6", "Systolic blood pressure"),
                  ("diastolic", "8462-4", "Diastolic blood pressure"))
MOAAS = {"system": SCALES, "code": "moaas",
         "display": "Modified Observer's Assessment of Alertness/Sedation"}


@dataclass(frozen=True)
class Scale:
    """A rating scale as one Observation: the total's code, its items as components."""

    system: str
    code: str
    display: str
    label: str
    item_names: tuple[str, ...] = ()

    def concept(self) -> dict[str, Any]:
        """Return the total's CodeableConcept."""
        return {"coding": [{"system": self.system, "code": self.code, "display": self.display}],
                "text": self.display}

    def item(self, number: int) -> dict[str, Any]:
        """Return item `number`'s CodeableConcept, in Vigil's scale codes."""
        name = self.item_names[number - 1] if self.item_names else f"item {number}"
        display = f"{self.label} {name}"
        return {"coding": [{"system": SCALES, "code": f"{self.label.lower()}-{number}",
                            "display": display}], "text": display}


CADSS = Scale(SCALES, "cadss-total", "Clinician-Administered Dissociative States Scale total",
              "CADSS")
# CLINICAL.md: the BPRS positive subscale's four items, in Vigil's item order.
BPRS = Scale(SCALES, "bprs-positive-total", "Brief Psychiatric Rating Scale positive "
             "symptoms total", "BPRS-positive", ("suspiciousness", "hallucinations",
                                                 "unusual thought content",
                                                 "conceptual disorganisation"))
OUTCOMES = {
    "phq9": Scale(LOINC, "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score "
                  "[Reported]", "PHQ-9"),
    "madrs": Scale(SCALES, "madrs-total", "Montgomery-Asberg Depression Rating Scale total",
                   "MADRS"),
}


class Entries:
    """A Bundle's resources by full URL, each once, in the order first added."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}

    def add(self, resource: Resource) -> Reference:
        """Hold `resource` (a second copy of one held is dropped) and return a reference."""
        url = f"urn:uuid:{resource['id']}"
        self.resources.setdefault(url, resource)
        return {"reference": url}

    def bundle(self, now: datetime) -> dict[str, Any]:
        """Return the resources as a collection Bundle made at `now`."""
        return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection",
                "timestamp": now.isoformat(),
                "entry": [{"fullUrl": url, "resource": resource}
                          for url, resource in self.resources.items()]}


@dataclass(frozen=True)
class Refs:
    """What every resource of one visit points at."""

    patient: Reference
    encounter: Reference
    nurse: Reference


def _profiled(*names: str) -> dict[str, Any]:
    return {"meta": {"profile": [f"{US_CORE}{name}" for name in names]}}


def _present(**elements: Any) -> dict[str, Any]:
    """Return the optional elements that have a value (FHIR forbids empty ones)."""
    return {name: value for name, value in elements.items() if value not in (None, [], {}, "")}


def _system(organisation_id: uuid.UUID, kind: str) -> str:
    """Return the organisation's own identifier system for `kind` (mrn, user, visit)."""
    return f"{VIGIL}/organisation/{organisation_id}/{kind}"


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _mg(micrograms: int) -> dict[str, Any]:
    # Micrograms are integers, so mg to three places is exact in a JSON number.
    return _quantity(micrograms / 1000, "mg")


def _human_name(full: str) -> dict[str, Any]:
    # Vigil keeps a name as one string; US Core asks a family name, so the last word is taken
    # as one and `text` keeps the name as written.
    *given, family = full.split() or [full]
    return _present(text=full, family=family, given=given)


def _route(route: str) -> dict[str, Any]:
    if route not in ROUTES:
        return {"text": route}
    code, display = ROUTES[route]
    return {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": route}


def organization(organisation: Organisation) -> Resource:
    """Return the registrant as a US Core Organization, named by its DEA registration."""
    address = _present(line=[organisation.address_line] if organisation.address_line else None,
                       city=organisation.city, state=organisation.state,
                       postalCode=organisation.postal_code)
    return {
        "resourceType": "Organization", "id": str(organisation.id),
        **_profiled("organization"),
        "identifier": [{"type": {"coding": [{
            "system": IDENTIFIER_TYPE, "code": "DEA",
            "display": "Drug Enforcement Administration registration number"}]},
            "value": organisation.dea_registration}],
        "active": True, "name": organisation.name,
        **_present(telecom=[{"system": "phone", "value": organisation.phone, "use": "work"}]
                   if organisation.phone else None,
                   address=[{**address, "country": "US"}] if address else None)}


def practitioner(user: User) -> Resource:
    """Return a user as a US Core Practitioner with their work phone and email."""
    telecom = [{"system": system, "value": value, "use": "work"}
               for system, value in (("phone", user.phone), ("email", user.email)) if value]
    return {"resourceType": "Practitioner", "id": str(user.id), **_profiled("practitioner"),
            "identifier": [{"system": _system(user.organisation_id, "user"),
                            "value": str(user.id)}],
            "active": user.active, "name": [_human_name(user.display_name)],
            **_present(telecom=telecom)}


def patient_resource(patient: Patient, view: PatientView | None,
                     organisation: Reference) -> Resource:
    """Return the patient as US Core Patient; without `view` (not readable) only the id."""
    resource = {"resourceType": "Patient", "id": str(patient.id),
                "managingOrganization": organisation}
    if view is None:
        return resource
    return {
        **resource, **_profiled("patient"),
        "identifier": [{"use": "usual", "type": {"coding": [{
            "system": IDENTIFIER_TYPE, "code": "MR", "display": "Medical record number"}]},
            "system": _system(patient.organisation_id, "mrn"), "value": view.mrn,
            "assigner": organisation}],
        "name": [_human_name(view.name)],
        # US Core asks a gender of every patient: one not recorded is "unknown".
        "gender": view.sex or "unknown", "birthDate": view.date_of_birth.isoformat(),
        **_present(telecom=[{"system": "phone", "value": view.phone, "use": "home"}]
                   if view.phone else None,
                   address=[{"use": "home", "text": view.address}] if view.address else None)}


def home(patient: Patient, view: PatientView | None) -> Resource:
    """Return the patient's home as a US Core Location: the address if readable, the position."""
    position = None if patient.home_latitude is None else {
        "latitude": float(patient.home_latitude), "longitude": float(patient.home_longitude)}
    return {"resourceType": "Location", "id": str(uuid.uuid5(patient.id, "home")),
            **_profiled("location"), "status": "active", "name": "Patient's home",
            "mode": "instance",
            "type": [{"coding": [{"system": ROLE_CODE, "code": "PTRES",
                                  "display": "Patient's Residence"}]}],
            **_present(address={"use": "home", "text": view.address}
                       if view and view.address else None, position=position)}


@dataclass(frozen=True)
class VisitRecord:
    """A visit, what was recorded at it, and when the phone checked in and out."""

    visit: Visit
    record: SessionRecord
    checked_in_at: datetime | None
    checked_out_at: datetime | None


def visit_records(session: Session, shown: list[Visit],
                  records: Mapping[uuid.UUID, SessionRecord]) -> list[VisitRecord]:
    """Return each visit with its records and EVV times, read in one query."""
    # The phone's clocks, as the records carry: the server's receipt of an offline check-in
    # can come after the discharge.
    times = {(event.visit_id, event.kind): event.occurred_at for event in session.scalars(
        select(EvvEvent).where(EvvEvent.visit_id.in_([visit.id for visit in shown])))}
    return [VisitRecord(visit, records[visit.id], times.get((visit.id, "check_in")),
                        times.get((visit.id, "check_out"))) for visit in shown]


def _recorded(record: SessionRecord) -> bool:
    return any((record.pre_dose, record.dose, record.observations, record.discharge,
                record.outcomes))


def _encounter_status(held: VisitRecord) -> str:
    status = held.visit.status
    if status == VisitStatus.COMPLETED or held.record.discharge is not None:
        return "finished"
    if status == VisitStatus.CHECKED_IN or _recorded(held.record):
        return "in-progress"
    return "planned" if status == VisitStatus.SCHEDULED else "cancelled"


def _period(held: VisitRecord) -> dict[str, str]:
    """Return the visit from check-in (else its first record) to discharge (else check-out)."""
    record = held.record
    starts = [at for at in (held.checked_in_at,
                            record.pre_dose.occurred_at if record.pre_dose else None,
                            record.dose.infusion_started_at if record.dose else None) if at]
    end = record.discharge.occurred_at if record.discharge else held.checked_out_at
    return _present(start=min(starts).isoformat() if starts else None,
                    end=end.isoformat() if end else None)


def encounter(held: VisitRecord, refs: Refs, location: Reference,
              organisation: Reference) -> Resource:
    """Return the home visit as a US Core Encounter of class HH (home health)."""
    visit = held.visit
    return {"resourceType": "Encounter", "id": str(visit.id), **_profiled("encounter"),
            "identifier": [{"system": _system(visit.organisation_id, "visit"),
                            "value": str(visit.id)}],
            "status": _encounter_status(held), "class": HOME_HEALTH,
            "type": [HOME_VISIT], "subject": refs.patient,
            "participant": [{"type": [PRIMARY_PERFORMER], "individual": refs.nurse}],
            **_present(period=_period(held)),
            "location": [{"location": location}], "serviceProvider": organisation}


def _product_code(product: DrugProduct) -> dict[str, Any]:
    """Return the product coded in RxNorm and by its NDC (5-4-2), where it has them."""
    coding = [{"system": system, "code": code} for system, code in (
        (RXNORM, product.rxnorm_code), (NDC, formatted(product.ndc))) if code]
    return {**_present(coding=coding), "text": f"{product.name} ({product.active_ingredient})"}


def medication(product: DrugProduct, lot: str, expiry: date) -> Resource:
    """Return one lot of a product as a US Core Medication, lot and expiry in `batch`."""
    return {"resourceType": "Medication",
            # One resource per product and lot: the same lot names the same Medication.
            "id": str(uuid.uuid5(product.id, f"{lot}|{expiry.isoformat()}")),
            **_profiled("medication"), "code": _product_code(product),
            "batch": {"lotNumber": lot, "expirationDate": expiry.isoformat()}}


def _phase_dosage(version: PlanVersion, phase: PlanPhase) -> dict[str, Any]:
    # A phase's own dose overrides the version's, a fixed dose one per kg (scan.loaders).
    source = phase if phase.dose_ug is not None or phase.dose_ug_per_kg is not None else version
    dose = (_mg(source.dose_ug) if source.dose_ug is not None
            else _quantity(source.dose_ug_per_kg / 1000, "mg/kg"))
    return {"sequence": phase.ordinal,
            "text": f"{phase.name}: over {version.infusion_minutes} min",
            "route": _route(version.route), "doseAndRate": [{"doseQuantity": dose}],
            "maxDosePerAdministration": _mg(version.max_dose_ug)}


def medication_request(version: PlanVersion, product: DrugProduct, patient: Reference,
                       prescriber: Reference) -> Resource:
    """Return a plan version as the prescriber's US Core MedicationRequest, phase by phase."""
    plan = version.plan
    current = plan.status == "active" and plan.current_version == version.version
    return {"resourceType": "MedicationRequest", "id": str(version.id),
            **_profiled("medicationrequest"),
            # A later version replaces this one: the order it was is stopped.
            "status": "active" if current else "stopped", "intent": "order",
            "medicationCodeableConcept": _product_code(product), "subject": patient,
            "authoredOn": (version.signed_at or version.created_at).isoformat(),
            "requester": prescriber,
            "dosageInstruction": [_phase_dosage(version, phase) for phase in version.phases]}


def medication_administration(dose: DoseRecord, medication: Reference, refs: Refs,
                              request: Reference) -> Resource:
    """Return the dose as a completed MedicationAdministration: mg (UCUM), SNOMED CT route."""
    return {"resourceType": "MedicationAdministration", "id": str(dose.id),
            "status": "completed", "medicationReference": medication,
            "subject": refs.patient, "context": refs.encounter,
            "effectivePeriod": {"start": dose.infusion_started_at.isoformat(),
                                "end": dose.infusion_ended_at.isoformat()},
            "performer": [{"actor": refs.nurse}], "request": request,
            "dosage": {"route": _route(dose.route), "dose": _mg(dose.quantity_ug)}}


def _observation(resource_id: uuid.UUID, code: dict[str, Any], category: str, refs: Refs,
                 at: datetime, *profiles: str, **value: Any) -> Resource:
    return {"resourceType": "Observation", "id": str(resource_id),
            **(_profiled(*profiles) if profiles else {}), "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category,
                                      "display": category.replace("-", " ").title()}]}],
            "code": code, "subject": refs.patient, "encounter": refs.encounter,
            "effectiveDateTime": at.isoformat(), "performer": [refs.nurse], **value}


def _loinc(codes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    coding = [{"system": LOINC, "code": code, "display": display} for code, display in codes]
    return {"coding": coding, "text": coding[0]["display"]}


def _pressure(value: int | None) -> dict[str, Any]:
    if value is None:
        return {"dataAbsentReason": {"coding": [{"system": DATA_ABSENT, "code": "unknown"}]}}
    return {"valueQuantity": _quantity(value, "mm[Hg]")}


def blood_pressure(record: PreDose | Observation | Discharge, refs: Refs) -> Resource:
    """Return the record's blood pressure as the 85354-9 panel, systolic and diastolic inside."""
    panel, *parts = BLOOD_PRESSURE
    return _observation(
        uuid.uuid5(record.id, "blood_pressure"), _loinc([panel]), "vital-signs", refs,
        record.occurred_at, "blood-pressure", "vital-signs",
        component=[{"code": _loinc([(code, display)]), **_pressure(getattr(record, name))}
                   for name, code, display in parts])


def _scored(resource_id: uuid.UUID, scale: Scale, total: int, items: Mapping[str, int] | None,
            refs: Refs, at: datetime) -> Resource:
    components = [{"code": scale.item(int(number)), "valueInteger": score}
                  for number, score in sorted((items or {}).items(), key=lambda i: int(i[0]))]
    return _observation(resource_id, scale.concept(), "survey", refs, at, valueInteger=total,
                        **_present(component=components))


def observations(record: PreDose | Observation | Discharge, refs: Refs) -> list[Resource]:
    """Return one final Observation per vital, panel or scale the record holds."""
    at = record.occurred_at
    found = []
    if record.systolic is not None or record.diastolic is not None:
        found.append(blood_pressure(record, refs))
    for name, vital in VITALS.items():
        if (value := getattr(record, name)) is not None:
            # Named as before the panel existed, so re-exports keep naming the same resources.
            found.append(_observation(uuid.uuid5(record.id, name), _loinc(vital.codes),
                                      "vital-signs", refs, at, vital.profile, "vital-signs",
                                      valueQuantity=_quantity(value, vital.unit)))
    if record.moaas is not None:
        found.append(_observation(uuid.uuid5(record.id, "moaas"),
                                  {"coding": [MOAAS], "text": MOAAS["display"]}, "survey", refs,
                                  at, valueInteger=record.moaas))
    if record.cadss_total is not None:
        found.append(_scored(uuid.uuid5(record.id, "cadss_total"), CADSS, record.cadss_total,
                             record.cadss_items, refs, at))
    if getattr(record, "bprs_total", None) is not None:
        found.append(_scored(uuid.uuid5(record.id, "bprs_total"), BPRS, record.bprs_total,
                             record.bprs_items, refs, at))
    return found


def outcome(score: OutcomeScore, refs: Refs) -> Resource:
    """Return a PHQ-9 (LOINC 44261-6) or MADRS total as a survey Observation with its items."""
    return _scored(score.id, OUTCOMES[score.instrument], score.total, score.items, refs,
                   score.occurred_at)


def adverse_event(discharge: Discharge, refs: Refs, given: Reference | None) -> Resource:
    """Return the discharge's adverse events as one actual R4 AdverseEvent."""
    category = discharge.adverse_event_category
    display = ADVERSE_EVENTS.get(category, category)
    at = discharge.occurred_at.isoformat()
    return {"resourceType": "AdverseEvent", "id": str(uuid.uuid5(discharge.id, "adverse_event")),
            "actuality": "actual",
            "category": [{"coding": [{"system": ADVERSE_EVENT_CATEGORY, "code": category,
                                      "display": display}]}],
            "event": {"text": discharge.adverse_events or display},
            "subject": refs.patient, "encounter": refs.encounter,
            # The phone records adverse events at discharge, not each with its own time: the
            # discharge is when they were known to have happened.
            "date": at, "recordedDate": at, "recorder": refs.nurse,
            **_present(suspectEntity=[{"instance": given}] if given else None)}


@dataclass(frozen=True)
class Course:
    """What every visit of one export shares: its patient, home and organisation."""

    organisation: Reference
    patient: Reference
    location: Reference


def _course(session: Session, entries: Entries, patient: Patient,
            view: PatientView | None) -> Course:
    organisation = entries.add(organization(session.get(Organisation, patient.organisation_id)))
    return Course(organisation, entries.add(patient_resource(patient, view, organisation)),
                  entries.add(home(patient, view)))


def _dose(session: Session, entries: Entries, visit: Visit, dose: DoseRecord,
          refs: Refs) -> Reference:
    """Add the dose, its Medication and the order it was given under; return the dose's."""
    version = session.get(PlanVersion, visit.plan_version_id)
    prescriber = entries.add(practitioner(session.get(User, version.prescriber_id)))
    request = entries.add(medication_request(
        version, session.get(DrugProduct, version.product_id), refs.patient, prescriber))
    drug = entries.add(medication(session.get(DrugProduct, dose.product_id), dose.lot,
                                  dose.expiry))
    return entries.add(medication_administration(dose, drug, refs, request))


def _add_visit(session: Session, entries: Entries, course: Course, held: VisitRecord) -> None:
    visit, record = held.visit, held.record
    nurse = entries.add(practitioner(session.get(User, visit.nurse_id)))
    refs = Refs(course.patient, {"reference": f"urn:uuid:{visit.id}"}, nurse)
    entries.add(encounter(held, refs, course.location, course.organisation))
    given = _dose(session, entries, visit, record.dose, refs) if record.dose else None
    for measured in (record.pre_dose, *record.observations, record.discharge):
        for resource in observations(measured, refs) if measured else []:
            entries.add(resource)
    for score in record.outcomes:
        entries.add(outcome(score, refs))
    if record.discharge and record.discharge.adverse_event_category != "none":
        entries.add(adverse_event(record.discharge, refs, given))


def _phi(held: Iterable[VisitRecord]) -> list[str]:
    """Name the session PHI an export decrypts, for its audit row (never the values)."""
    return ["adverse_events"] if any(
        (end := h.record.discharge) and end.adverse_events_enc
        and end.adverse_event_category != "none" for h in held) else []


def _readable(session: Session, rt: Runtime, caller: Caller,
              patient_id: uuid.UUID) -> PatientView | None:
    """Return the patient as the caller may read them, audited as a read; None if she may not."""
    try:
        return patients.read(session, rt, caller, patient_id)
    except NotFound:
        # A nurse's own visit to a patient no longer assigned to her: the session is hers to
        # export, the patient's details no longer are.
        return None


def _bundle(session: Session, patient: Patient, view: PatientView | None,
            held: list[VisitRecord], now: datetime) -> dict[str, Any]:
    entries = Entries()
    course = _course(session, entries, patient, view)
    for one in held:
        _add_visit(session, entries, course, one)
    return entries.bundle(now)


def session_bundle(session: Session, rt: Runtime, caller: Caller,
                   visit_id: uuid.UUID) -> dict[str, Any]:
    """Return a visit's session as a FHIR R4 collection Bundle that resolves whole; audited."""
    record = read_session(session, caller, visit_id)
    visit = session.get(Visit, visit_id)
    patient = session.get(Patient, visit.patient_id)
    view = _readable(session, rt, caller, patient.id)
    held = visit_records(session, [visit], {visit.id: record})
    now = rt.clock.now()
    audit.record(session, now, caller, "session.fhir_export", "visit", visit.id,
                 detail={"patient_id": str(visit.patient_id), "phi": _phi(held)})
    return _bundle(session, patient, view, held, now)


def patient_bundle(session: Session, rt: Runtime, caller: Caller,
                   patient_id: uuid.UUID) -> dict[str, Any]:
    """Return every session of a patient (a nurse: her visits) as one collection Bundle."""
    view = patients.read(session, rt, caller, patient_id)
    patient = session.get(Patient, view.id)
    shown = visits.listing(session, caller, visits.VisitFilter(patient_id=patient.id))
    records = read_sessions(session, caller, [visit.id for visit in shown])
    # A session is a visit the nurse reached or recorded: planned and cancelled ones are not.
    held = [one for one in visit_records(session, shown, records)
            if one.checked_in_at is not None or _recorded(one.record)]
    now = rt.clock.now()
    audit.record(session, now, caller, "patient.fhir_export", "patient", patient.id,
                 detail={"visit_ids": [str(one.visit.id) for one in held], "phi": _phi(held)})
    return _bundle(session, patient, view, held, now)
