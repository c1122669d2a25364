"""Request and response bodies for a home session's clinical record."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from backend import bounded
from backend.custody.schemas import VisitWasteSchema

SIGNATURE = ("Ed25519 signature by the nurse's registered phone over the RFC 8785 canonical "
             "JSON of this object without `signature`.")
# Physiologically impossible beyond these: refused. Alarming values inside them are flagged.
VITAL_RANGES = {"systolic": (40, 300), "diastolic": (20, 200), "heart_rate": (20, 250),
                "spo2": (50, 100), "respiratory_rate": (4, 60), "moaas": (0, 5)}
CO_MEDICATIONS = ("benzodiazepine", "sedative_hypnotic", "psychostimulant", "maoi", "opioid")
ADVERSE_CATEGORIES = ("none", "hypertension", "nausea_vomiting", "excess_sedation",
                      "dissociation", "psychotomimetic", "respiratory", "cardiac", "other")


def _vital(name: str, required: bool = False) -> bounded.Integer:
    low, high = VITAL_RANGES[name]
    presence = {"required": True} if required else {"load_default": None}
    return bounded.Integer(strict=True, validate=validate.Range(low, high), **presence)


class SignedSchema(Schema):
    """A record from a phone: client-made id, the phone's clock, and its signature."""

    id = fields.UUID(required=True)
    occurred_at = bounded.DateTime(required=True)
    signature = fields.String(required=True, validate=validate.Length(1, 100),
                              metadata={"description": SIGNATURE})


class VitalsSchema(SignedSchema):
    """Vital signs and the sedation and dissociation scales."""

    systolic = _vital("systolic")
    diastolic = _vital("diastolic")
    heart_rate = _vital("heart_rate")
    spo2 = _vital("spo2")
    respiratory_rate = _vital("respiratory_rate")
    moaas = _vital("moaas")
    cadss_items = fields.Dict(keys=fields.String(), values=bounded.Integer(strict=True),
                              load_default=None, metadata={
                                  "description": "CADSS item number → score 0-4: all 23, or "
                                                 "the short form 1, 2, 6, 7, 15, 22."})
    cadss_total = bounded.Integer(load_default=None, metadata={
        "description": "Ignored: Vigil computes it; a disagreeing value is noted."})

    @validates_schema
    def _pressures(self, data, **_kwargs):
        if data.get("systolic") and data.get("diastolic") and \
                data["diastolic"] >= data["systolic"]:
            raise ValidationError("must be below systolic", "diastolic")


class PreDoseSchema(VitalsSchema):
    """Before the dose: vitals, baselines, co-medications, weight, and the decision."""

    systolic = _vital("systolic", required=True)
    diastolic = _vital("diastolic", required=True)
    heart_rate = _vital("heart_rate", required=True)
    spo2 = _vital("spo2", required=True)
    respiratory_rate = _vital("respiratory_rate", required=True)
    moaas = _vital("moaas", required=True)
    co_medications = fields.List(fields.String(validate=validate.OneOf(CO_MEDICATIONS)),
                                 load_default=list, metadata={
                                     "description": "Sedating co-medications taken today."})
    decision = fields.String(required=True, validate=validate.OneOf(["go", "no_go"]))
    decision_reason = fields.String(load_default=None, validate=validate.Length(1, 2000))
    bp_justification = fields.String(load_default=None, validate=validate.Length(1, 2000),
                                     metadata={"description": "Why dosing goes ahead over the "
                                                              "blood-pressure hold threshold."})

    @validates_schema
    def _no_go_reason(self, data, **_kwargs):
        if data.get("decision") == "no_go" and not data.get("decision_reason"):
            raise ValidationError("required when the decision is no_go", "decision_reason")


class DoseSchema(SignedSchema):
    """The dose: lot, micrograms, route, infusion start and end."""

    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    expiry = bounded.Date(required=True)
    quantity_ug = bounded.Integer(required=True, strict=True,
                                  validate=validate.Range(1, 10_000_000))
    route = fields.String(required=True, validate=validate.Length(1, 20))
    infusion_started_at = bounded.DateTime(required=True)
    infusion_ended_at = bounded.DateTime(required=True)

    @validates_schema
    def _infusion(self, data, **_kwargs):
        if data["infusion_ended_at"] <= data["infusion_started_at"]:
            raise ValidationError("must be after infusion_started_at", "infusion_ended_at")


class ObservationSchema(VitalsSchema):
    """A timed observation after the dose."""

    bprs_items = fields.Dict(keys=fields.String(), values=bounded.Integer(strict=True),
                             load_default=None, metadata={
                                 "description": "BPRS positive items 1-4 → score 1-7."})
    bprs_total = bounded.Integer(load_default=None, metadata={"description": "Ignored."})


class JsonBoolean(fields.Boolean):
    """A JSON true or false; never a number or a string standing for one."""

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class DischargeSchema(VitalsSchema):
    """The end of monitoring."""

    state = fields.String(required=True, validate=validate.OneOf(
        ["baseline", "improving", "transferred", "left_against_advice"]))
    adverse_event_category = fields.String(required=True,
                                           validate=validate.OneOf(ADVERSE_CATEGORIES))
    adverse_events = fields.String(load_default=None, validate=validate.Length(1, 5000),
                                   metadata={"description": "Free text; stored encrypted."})
    ready_to_leave_at = bounded.DateTime(load_default=None, metadata={
        "description": "When the nurse judged the patient ready to leave (the REMS form's "
                       "line), with its UTC offset. Optional: phones before sync schema 2 do "
                       "not send it. Not after `occurred_at` (the discharge is recorded once "
                       "the patient is ready), nor before the dose's `infusion_started_at`."})
    respiratory_depression = JsonBoolean(load_default=None, metadata={
        "description": "Whether the nurse saw respiratory depression during monitoring (the "
                       "REMS form's yes/no). Optional: without it, the monitoring record "
                       "derives it from the session's SpO2 and respiratory rate."})

    @validates_schema
    def _ready_by_discharge(self, data, **_kwargs):
        ready = data.get("ready_to_leave_at")
        if ready is not None and data.get("occurred_at") and ready > data["occurred_at"]:
            raise ValidationError("must not be after occurred_at, when the discharge was "
                                  "recorded", "ready_to_leave_at")


class OutcomeSchema(SignedSchema):
    """A PHQ-9 or MADRS at the session."""

    instrument = fields.String(required=True, validate=validate.OneOf(["phq9", "madrs"]))
    items = fields.Dict(keys=fields.String(), values=bounded.Integer(strict=True),
                        required=True)
    total = bounded.Integer(load_default=None, metadata={"description": "Ignored."})


class SessionSchema(Schema):
    """A whole session as a phone sends it after an offline visit; each part signed alone."""

    pre_dose = fields.Nested(PreDoseSchema, load_default=None)
    dose = fields.Nested(DoseSchema, load_default=None)
    observations = fields.List(fields.Nested(ObservationSchema), load_default=list)
    discharge = fields.Nested(DischargeSchema, load_default=None)
    waste = fields.Nested(VisitWasteSchema, load_default=None, metadata={
        "description": "A waste the ledger refuses (no witness, no stock) is quarantined."})
    outcomes = fields.List(fields.Nested(OutcomeSchema), load_default=list)


class RecordSchema(Schema):
    """A stored record: its id, the server's receipt time, and the body the phone signed."""

    id = fields.UUID()
    occurred_at = fields.AwareDateTime()
    received_at = fields.AwareDateTime()
    device_id = fields.UUID()
    signed_body = fields.Dict()


class DoseRecordSchema(RecordSchema):
    """A stored dose with Vigil's mg/kg arithmetic and its custody entry."""

    weight_g = fields.Integer(allow_none=True)
    ug_per_kg = fields.Decimal(as_string=True, allow_none=True)
    custody_entry_id = fields.UUID(allow_none=True, metadata={
        "description": "Null when the bag did not hold the lot: flagged as a discrepancy."})


class ScoredRecordSchema(RecordSchema):
    """A stored record with Vigil's own scale totals."""

    cadss_total = fields.Integer(allow_none=True)
    bprs_total = fields.Integer(allow_none=True)
    total = fields.Integer()
    client_totals = fields.Dict()
    weight_g = fields.Integer(allow_none=True)


class SessionRecordSchema(Schema):
    """Everything recorded for a visit's session, and what was quarantined."""

    pre_dose = fields.Nested(ScoredRecordSchema, allow_none=True)
    dose = fields.Nested(DoseRecordSchema, allow_none=True)
    observations = fields.List(fields.Nested(ScoredRecordSchema))
    discharge = fields.Nested(ScoredRecordSchema, allow_none=True)
    outcomes = fields.List(fields.Nested(ScoredRecordSchema))
    quarantined = fields.List(fields.Dict())


class MonitoringQuerySchema(Schema):
    """The format of a monitoring record."""

    output = fields.String(data_key="format", load_default="json",
                           validate=validate.OneOf(["json", "csv"]), metadata={
                               "description": "`csv`: text/csv (RFC 4180, UTF-8 with a "
                                              "byte-order mark), a header row of the JSON's "
                                              "field names and one data row."})


def _nullable(kind: type[fields.Field], description: str, **options) -> fields.Field:
    return kind(allow_none=True, metadata={"description": description}, **options)


TEXT, TIME, WHOLE, YES_NO = fields.String, fields.AwareDateTime, fields.Integer, fields.Boolean


class MonitoringRecordSchema(Schema):
    """The Spravato REMS patient monitoring form's fields for one home session.

    A field the session did not record is null, never guessed.
    """

    visit_id = fields.UUID()
    patient_id = fields.UUID()
    patient_name = _nullable(TEXT, "The patient's full name, decrypted. Null, like the other "
                                   "patient lines, for a nurse no longer assigned to them.")
    patient_date_of_birth = _nullable(fields.Date, "Decrypted.")
    patient_sex = _nullable(TEXT, "female, male, other or unknown (FHIR administrative "
                                  "gender), decrypted; null if not recorded.")
    prescriber_name = fields.String(metadata={
        "description": "Who signed the plan version the visit followed."})
    clinician_name = fields.String(metadata={
        "description": "The nurse who gave the dose and monitored the patient."})
    clinician_role = fields.String(metadata={"description": "Her role in Vigil: `nurse`."})
    clinician_phone = _nullable(TEXT, "From her user record; null if not set.")
    clinician_email = _nullable(TEXT, "From her user record; null if not set.")
    organisation_name = fields.String(metadata={
        "description": "The home-infusion organisation whose record this is."})
    setting_name = fields.String(metadata={
        "description": "Where the patient was treated and monitored: `Patient's home`."})
    setting_address = _nullable(TEXT, "The patient's home address, decrypted; null if not "
                                      "recorded or not readable by the caller.")
    date = fields.String(metadata={"description": "The visit's date, organisation time."})
    check_in_latitude = _nullable(fields.Decimal, "EVV check-in position.", as_string=True)
    check_in_longitude = _nullable(fields.Decimal, "EVV check-in position.", as_string=True)
    check_in_distance_m = _nullable(WHOLE, "EVV check-in distance from the patient's home.")
    check_in_within_radius = _nullable(YES_NO, "Whether the check-in was within the radius.")
    product = _nullable(TEXT, "The product given.")
    route = _nullable(TEXT, "The route, as the phone recorded it.")
    lot = _nullable(TEXT, "The lot given.")
    dose_ug = _nullable(WHOLE, "The dose in micrograms.")
    dose_mg = _nullable(fields.Decimal, "The dose in milligrams, 3 places.", as_string=True)
    dose_mg_per_kg = _nullable(fields.Decimal, "Per kg of the weight used, 3 places.",
                               as_string=True)
    dose_started_at = _nullable(TIME, "When the dose (infusion) began.")
    discharged_at = _nullable(TIME, "When the discharge was recorded: monitoring ended.")
    ready_to_leave_at = _nullable(TIME, "When the nurse judged the patient ready to leave, as "
                                        "her phone recorded it; null if it did not (phones "
                                        "before sync schema 2).")
    minutes_monitored = _nullable(WHOLE, "Whole minutes from the dose's start to discharge.")
    bp_pre_systolic = _nullable(WHOLE, "Before the dose (the pre-dose assessment), mmHg.")
    bp_pre_diastolic = _nullable(WHOLE, "mmHg.")
    bp_pre_at = _nullable(TIME, "When the pre-dose blood pressure was taken.")
    bp_40_min_systolic = _nullable(WHOLE, "The reading nearest the policy's peak (40 min after "
                                          "the dose began) within its tolerance (±10 min), "
                                          "mmHg.")
    bp_40_min_diastolic = _nullable(WHOLE, "mmHg.")
    bp_40_min_at = _nullable(TIME, "When that reading was taken.")
    bp_end_systolic = _nullable(WHOLE, "At discharge, mmHg.")
    bp_end_diastolic = _nullable(WHOLE, "mmHg.")
    bp_end_at = _nullable(TIME, "When the discharge blood pressure was taken.")
    vitals_acceptable_pre = _nullable(YES_NO, "BP within the policy's hold thresholds and SpO2 "
                                              "at or above its alarm (92% by default); null "
                                              "if a value was not measured.")
    vitals_acceptable_end = _nullable(YES_NO, "As `vitals_acceptable_pre`, at discharge.")
    sedation = _nullable(YES_NO, "Any MOAA/S after the dose below the pre-dose baseline.")
    dissociation = _nullable(YES_NO, "Any CADSS total after the dose above the pre-dose "
                                     "baseline.")
    respiratory_depression = _nullable(YES_NO, (
        "The nurse's yes/no from the discharge; without it, whether any respiratory rate or "
        "SpO2 after the dose fell below the policy's alarm thresholds "
        "(`alarm_respiratory_rate`, `alarm_spo2`); null if neither was measured."))
    respiratory_depression_source = fields.String(metadata={
        "description": "`recorded` (by the nurse's phone), `derived` (from the readings) or "
                       "`unknown`."})
    sedating_co_medications = fields.List(fields.String(), metadata={
        "description": "Taken today, from the pre-dose assessment. In CSV, joined by `; `."})
    adverse_event_category = _nullable(TEXT, "The discharge's category (`none` if none).")
    adverse_events = _nullable(TEXT, "Decrypted free text: reading it is an audited PHI read.")


class ScorePointSchema(Schema):
    """An outcome score on the trajectory."""

    instrument = fields.String()
    total = fields.Integer()
    date = fields.Date(metadata={"description": "Organisation time."})
    occurred_at = fields.AwareDateTime()
    visit_id = fields.UUID()


class DosePointSchema(Schema):
    """A dose on the trajectory."""

    date = fields.Date(metadata={"description": "Organisation time."})
    occurred_at = fields.AwareDateTime(metadata={"description": "When the infusion started."})
    quantity_ug = fields.Integer()
    ug_per_kg = fields.Decimal(as_string=True, allow_none=True)
    visit_id = fields.UUID()


class TrajectorySchema(Schema):
    """A patient's outcome scores and doses, each oldest first."""

    patient_id = fields.UUID()
    scores = fields.List(fields.Nested(ScorePointSchema))
    doses = fields.List(fields.Nested(DosePointSchema))


class FhirBundleSchema(Schema):
    """A FHIR R4 (4.0.1) Bundle of type `collection`; each entry is a FHIR resource as JSON."""

    resourceType = fields.String(  # noqa: N815 -- FHIR's own element name
        metadata={"description": "`Bundle`."})
    id = fields.String(metadata={"description": "New at each export."})
    type = fields.String(metadata={"description": "`collection`."})
    timestamp = fields.String(metadata={"description": "When the Bundle was made (UTC)."})
    entry = fields.List(fields.Dict(), metadata={"description": (
        "Each resource once, `fullUrl` `urn:uuid:<id>`; every `reference` in the Bundle is the "
        "fullUrl of one of its entries, and ids are stable, so a re-export names the same "
        "resources. Patient (identifier: the MRN in the system "
        "`https://vigil.example/fhir/organisation/<id>/mrn`; name, birthDate, gender, phone, "
        "address as the caller may read them; US Core Patient). Practitioner for the nurse and "
        "the prescriber (name, work phone and email; US Core Practitioner). Organization (the "
        "registrant, DEA number; US Core Organization). Location: the patient's home (address, "
        "position; US Core Location). Per visit: Encounter (class HH home health, period from "
        "check-in or dose to discharge, the nurse, the home; US Core Encounter); Medication "
        "per lot (RxNorm and NDC 5-4-2 codes, `batch` lot and expiry; US Core Medication); "
        "MedicationRequest for the plan version, per phase (US Core MedicationRequest); "
        "MedicationAdministration (dose in UCUM mg, route in SNOMED CT, period, performer, "
        "context); Observations with the Encounter: blood-pressure panel LOINC 85354-9 with "
        "8480-6 and 8462-4 in mm[Hg], SpO2 59408-5 (with 2708-6), heart rate 8867-4, "
        "respiratory rate 9279-1 (US Core blood-pressure, pulse-oximetry, heart-rate, "
        "respiratory-rate and vital-signs profiles); MOAA/S, CADSS and BPRS positive totals "
        "with their items as components (`https://vigil.example/fhir/CodeSystem/scales`), "
        "PHQ-9 total 44261-6 and MADRS total (survey); AdverseEvent for the discharge's "
        "adverse events (actual; category in "
        "`https://vigil.example/fhir/CodeSystem/adverse-event-category`).")})
