"""The REMS patient monitoring form: every field from a session a phone recorded, as JSON, CSV
and a printable console page; respiratory depression recorded or derived; refusals."""

from __future__ import annotations

import csv
import html
import io
import json
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.administration.models import Discharge, QuarantinedEvent
from backend.administration.reports import respiratory_depression
from backend.administration.schemas import MonitoringRecordSchema
from backend.audit.models import AuditEvent
from backend.products.models import DrugProduct
from safeguards.policy import Policy
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.backend.console.conftest import signed_in
from tests.backend.sync.test_sync import Handset
from tests.factories import Clinic, World

ADDRESS = "12 Quayside Lane, Chicago IL 60601"
NURSE = {"display_name": "Nora Field, RN", "phone": "+1 312 555 0142",
         "email": "nora.field@example.org"}
PRESCRIBER = "Dr Priya Shah"
ORGANISATION = "Lakeside Home Infusion"
CADSS_BEFORE = {"1": 0, "2": 0, "6": 0, "7": 0, "15": 1, "22": 0}
CADSS_AFTER = {"1": 2, "2": 1, "6": 0, "7": 3, "15": 1, "22": 0}
NEW_LINES = {"ready_to_leave_at": "2026-11-03T17:15:00+00:00", "respiratory_depression": False}


def _at(clock_time: str) -> str:
    return f"2026-11-03T{clock_time}:00+00:00"


# The session as the nurse records it: (part, body), the same by REST and by sync.
CHECK_IN = {"latitude": "41.878300", "longitude": "-87.629800", "accuracy_m": 12,
            "occurred_at": _at("15:02")}
PARTS = [
    ("pre-dose", {**PRE, "occurred_at": _at("15:05"), "co_medications": ["benzodiazepine"],
                  "cadss_items": CADSS_BEFORE}),
    ("dose", {"occurred_at": _at("15:10")}),
    ("observations", {"occurred_at": _at("15:40"), "systolic": 160, "diastolic": 95,
                      "heart_rate": 88, "spo2": 97, "respiratory_rate": 16, "moaas": 3,
                      "cadss_items": CADSS_AFTER}),
    ("observations", {"occurred_at": _at("15:52"), "systolic": 148, "diastolic": 91}),
    ("observations", {"occurred_at": _at("16:30"), "systolic": 130, "diastolic": 84,
                      "spo2": 96, "respiratory_rate": 14}),
    ("discharge", {"occurred_at": _at("17:20"), "systolic": 124, "diastolic": 80, "spo2": 98,
                   "respiratory_rate": 15, "moaas": 5, "state": "baseline",
                   "adverse_event_category": "nausea_vomiting",
                   "adverse_events": "mild nausea at 30 min", **NEW_LINES}),
]
TABLES = {"pre-dose": "pre_doses", "dose": "doses", "observations": "observations",
          "discharge": "discharges"}


class Recorded:
    """A visit whose people, patient and session fill every line of the form."""

    def __init__(self, world: World) -> None:
        self.visit = Session(world)
        self.pharmacy = pharmacy = self.visit.pharmacy
        self.world, self.client = world, pharmacy.client
        self.visit_id = self.visit.visit["id"]
        patched = self.client.patch(f"/api/v1/patients/{pharmacy.patient_id}",
                                    headers=pharmacy.as_(Role.ADMIN),
                                    json={"sex": "female", "address": ADDRESS})
        assert patched.status_code == 200, patched.json
        # Until the user and organisation endpoints carry them, set as an admin would.
        for name, value in NURSE.items():
            setattr(pharmacy.nurse, name, value)
        pharmacy.prescriber.display_name = PRESCRIBER
        pharmacy.org.name = ORGANISATION
        world.commit()

    def body(self, part: str, body: dict) -> dict:
        """Return a part's body with the dose's product, lot and times where it needs them."""
        return {**dose(self.pharmacy.product_id), **body} if part == "dose" else body

    def by_rest(self, parts=PARTS) -> None:
        """Check in and post each record from the nurse's phone."""
        checked_in = self.client.post(f"/api/v1/visits/{self.visit_id}/check-in",
                                      headers=self.visit.phone_headers, json=CHECK_IN)
        assert checked_in.status_code == 200, checked_in.json
        for part, body in parts:
            response = self.visit.post(part, self.visit.signed(self.body(part, body)))
            assert response.status_code == 201, (part, response.json)

    def by_sync(self, parts=PARTS, schema_version: int | None = None) -> dict:
        """Push the check-in and the records as WatermelonDB rows; return the push's answer."""
        handset = Handset(self.pharmacy)
        handset.sync_pull()
        rows: dict[str, list] = {"evv_events": [handset.row({
            "visit_id": self.visit_id, "kind": "check_in", "latitude": 41.8783,
            "longitude": -87.6298, "accuracy_m": 12, "occurred_at": CHECK_IN["occurred_at"],
            "reason": None})]}
        for part, body in parts:
            rows.setdefault(TABLES[part], []).append(handset.row(
                {"visit_id": self.visit_id, **self.watermelon(self.body(part, body))}))
        query = {"schema_version": schema_version} if schema_version else {}
        pushed = handset.push({table: {"created": created, "updated": [], "deleted": []}
                               for table, created in rows.items()}, **query)
        assert pushed.status_code == 200, pushed.json
        return pushed.json

    @staticmethod
    def watermelon(body: dict) -> dict:
        """Return a record's columns as WatermelonDB holds them: nested values as JSON text."""
        return {name: json.dumps(value) if isinstance(value, dict | list) else value
                for name, value in body.items()}

    def get(self, role: Role = Role.COMPLIANCE, headers: dict | None = None, **query):
        """GET the visit's monitoring record."""
        return self.client.get(f"/api/v1/visits/{self.visit_id}/monitoring-record",
                               headers=headers or self.pharmacy.as_(role), query_string=query)

    def expected(self) -> dict:
        """Return the form as the seeded session must fill it, field by field."""
        product = self.world.session.get(DrugProduct, uuid.UUID(self.pharmacy.product_id))
        return {
            "visit_id": self.visit_id, "patient_id": self.pharmacy.patient_id,
            "patient_name": "Pat Test", "patient_date_of_birth": "1970-01-01",
            "patient_sex": "female", "prescriber_name": PRESCRIBER,
            "clinician_name": NURSE["display_name"], "clinician_role": "nurse",
            "clinician_phone": NURSE["phone"], "clinician_email": NURSE["email"],
            "organisation_name": ORGANISATION, "setting_name": "Patient's home",
            "setting_address": ADDRESS, "date": "2026-11-03",
            "check_in_latitude": "41.878300", "check_in_longitude": "-87.629800",
            "check_in_distance_m": 22, "check_in_within_radius": True,
            "product": product.name, "route": "IV", "lot": "L1", "dose_ug": 35_000,
            "dose_mg": "35.000", "dose_mg_per_kg": "0.500",
            "dose_started_at": _at("15:10"), "discharged_at": _at("17:20"),
            "ready_to_leave_at": _at("17:15"), "minutes_monitored": 130,
            "bp_pre_systolic": 122, "bp_pre_diastolic": 78, "bp_pre_at": _at("15:05"),
            # 15:52 is 42 min after the dose began: nearer 40 min than 15:40 (30 min).
            "bp_40_min_systolic": 148, "bp_40_min_diastolic": 91, "bp_40_min_at": _at("15:52"),
            "bp_end_systolic": 124, "bp_end_diastolic": 80, "bp_end_at": _at("17:20"),
            "vitals_acceptable_pre": True, "vitals_acceptable_end": True,
            "sedation": True, "dissociation": True, "respiratory_depression": False,
            "respiratory_depression_source": "recorded",
            "sedating_co_medications": ["benzodiazepine"],
            "adverse_event_category": "nausea_vomiting",
            "adverse_events": "mild nausea at 30 min"}

    def audited(self) -> list[AuditEvent]:
        """Return the reads of the form, oldest first."""
        return list(self.world.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "session.monitoring_record_read")
            .order_by(AuditEvent.occurred_at, AuditEvent.id)))


@pytest.fixture
def recorded(world: World) -> Recorded:
    seeded = Recorded(world)
    seeded.by_rest()
    return seeded


@pytest.mark.parametrize("path", ["rest", "sync"])
def test_every_field_of_the_form_is_filled_from_the_phones_session(world: World, path):
    seeded = Recorded(world)
    if path == "rest":
        seeded.by_rest()
    else:
        assert seeded.by_sync()["quarantined"] == []
    response = seeded.get()
    assert response.status_code == 200, response.json
    assert response.json == seeded.expected()
    assert [name for name, value in response.json.items() if value in (None, [])] == []


def test_the_read_is_audited_naming_the_phi_it_shows(recorded: Recorded):
    assert recorded.get(Role.PRESCRIBER).status_code == 200
    [read] = recorded.audited()
    assert (read.object_id, read.detail["patient_id"]) == (recorded.visit_id,
                                                           recorded.pharmacy.patient_id)
    assert read.detail["phi"] == ["patient_name", "patient_date_of_birth", "patient_sex",
                                  "setting_address", "adverse_events"]


def _csv_cell(value) -> str:
    """Return how the CSV writes a JSON value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "; ".join(value) if isinstance(value, list) else str(value)


def test_the_csv_is_one_strict_rfc_4180_row_that_round_trips_to_the_json(recorded: Recorded):
    form = recorded.get().json
    response = recorded.get(format="csv")
    assert (response.status_code, response.mimetype) == (200, "text/csv")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="monitoring-{recorded.visit_id}.csv"')
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff") and text.endswith("\r\n")
    header, row = list(csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True))
    # The form's order (the JSON's keys come sorted), the JSON's names.
    assert header == list(MonitoringRecordSchema().fields) and set(header) == set(form)
    assert dict(zip(header, row, strict=True)) == {
        name: _csv_cell(value) for name, value in form.items()}


def test_the_csv_leaves_what_was_not_recorded_empty(world: World):
    seeded = Recorded(world)
    seeded.by_rest(PARTS[:2])
    header, row = list(csv.reader(io.StringIO(
        seeded.get(format="csv").get_data(as_text=True).removeprefix("\ufeff")), strict=True))
    cells = dict(zip(header, row, strict=True))
    assert [cells[name] for name in ("discharged_at", "ready_to_leave_at", "bp_end_at",
                                     "respiratory_depression", "adverse_events")] == [""] * 5
    assert cells["respiratory_depression_source"] == "unknown"


# What the printable page shows for each field: (field, text on the page).
PRINTED = [
    ("patient_name", "Pat Test"), ("patient_date_of_birth", "1970-01-01"),
    ("patient_sex", "Female"), ("prescriber_name", PRESCRIBER),
    ("organisation_name", ORGANISATION), ("setting_name", "Patient's home"),
    ("setting_address", ADDRESS), ("check_in_distance_m", "22 m from the home (within"),
    ("date", "2026-11-03"), ("lot", "L1"), ("route", "IV"),
    ("dose_mg", "35.000 mg (0.500 mg/kg)"), ("dose_started_at", "2026-11-03 15:10 UTC"),
    ("discharged_at", "2026-11-03 17:20 UTC"), ("ready_to_leave_at", "2026-11-03 17:15 UTC"),
    ("minutes_monitored", "<dd>130</dd>"),
    ("bp_pre", "<td>2026-11-03 15:05 UTC</td><td>122/78 mmHg</td><td>Yes</td>"),
    ("bp_40_min", "<td>2026-11-03 15:52 UTC</td><td>148/91 mmHg</td>"),
    ("bp_end", "<td>2026-11-03 17:20 UTC</td><td>124/80 mmHg</td><td>Yes</td>"),
    ("sedation", '<th scope="row">Sedation</th><td>Yes</td>'),
    ("dissociation", '<th scope="row">Dissociation</th><td>Yes</td>'),
    ("respiratory_depression",
     '<th scope="row">Respiratory depression</th><td>No <span class="hint">(recorded by the '
     "nurse)"),
    ("sedating_co_medications", "benzodiazepine"),
    ("adverse_event_category", "Nausea vomiting"), ("adverse_events", "mild nausea at 30 min"),
    ("clinician_name", NURSE["display_name"]), ("clinician_role", "<dd>Nurse</dd>"),
    ("clinician_phone", NURSE["phone"]), ("clinician_email", NURSE["email"]),
]
SECTIONS = ["1. Patient", "2. Prescriber and healthcare setting", "3. Session",
            "4. Vital signs", "5. Observations", "6. Adverse events",
            "7. Monitoring clinician"]


@pytest.fixture
def printed(recorded: Recorded) -> str:
    desk = signed_in(recorded.world, recorded.pharmacy.org,
                     recorded.pharmacy.users[Role.COMPLIANCE])
    response = desk.get(f"/console/visits/{recorded.visit_id}/monitoring-record")
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


@pytest.mark.parametrize(("field", "shown"), PRINTED, ids=[field for field, _ in PRINTED])
def test_the_printable_page_shows_each_field(printed: str, field, shown):
    assert shown in printed


def test_the_printable_page_is_laid_out_like_the_paper_form(printed: str):
    assert [printed.index(heading) for heading in SECTIONS] == sorted(
        printed.index(heading) for heading in SECTIONS)
    assert 'class="rems-form"' in printed and "Print this page" in printed
    assert printed.count('class="signature-line"') == 2
    assert " style=" not in printed and "<script>" not in printed


def test_the_console_csv_is_the_apis(recorded: Recorded):
    desk = signed_in(recorded.world, recorded.pharmacy.org,
                     recorded.pharmacy.users[Role.PRESCRIBER])
    page = desk.get(f"/console/visits/{recorded.visit_id}/monitoring-record")
    link = f"/console/visits/{recorded.visit_id}/monitoring-record.csv"
    assert f'href="{link}"' in page.get_data(as_text=True)
    download = desk.get(link)
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert download.get_data() == recorded.get(format="csv").get_data()
    assert len(recorded.audited()) == 3


def _reading(respiratory_rate=None, spo2=None):
    return SimpleNamespace(respiratory_rate=respiratory_rate, spo2=spo2)


def _ended(said=None, **vitals):
    return SimpleNamespace(respiratory_depression=said, **_reading(**vitals).__dict__)


# (observations, discharge, expected answer and source) with the policy's alarms: RR < 10,
# SpO2 < 92.
DEPRESSION = [
    ([_reading(14, 97)], _ended(True, respiratory_rate=14, spo2=97), (True, "recorded")),
    ([_reading(8, 85)], _ended(False), (False, "recorded")),
    ([_reading(9, 97)], _ended(), (True, "derived")),
    ([_reading(14, 91)], None, (True, "derived")),
    ([_reading(14, 97)], _ended(respiratory_rate=12, spo2=90), (True, "derived")),
    ([_reading(10, 92)], _ended(respiratory_rate=10, spo2=92), (False, "derived")),
    ([_reading(spo2=96)], None, (False, "derived")),
    ([_reading()], _ended(), (None, "unknown")),
    ([], None, (None, "unknown")),
]


@pytest.mark.parametrize(("observations", "discharge", "expected"), DEPRESSION)
def test_respiratory_depression_is_the_nurses_word_else_the_readings(observations, discharge,
                                                                     expected):
    session = SimpleNamespace(observations=observations, discharge=discharge)
    assert respiratory_depression(Policy(), session) == expected


def test_the_derivation_follows_the_policys_thresholds():
    stricter = Policy().with_overrides({"alarm_spo2": 97})
    session = SimpleNamespace(observations=[_reading(14, 96)], discharge=None)
    assert respiratory_depression(stricter, session) == (True, "derived")


def _without_new_lines(parts=PARTS):
    return [(part, {k: v for k, v in body.items() if k not in NEW_LINES}) for part, body in parts]


@pytest.mark.parametrize("path", ["rest", "sync"])
def test_an_older_phones_discharge_is_accepted_and_the_form_derives(world: World, path):
    seeded = Recorded(world)
    parts = [*_without_new_lines(PARTS[:3]), ("observations", {
        "occurred_at": _at("15:55"), "systolic": 140, "diastolic": 88, "spo2": 89}),
        *_without_new_lines(PARTS[5:])]
    if path == "rest":
        seeded.by_rest(parts)
    else:
        # A schema-1 phone: its discharges have no columns for the new lines.
        assert seeded.by_sync(parts, schema_version=1)["quarantined"] == []
    form = seeded.get().json
    assert (form["ready_to_leave_at"], form["respiratory_depression"],
            form["respiratory_depression_source"]) == (None, True, "derived")
    stored = world.session.scalar(select(Discharge).where(
        Discharge.visit_id == uuid.UUID(seeded.visit_id)))
    assert (stored.ready_to_leave_at, stored.respiratory_depression) == (None, None)


def _discharge(**changes) -> dict:
    return {**dict(PARTS)["discharge"], **changes}


# A discharge the schema or the session refuses: (its changes, the field named).
REFUSED = [
    ({"ready_to_leave_at": _at("17:21")}, "ready_to_leave_at"),
    ({"ready_to_leave_at": _at("15:09")}, "ready_to_leave_at"),
    ({"ready_to_leave_at": "2026-11-03T17:15:00"}, "ready_to_leave_at"),
    ({"ready_to_leave_at": "at quarter past five"}, "ready_to_leave_at"),
    ({"respiratory_depression": "no"}, "respiratory_depression"),
    ({"respiratory_depression": 0}, "respiratory_depression"),
]


@pytest.mark.parametrize(("changes", "field"), REFUSED)
def test_a_discharge_with_impossible_new_lines_is_refused_naming_the_field(world: World,
                                                                          changes, field):
    seeded = Recorded(world)
    seeded.by_rest(PARTS[:2])
    refused = seeded.visit.post("discharge", seeded.visit.signed(_discharge(**changes)))
    assert refused.status_code == 422, refused.json
    assert field in refused.json["error"]["details"]["fields"]
    assert world.session.scalar(select(func.count()).select_from(Discharge)) == 0


def test_a_refused_discharge_from_sync_is_quarantined_naming_the_field(world: World):
    seeded = Recorded(world)
    pushed = seeded.by_sync([*PARTS[:2], ("discharge", _discharge(
        ready_to_leave_at=_at("15:00")))])
    [held] = pushed["quarantined"]
    assert held["table"] == "discharges" and "ready_to_leave_at" in held["reason"]
    assert world.session.scalar(select(func.count()).select_from(Discharge)) == 0


def test_the_phones_signature_covers_the_new_lines(world: World):
    seeded = Recorded(world)
    seeded.by_rest(PARTS[:2])
    signed = seeded.visit.signed(_discharge())
    tampered = {**signed, "respiratory_depression": True}
    refused = seeded.visit.post("discharge", tampered)
    assert (refused.status_code, refused.json["error"]["code"]) == (422, "signature_invalid")
    assert world.session.scalar(select(func.count()).select_from(QuarantinedEvent)) == 1
    assert seeded.visit.post("discharge", signed).status_code == 201
    stored = world.session.scalar(select(Discharge))
    assert stored.signed_body["respiratory_depression"] is False
    assert stored.signed_body["ready_to_leave_at"] == _at("17:15")


@pytest.mark.parametrize("role", [Role.PHARMACIST])
def test_a_role_without_the_record_is_refused(recorded: Recorded, role):
    assert recorded.get(role).status_code == 403
    desk = signed_in(recorded.world, recorded.pharmacy.org, recorded.pharmacy.users[role])
    for path in ("monitoring-record", "monitoring-record.csv"):
        assert desk.get(f"/console/visits/{recorded.visit_id}/{path}").status_code == 403
    assert recorded.audited() == []


def test_another_organisation_gets_404(recorded: Recorded, world: World):
    other = Clinic(world)
    for role in (Role.COMPLIANCE, Role.NURSE):
        assert recorded.get(headers=other.as_(role)).status_code == 404
    desk = signed_in(world, other.org, other.users[Role.COMPLIANCE])
    for path in ("monitoring-record", "monitoring-record.csv"):
        assert desk.get(f"/console/visits/{recorded.visit_id}/{path}").status_code == 404
    assert recorded.audited() == []


def test_another_nurse_gets_404(recorded: Recorded, world: World):
    other = world.user(recorded.pharmacy.org, Role.NURSE)
    response = recorded.get(headers=world.headers(recorded.pharmacy.org, other))
    assert response.status_code == 404
    assert recorded.audited() == []


def test_her_own_visit_shows_a_nurse_no_longer_assigned_no_patient_details(
        recorded: Recorded, world: World):
    pharmacy = recorded.pharmacy
    ended = pharmacy.client.delete(
        f"/api/v1/patients/{pharmacy.patient_id}/nurses/{pharmacy.nurse.id}",
        headers=pharmacy.as_(Role.ADMIN))
    assert ended.status_code == 204, ended.json
    response = recorded.get(Role.NURSE)
    assert response.status_code == 200, response.json
    hidden = ("patient_name", "patient_date_of_birth", "patient_sex", "setting_address")
    assert [response.json[name] for name in hidden] == [None] * 4
    assert response.json["adverse_events"] == "mild nausea at 30 min"
    assert recorded.audited()[-1].detail["phi"] == ["adverse_events"]
