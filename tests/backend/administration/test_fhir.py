"""The FHIR R4 export: Bundles that validate with R4 models, resolve whole, and carry the codes."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from fhir.resources import get_fhir_model_class
from fhir.resources.bundle import Bundle
from sqlalchemy import select

from backend.accounts.models import Organisation, Role
from backend.administration import fhir
from backend.audit.models import AuditEvent
from backend.products.models import DrugProduct
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.factories import World

CHECK_IN = {"latitude": "41.878300", "longitude": "-87.629800", "accuracy_m": 12}
RXCUI = "1234567"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def _at(day: int, clock_time: str) -> str:
    return f"2026-11-{day:02d}T{clock_time}:00+00:00"


def _record(visit: Session, visit_id: str, day: int, parts: list[tuple[str, dict]]) -> None:
    """Check in on `day` and post each part, signed by the nurse's phone."""
    pharmacy = visit.pharmacy
    checked_in = pharmacy.client.post(f"/api/v1/visits/{visit_id}/check-in",
                                      headers=visit.phone_headers,
                                      json={**CHECK_IN, "occurred_at": _at(day, "15:02")})
    assert checked_in.status_code == 200, checked_in.json
    for part, body in parts:
        response = pharmacy.client.post(f"/api/v1/visits/{visit_id}/{part}",
                                        headers=visit.phone_headers, json=visit.signed(body))
        assert response.status_code == 201, (part, response.json)


def _full_session(visit: Session) -> None:
    """Record a whole session on 3 November: dose at 15:10, discharge at 17:20."""
    _record(visit, visit.visit["id"], 3, [
        ("pre-dose", {**PRE, "occurred_at": _at(3, "15:05"),
                      "cadss_items": {"1": 0, "2": 0, "6": 0, "7": 0, "15": 1, "22": 0}}),
        ("dose", {**dose(visit.pharmacy.product_id), "occurred_at": _at(3, "15:10")}),
        ("observations", {"occurred_at": _at(3, "15:40"), "systolic": 160, "diastolic": 95,
                          "heart_rate": 88, "spo2": 97, "respiratory_rate": 16, "moaas": 3,
                          "cadss_items": {"1": 2, "2": 1, "6": 0, "7": 3, "15": 1, "22": 0},
                          "bprs_items": {"1": 2, "2": 1, "3": 1, "4": 1}}),
        ("observations", {"occurred_at": _at(3, "15:52"), "systolic": 148}),
        ("discharge", {"occurred_at": _at(3, "17:20"), "systolic": 124, "diastolic": 80,
                       "spo2": 98, "moaas": 5, "state": "baseline",
                       "adverse_event_category": "nausea_vomiting",
                       "adverse_events": "mild nausea at 30 min"}),
        ("outcomes", {"occurred_at": _at(3, "17:10"), "instrument": "phq9",
                      "items": {str(i): 1 for i in range(1, 10)}}),
        ("outcomes", {"occurred_at": _at(3, "17:15"), "instrument": "madrs",
                      "items": {str(i): 2 for i in range(1, 11)}}),
    ])


def _describe(visit: Session) -> None:
    """Give the patient, nurse, product and registrant the details a Bundle carries."""
    pharmacy, world = visit.pharmacy, visit.pharmacy.world
    changed = pharmacy.client.patch(
        f"/api/v1/patients/{pharmacy.patient_id}", headers=pharmacy.as_(Role.ADMIN),
        json={"sex": "female", "address": "1 Elm St, Chicago, IL 60601", "phone": "312-555-0100"})
    assert changed.status_code == 200, changed.json
    product = world.session.get(DrugProduct, uuid.UUID(pharmacy.product_id))
    product.ndc, product.rxnorm_code = "12345678901", RXCUI
    pharmacy.nurse.display_name = "Nora Jean Nurse"
    pharmacy.nurse.phone, pharmacy.nurse.email = "312-555-0199", "nora@example.org"
    org = world.session.get(Organisation, pharmacy.org.id)
    org.address_line, org.city, org.state, org.postal_code = "2 Main St", "Chicago", "IL", "60602"
    world.commit()


@pytest.fixture
def recorded(world: World) -> Session:
    visit = Session(world)
    _describe(visit)
    _full_session(visit)
    return visit


def _get(visit: Session, path: str, role: Role = Role.PRESCRIBER, headers: dict | None = None):
    return visit.pharmacy.client.get(path, headers=headers or visit.pharmacy.as_(role))


def _session_export(visit: Session, role: Role = Role.PRESCRIBER) -> dict:
    response = _get(visit, f"/api/v1/visits/{visit.visit['id']}/fhir", role)
    assert response.status_code == 200, response.json
    return response.json


def _patient_export(visit: Session, role: Role = Role.PRESCRIBER) -> dict:
    response = _get(visit, f"/api/v1/patients/{visit.pharmacy.patient_id}/fhir", role)
    assert response.status_code == 200, response.json
    return response.json


def _references(node: object):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from [value] if key == "reference" else _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _resources(bundle: dict, kind: str | None = None) -> list[dict]:
    return [entry["resource"] for entry in bundle["entry"]
            if kind is None or entry["resource"]["resourceType"] == kind]


def _resolved(bundle: dict) -> dict[str, dict]:
    """Return the Bundle's resources by full URL, after checking it is valid R4 and whole."""
    parsed = Bundle.parse_obj(bundle)
    assert parsed.type == "collection"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).parse_obj(resource)
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(urls) == len(set(urls)), "each resource once"
    by_url = dict(zip(urls, _resources(bundle), strict=True))
    unresolved = set(_references(bundle)) - set(by_url)
    assert not unresolved
    return by_url


def _target(by_url: dict[str, dict], reference: dict) -> dict:
    return by_url[reference["reference"]]


def _codes(resource: dict) -> list[str]:
    return [coding["code"] for coding in resource["code"]["coding"]]


def _observation(bundle: dict, code: str, at: str) -> dict:
    [found] = [o for o in _resources(bundle, "Observation")
               if _codes(o)[0] == code and o["effectiveDateTime"] == at]
    return found


def _audited(visit: Session, action: str) -> list[AuditEvent]:
    return list(visit.pharmacy.world.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action)))


@pytest.mark.parametrize("role", [Role.ADMIN, Role.PRESCRIBER, Role.NURSE, Role.COMPLIANCE])
def test_each_reader_gets_a_session_bundle_that_validates_and_resolves(recorded: Session, role):
    by_url = _resolved(_session_export(recorded, role))
    assert Counter(r["resourceType"] for r in by_url.values()) == {
        "Organization": 1, "Patient": 1, "Location": 1, "Practitioner": 2, "Encounter": 1,
        "MedicationRequest": 1, "Medication": 1, "MedicationAdministration": 1,
        # BP, SpO2, HR, RR, MOAA/S, CADSS pre-dose; BP, HR, SpO2, RR, MOAA/S, CADSS, BPRS at
        # 15:40; BP at 15:52; BP, SpO2, MOAA/S at discharge; PHQ-9 and MADRS.
        "Observation": 19, "AdverseEvent": 1}


def test_the_patient_is_identified_by_mrn_in_the_organisations_system(recorded: Session):
    bundle = _session_export(recorded)
    [patient] = _resources(bundle, "Patient")
    pharmacy = recorded.pharmacy
    mrn = pharmacy.client.get(f"/api/v1/patients/{pharmacy.patient_id}",
                              headers=pharmacy.as_(Role.ADMIN)).json["mrn"]
    [identifier] = patient["identifier"]
    assert (identifier["system"], identifier["value"]) == (
        f"https://vigil.example/fhir/organisation/{pharmacy.org.id}/mrn", mrn)
    assert (patient["gender"], patient["birthDate"]) == ("female", "1970-01-01")
    assert patient["name"] == [{"text": "Pat Test", "family": "Test", "given": ["Pat"]}]
    assert patient["address"] == [{"use": "home", "text": "1 Elm St, Chicago, IL 60601"}]
    assert patient["meta"]["profile"] == [f"{US_CORE}patient"]


def test_the_encounter_is_the_home_visit_with_its_period_nurse_and_home(recorded: Session):
    bundle = _session_export(recorded)
    by_url = _resolved(bundle)
    [visit] = _resources(bundle, "Encounter")
    assert visit["id"] == recorded.visit["id"]
    assert (visit["status"], visit["class"]["code"], visit["class"]["system"]) == (
        "finished", "HH", "http://terminology.hl7.org/CodeSystem/v3-ActCode")
    assert visit["period"] == {"start": _at(3, "15:02"), "end": _at(3, "17:20")}
    assert _target(by_url, visit["subject"])["resourceType"] == "Patient"
    nurse = _target(by_url, visit["participant"][0]["individual"])
    assert nurse["name"] == [{"text": "Nora Jean Nurse", "family": "Nurse",
                              "given": ["Nora", "Jean"]}]
    assert nurse["telecom"] == [
        {"system": "phone", "value": "312-555-0199", "use": "work"},
        {"system": "email", "value": "nora@example.org", "use": "work"}]
    home = _target(by_url, visit["location"][0]["location"])
    assert home["address"] == {"use": "home", "text": "1 Elm St, Chicago, IL 60601"}
    assert home["position"] == {"latitude": 41.8781, "longitude": -87.6298}
    organisation = _target(by_url, visit["serviceProvider"])
    assert organisation["identifier"][0]["value"] == recorded.pharmacy.org.dea_registration
    assert organisation["address"] == [{"line": ["2 Main St"], "city": "Chicago",
                                        "state": "IL", "postalCode": "60602", "country": "US"}]


def test_the_dose_is_in_mg_by_a_snomed_route_of_an_rxnorm_and_ndc_coded_lot(recorded: Session):
    bundle = _session_export(recorded)
    by_url = _resolved(bundle)
    [given] = _resources(bundle, "MedicationAdministration")
    assert given["status"] == "completed"
    assert given["dosage"]["dose"] == {"value": 35, "unit": "mg", "system": UCUM, "code": "mg"}
    assert given["dosage"]["route"]["coding"] == [
        {"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]
    assert given["effectivePeriod"] == {"start": _at(3, "15:10"), "end": _at(3, "15:50")}
    assert _target(by_url, given["context"])["resourceType"] == "Encounter"
    assert _target(by_url, given["performer"][0]["actor"])["id"] == str(
        recorded.pharmacy.nurse.id)
    drug = _target(by_url, given["medicationReference"])
    assert drug["code"]["coding"] == [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": RXCUI},
        {"system": "http://hl7.org/fhir/sid/ndc", "code": "12345-6789-01"}]
    assert drug["batch"] == {"lotNumber": "L1", "expirationDate": "2028-01-31"}
    order = _target(by_url, given["request"])
    assert (order["status"], order["intent"]) == ("active", "order")
    assert _target(by_url, order["requester"])["id"] == str(recorded.pharmacy.prescriber.id)
    assert order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] == {
        "value": 0.5, "unit": "mg/kg", "system": UCUM, "code": "mg/kg"}


def test_blood_pressure_is_one_panel_with_systolic_and_diastolic_inside(recorded: Session):
    bundle = _session_export(recorded)
    panel = _observation(bundle, "85354-9", _at(3, "15:40"))
    assert [(_codes(c)[0], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
            for c in panel["component"]] == [("8480-6", 160, "mm[Hg]"), ("8462-4", 95, "mm[Hg]")]
    assert "valueQuantity" not in panel
    # Only the systolic was taken at 15:52: the diastolic says so rather than vanishing.
    alone = _observation(bundle, "85354-9", _at(3, "15:52"))
    assert alone["component"][1]["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    codes = {code for o in _resources(bundle, "Observation") for code in _codes(o)}
    assert not codes & {"8480-6", "8462-4"}, "no loose pressures beside the panels"
    assert panel["meta"]["profile"] == [f"{US_CORE}blood-pressure", f"{US_CORE}vital-signs"]


@pytest.mark.parametrize(("codes", "value", "unit", "profile"), [
    (["59408-5", "2708-6"], 97, "%", "pulse-oximetry"),
    (["8867-4"], 88, "/min", "heart-rate"),
    (["9279-1"], 16, "/min", "respiratory-rate"),
])
def test_each_vital_sign_is_loinc_coded_in_ucum(recorded: Session, codes, value, unit, profile):
    bundle = _session_export(recorded)
    observed = _observation(bundle, codes[0], _at(3, "15:40"))
    assert _codes(observed) == codes
    assert (observed["valueQuantity"]["value"], observed["valueQuantity"]["code"]) == (value,
                                                                                      unit)
    assert observed["category"][0]["coding"][0]["code"] == "vital-signs"
    assert observed["meta"]["profile"] == [f"{US_CORE}{profile}", f"{US_CORE}vital-signs"]
    assert observed["encounter"] == {"reference": f"urn:uuid:{recorded.visit['id']}"}


@pytest.mark.parametrize(("code", "at", "total", "items"), [
    ("moaas", _at(3, "15:40"), 3, []),
    ("cadss-total", _at(3, "15:40"), 7, [("cadss-1", 2), ("cadss-2", 1), ("cadss-6", 0),
                                         ("cadss-7", 3), ("cadss-15", 1), ("cadss-22", 0)]),
    ("bprs-positive-total", _at(3, "15:40"), 5, [("bprs-positive-1", 2), ("bprs-positive-2", 1),
                                                 ("bprs-positive-3", 1),
                                                 ("bprs-positive-4", 1)]),
    ("44261-6", _at(3, "17:10"), 9, [(f"phq-9-{i}", 1) for i in range(1, 10)]),
    ("madrs-total", _at(3, "17:15"), 20, [(f"madrs-{i}", 2) for i in range(1, 11)]),
])
def test_each_scale_is_a_survey_total_with_its_items(recorded: Session, code, at, total, items):
    scored = _observation(_session_export(recorded), code, at)
    assert scored["valueInteger"] == total
    assert [(_codes(c)[0], c["valueInteger"]) for c in scored.get("component", [])] == items
    assert scored["category"][0]["coding"][0]["code"] == "survey"
    system = scored["code"]["coding"][0]["system"]
    assert system == ("http://loinc.org" if code == "44261-6" else fhir.SCALES)


def test_the_bprs_items_are_named(recorded: Session):
    bprs = _observation(_session_export(recorded), "bprs-positive-total", _at(3, "15:40"))
    assert [c["code"]["text"] for c in bprs["component"]] == [
        "BPRS-positive suspiciousness", "BPRS-positive hallucinations",
        "BPRS-positive unusual thought content", "BPRS-positive conceptual disorganisation"]


def test_the_discharges_adverse_events_are_an_actual_adverse_event(recorded: Session):
    bundle = _session_export(recorded)
    by_url = _resolved(bundle)
    [event] = _resources(bundle, "AdverseEvent")
    assert event["actuality"] == "actual"
    assert event["category"][0]["coding"][0]["code"] == "nausea_vomiting"
    assert event["event"] == {"text": "mild nausea at 30 min"}
    assert event["date"] == _at(3, "17:20")
    assert _target(by_url, event["encounter"])["id"] == recorded.visit["id"]
    suspect = _target(by_url, event["suspectEntity"][0]["instance"])
    assert suspect["resourceType"] == "MedicationAdministration"


def test_us_core_profiles_are_declared_where_they_apply(recorded: Session):
    declared = {(r["resourceType"], profile.removeprefix(US_CORE))
                for r in _resources(_session_export(recorded))
                for profile in r.get("meta", {}).get("profile", [])}
    assert {kind for kind, _ in declared} == {
        "Patient", "Practitioner", "Organization", "Location", "Encounter", "Medication",
        "MedicationRequest", "Observation"}
    assert {profile for kind, profile in declared if kind == "Observation"} == {
        "blood-pressure", "pulse-oximetry", "heart-rate", "respiratory-rate", "vital-signs"}
    # US Core names each other profile for its resource: us-core-patient, us-core-medication.
    assert all(profile == kind.lower() for kind, profile in declared if kind != "Observation")


def test_a_re_export_names_the_same_resources(recorded: Session):
    first, again = _session_export(recorded), _session_export(recorded, Role.COMPLIANCE)
    assert [e["fullUrl"] for e in first["entry"]] == [e["fullUrl"] for e in again["entry"]]
    assert first["id"] != again["id"]


def test_the_export_is_audited_with_the_patient_read(recorded: Session):
    _session_export(recorded)
    [export] = _audited(recorded, "session.fhir_export")
    assert export.object_id == recorded.visit["id"]
    assert export.detail == {"patient_id": recorded.pharmacy.patient_id,
                             "phi": ["adverse_events"]}
    assert [read.object_id for read in _audited(recorded, "patient.read")] == [
        recorded.pharmacy.patient_id]


def test_a_product_without_codes_is_named_in_text(world: World):
    visit = Session(world)
    visit.post("dose", visit.signed(dose(visit.pharmacy.product_id)))
    by_url = _resolved(_session_export(visit))
    [drug] = [r for r in by_url.values() if r["resourceType"] == "Medication"]
    product = world.session.get(DrugProduct, uuid.UUID(visit.pharmacy.product_id))
    assert drug["code"] == {"text": f"{product.name} (ketamine)"}
    [patient] = [r for r in by_url.values() if r["resourceType"] == "Patient"]
    assert patient["gender"] == "unknown", "US Core asks one; none was recorded"


@pytest.mark.parametrize(("route", "code", "display"), [
    ("IV", "47625008", "Intravenous route"),
    ("IM", "78421000", "Intramuscular route"),
    ("SC", "34206005", "Subcutaneous route"),
    ("intranasal", "46713006", "Nasal route"),
])
def test_each_route_is_coded_in_snomed_ct(route, code, display):
    started = datetime(2026, 11, 3, 15, 10, tzinfo=UTC)
    given = SimpleNamespace(id=uuid.uuid4(), infusion_started_at=started,
                            infusion_ended_at=started + timedelta(minutes=40), route=route,
                            quantity_ug=84_000)
    refs = fhir.Refs({"reference": "p"}, {"reference": "e"}, {"reference": "n"})
    resource = fhir.medication_administration(given, {"reference": "m"}, refs, {"reference": "r"})
    assert resource["dosage"]["route"]["coding"] == [
        {"system": SNOMED, "code": code, "display": display}]
    assert resource["dosage"]["dose"]["value"] == 84


def test_the_patient_export_holds_every_session_and_each_resource_once(recorded: Session):
    pharmacy = recorded.pharmacy
    later = pharmacy.schedule("2026-11-06T15:00:00+00:00").json
    _record(recorded, later["id"], 6, [
        ("dose", {**dose(pharmacy.product_id, 42_000), "occurred_at": _at(6, "15:10"),
                  "infusion_started_at": _at(6, "15:10"), "infusion_ended_at": _at(6, "15:50")}),
        ("outcomes", {"occurred_at": _at(6, "17:00"), "instrument": "phq9",
                      "items": {str(i): 0 for i in range(1, 10)}})])
    pharmacy.schedule("2026-11-10T15:00:00+00:00")  # planned: not a session yet
    bundle = _patient_export(recorded)
    by_url = _resolved(bundle)
    kinds = Counter(r["resourceType"] for r in by_url.values())
    assert (kinds["Patient"], kinds["Organization"], kinds["Location"]) == (1, 1, 1)
    # One lot, one plan version, one nurse and one prescriber across both visits.
    assert (kinds["Medication"], kinds["MedicationRequest"], kinds["Practitioner"]) == (1, 1, 2)
    assert {e["id"] for e in _resources(bundle, "Encounter")} == {recorded.visit["id"],
                                                                  later["id"]}
    assert sorted(d["dosage"]["dose"]["value"]
                  for d in _resources(bundle, "MedicationAdministration")) == [35, 42]
    totals = [(o["effectiveDateTime"], o["valueInteger"]) for o in _resources(bundle, "Observation")
              if _codes(o)[0] == "44261-6"]
    assert sorted(totals) == [(_at(3, "17:10"), 9), (_at(6, "17:00"), 0)]
    single = _resolved(_session_export(recorded))
    assert set(single) <= set(by_url), "the session's resources keep their names in the course"
    [export] = _audited(recorded, "patient.fhir_export")
    assert (export.object_id, sorted(export.detail["visit_ids"])) == (
        pharmacy.patient_id, sorted([recorded.visit["id"], later["id"]]))


def test_a_nurse_exports_only_her_own_visits_of_her_patient(recorded: Session):
    pharmacy, world = recorded.pharmacy, recorded.pharmacy.world
    other = world.user(pharmacy.org, Role.NURSE)
    assigned = pharmacy.client.post(f"/api/v1/patients/{pharmacy.patient_id}/nurses",
                                    headers=pharmacy.as_(Role.ADMIN),
                                    json={"nurse_id": str(other.id)})
    assert assigned.status_code == 201, assigned.json
    theirs = pharmacy.schedule("2026-11-06T15:00:00+00:00", nurse_id=str(other.id)).json
    device_id, _ = world.device(pharmacy.org, other)
    checked_in = pharmacy.client.post(f"/api/v1/visits/{theirs['id']}/check-in",
                                      headers=world.headers(pharmacy.org, other, device_id),
                                      json={**CHECK_IN, "occurred_at": _at(6, "15:02")})
    assert checked_in.status_code == 200, checked_in.json
    everyone = _resolved(_patient_export(recorded, Role.ADMIN))
    hers = _resolved(_patient_export(recorded, Role.NURSE))
    encounters = {r["id"] for r in everyone.values() if r["resourceType"] == "Encounter"}
    assert encounters == {recorded.visit["id"], theirs["id"]}
    assert {r["id"] for r in hers.values() if r["resourceType"] == "Encounter"} == {
        recorded.visit["id"]}


def test_a_nurse_no_longer_assigned_exports_her_session_without_the_patients_details(
        recorded: Session):
    pharmacy = recorded.pharmacy
    ended = pharmacy.client.delete(
        f"/api/v1/patients/{pharmacy.patient_id}/nurses/{pharmacy.nurse.id}",
        headers=pharmacy.as_(Role.ADMIN))
    assert ended.status_code == 204, ended.json
    by_url = _resolved(_session_export(recorded, Role.NURSE))
    [patient] = [r for r in by_url.values() if r["resourceType"] == "Patient"]
    assert set(patient) == {"resourceType", "id", "managingOrganization"}
    [home] = [r for r in by_url.values() if r["resourceType"] == "Location"]
    assert "address" not in home
    assert _audited(recorded, "patient.read") == []
    refused = _get(recorded, f"/api/v1/patients/{pharmacy.patient_id}/fhir", Role.NURSE)
    assert refused.status_code == 404


@pytest.mark.parametrize("path", ["visits/{visit}/fhir", "patients/{patient}/fhir"])
def test_a_pharmacist_is_refused_either_export(recorded: Session, path):
    url = "/api/v1/" + path.format(visit=recorded.visit["id"],
                                   patient=recorded.pharmacy.patient_id)
    response = _get(recorded, url, Role.PHARMACIST)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert _audited(recorded, "session.fhir_export") == []
    assert _audited(recorded, "patient.fhir_export") == []


@pytest.mark.parametrize("path", ["visits/{visit}/fhir", "patients/{patient}/fhir"])
@pytest.mark.parametrize("role", [Role.ADMIN, Role.COMPLIANCE, Role.NURSE])
def test_another_organisation_gets_404_for_either_export(recorded: Session, world: World, path,
                                                         role):
    elsewhere = world.org()
    stranger = world.user(elsewhere, role)
    url = "/api/v1/" + path.format(visit=recorded.visit["id"],
                                   patient=recorded.pharmacy.patient_id)
    response = _get(recorded, url, headers=world.headers(elsewhere, stranger))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_a_nurse_not_assigned_gets_404_for_the_patient_export(recorded: Session, world: World):
    other = world.user(recorded.pharmacy.org, Role.NURSE)
    headers = world.headers(recorded.pharmacy.org, other)
    for url in (f"/api/v1/patients/{recorded.pharmacy.patient_id}/fhir",
                f"/api/v1/visits/{recorded.visit['id']}/fhir"):
        assert _get(recorded, url, headers=headers).status_code == 404
    assert _audited(recorded, "patient.fhir_export") == []
