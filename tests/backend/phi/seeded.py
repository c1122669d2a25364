"""An organisation seeded through the API with distinctive text in every field a person fills in.

Each needle is a word found nowhere else, named after the field it was written into, so that a
needle found in the stored bytes names the field that leaked. Every free-text and identifying
field the API accepts gets one, by REST and by sync, in records accepted and quarantined.

Fields left out, and why they may be stored in clear:
- who works here: the organisation's name, slug and DEA number, users' usernames and display
  names, device labels (the staff's own phones). They identify the clinic and its workforce,
  not patients.
- the drug catalogue and the stock: product names and ingredients, lot numbers, expiry dates,
  plan phase names, recurrence rules, policy values. They describe the drug, not a person.
- closed vocabularies: co-medications, discharge state, adverse-event category, the go/no-go
  decision, scale items. Their values are chosen from lists the server defines; like the vital
  signs, they are kept in clear beside the patient's surrogate id so the safeguards can count.
- home and check-in coordinates: kept in clear for visit verification (`Patient.home_latitude`
  says why); the patient behind them is a surrogate id.
- quarantine reasons: the server's own sentence (an error code and message); the test shows
  they quote none of the record they refuse.
- witness passwords are checked and never stored; idempotency keys are opaque tokens.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from flask import Flask

from backend.accounts.models import Role
from backend.clock import FixedClock
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, Phone, World, signed_payload

PATIENTS = [
    {"mrn": "MRN-ZX-48213", "name": "Zebulon Quillfeather", "date_of_birth": "1961-07-23",
     "address": "742 Marigold Crescent, Flat 9", "phone": "+1 415 555 0173",
     "emergency_contact": "Henrietta Quillfeather (sister) +1 415 555 0174",
     "notes": "Spare key under the blue heron statue", "sex": "male", "home_latitude": "37.774900",
     "home_longitude": "-122.419400"},
    {"mrn": "MRN-ZX-99107", "name": "Zoë Ashgrove-Pemberly", "date_of_birth": "1978-02-14",
     "address": "31 Juniper Hollow Road", "phone": "+1 415 555 0188",
     "emergency_contact": "Bartholomew Ashgrove", "notes": "Allergic to penicillin"},
]
CHANGED_NOTES = "Moved the spare key to the lavender planter"
PATIENT_NEEDLES = ["MRN-ZX-48213", "MRN-ZX-99107", "Zebulon", "Quillfeather", "Zoë", "Ashgrove",
                   "Pemberly", "1961-07-23", "1978-02-14", "Marigold", "Juniper Hollow",
                   "555 0173", "555 0188", "Henrietta", "Bartholomew", "blue heron",
                   "penicillin", "lavender"]


def needle(field: str) -> str:
    """Return the distinctive word written into `field`."""
    return f"Zq{''.join(part.title() for part in field.split('_'))}Vx"


# Every other field a needle goes into, by where it enters.
FIELDS = [
    "plan_change_reason", "plan_dose_justification", "visit_override_reason",
    "visit_cancel_reason",
    "rest_check_in_reason", "rest_check_out_reason", "rest_decision_reason",
    "rest_bp_justification", "rest_adverse_events", "rest_quarantined_adverse_events",
    "rest_waste_details", "rest_quarantined_waste_details", "rest_session_adverse_events",
    "supplier_name", "supplier_address", "supplier_invoice", "receive_note", "seal_id",
    "adjust_reason", "loss_circumstances", "destroy_method", "count_reason",
    "sync_check_in_reason", "sync_decision_reason", "sync_bp_justification",
    "sync_adverse_events", "sync_waste_details", "sync_forged_decision_reason",
    "sync_invalid_adverse_events", "sync_duplicate_adverse_events",
    "flag_note", "flag_resolution_note",
]
NEEDLES = [*PATIENT_NEEDLES, *(needle(field) for field in FIELDS)]

START = datetime.fromisoformat("2026-11-02T14:00:00+00:00")
V1, V2, V3, V4 = ("2026-11-03T15:00:00+00:00", "2026-11-10T15:00:00+00:00",
                  "2026-11-13T15:00:00+00:00", "2026-11-04T15:00:00+00:00")
FAR = {"latitude": "41.888100", "longitude": "-87.629800", "accuracy_m": 12}
PRE = {"systolic": 122, "diastolic": 78, "heart_rate": 70, "spo2": 98, "respiratory_rate": 14,
       "moaas": 5, "decision": "go"}
VITALS = {"systolic": 126, "diastolic": 80, "heart_rate": 72, "spo2": 97,
          "respiratory_rate": 14, "moaas": 4}


def _ok(response, status: int = 201) -> dict:
    assert response.status_code == status, response.json
    return response.json


class Seeder:
    """Drive a committed organisation through every door that takes free text."""

    def __init__(self, app: Flask, clock: FixedClock) -> None:
        self.world = World(app)
        self.clock = clock
        self.pharmacy = Pharmacy(self.world)
        self.slug = self.pharmacy.org.slug
        self.client = self.pharmacy.client

    def as_(self, role: Role, phone: bool = False) -> dict:
        """Return the headers of a fresh login as `role` (the nurse from her phone)."""
        return self.pharmacy.as_(role, self.pharmacy.device_id if phone else None)

    def signed(self, body: dict, phone: Phone | None = None) -> dict:
        """Return a record with an id and the nurse's phone's signature."""
        body = {"id": str(uuid.uuid4()), **body}
        return {**body, "signature": (phone or self.pharmacy.phone).sign(body)}

    def patients(self) -> None:
        """Register, change and weigh patients; a nurse reads them back."""
        headers = self.as_(Role.ADMIN)
        ids = [_ok(self.client.post("/api/v1/patients", headers=headers, json={
            **patient, "nurse_ids": [str(self.pharmacy.nurse.id)]}))["id"]
            for patient in PATIENTS]
        _ok(self.client.patch(f"/api/v1/patients/{ids[0]}", headers=headers,
                              json={"notes": CHANGED_NOTES}), 200)
        _ok(self.client.post(f"/api/v1/patients/{ids[0]}/weights", headers=headers,
                             json={"weight_kg": "81.4", "measured_at": "2026-11-01T10:00:00Z"}))
        read = self.client.get("/api/v1/patients", headers=self.as_(Role.NURSE))
        assert {p["name"] for p in PATIENTS} <= {p["name"] for p in read.json}

    def plans_and_visits(self) -> dict[str, str]:
        """Write and revise the plan; schedule, override and cancel visits."""
        plan = self.pharmacy.plan()
        _ok(self.client.put(f"/api/v1/plans/{plan['id']}", headers=self.as_(Role.PRESCRIBER),
                            json={"product_id": self.pharmacy.product_id, "route": "IV",
                                  "dose_ug_per_kg": 500, "max_dose_ug": 70_000,
                                  "infusion_minutes": 40, "starts_on": "2026-11-02",
                                  "change_reason": needle("plan_change_reason"),
                                  "dose_justification": needle("plan_dose_justification")}),
            200)
        visits = {name: _ok(self.pharmacy.schedule(start))["id"]
                  for name, start in (("v1", V1), ("v2", V2), ("v3", V3))}
        visits["v4"] = _ok(self.pharmacy.schedule(
            V4, role=Role.PRESCRIBER, override_reason=needle("visit_override_reason")))["id"]
        _ok(self.client.post(f"/api/v1/visits/{visits['v3']}/cancel",
                             headers=self.as_(Role.ADMIN),
                             json={"reason": needle("visit_cancel_reason")}), 200)
        _ok(self.client.post(f"/api/v1/patients/{self.pharmacy.patient_id}/weights",
                             headers=self.as_(Role.NURSE),
                             json={"weight_kg": "70", "measured_at": "2026-11-01T10:00:00Z"}))
        return visits

    def custody(self) -> None:
        """Receive, dispense, adjust, lose, destroy and count, each with its free text."""
        post = self.pharmacy.post
        _ok(post(Role.PHARMACIST, {"kind": "receive", "quantity_ug": 2_000_000, "details": {
            **SUPPLIER, "supplier_name": needle("supplier_name"),
            "supplier_address": needle("supplier_address"),
            "invoice": needle("supplier_invoice"), "note": needle("receive_note")}}))
        _ok(self.pharmacy.dispense(500_000, seal=needle("seal_id")))
        _ok(post(Role.PHARMACIST, {"kind": "adjust", "quantity_ug": 1_000, "holder": "vault",
                                   "details": {"reason": needle("adjust_reason"),
                                               "direction": "down"}}))
        _ok(post(Role.PHARMACIST, {"kind": "loss", "quantity_ug": 1_000, "holder": "vault",
                                   "details": {"circumstances": needle("loss_circumstances")}}))
        _ok(post(Role.PHARMACIST, {
            "kind": "destroy", "quantity_ug": 10_000,
            "details": {"method": needle("destroy_method")},
            "witnesses": [{"user_id": str(self.pharmacy.users[role].id), "password": PASSWORD}
                          for role in (Role.ADMIN, Role.COMPLIANCE)]}))
        _ok(self.client.post("/api/v1/custody/counts", headers=self.as_(Role.PHARMACIST), json={
            "holder": "vault", "counted_at": "2026-11-02T14:00:00+00:00",
            "counts": [{"product_id": self.pharmacy.product_id, "lot": "L1",
                        "quantity_ug": 1_400_000}],
            "reasons": {"L1": needle("count_reason")}}))

    def rest_session(self, visit_id: str) -> None:
        """Check in and out far from home and record a whole session, one record at a time."""
        self.clock.set(datetime.fromisoformat(V1))
        phone = self.as_(Role.NURSE, phone=True)
        url = f"/api/v1/visits/{visit_id}"
        _ok(self.client.post(f"{url}/check-in", headers=phone, json={
            **FAR, "occurred_at": V1, "reason": needle("rest_check_in_reason")}), 200)
        _ok(self.client.post(f"{url}/pre-dose", headers=phone, json=self.signed({
            **PRE, "systolic": 190, "occurred_at": V1,
            "decision_reason": needle("rest_decision_reason"),
            "bp_justification": needle("rest_bp_justification")})))
        self.dose = (visit_id, self.signed({
            "product_id": self.pharmacy.product_id, "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": 35_000, "route": "IV", "occurred_at": V1,
            "infusion_started_at": "2026-11-03T15:10:00+00:00",
            "infusion_ended_at": "2026-11-03T15:50:00+00:00"}))
        _ok(self.client.post(f"{url}/dose", headers=phone, json=self.dose[1]))
        _ok(self.client.post(f"{url}/observations", headers=phone, json=self.signed({
            **VITALS, "occurred_at": "2026-11-03T16:00:00+00:00"})))
        discharge = {**VITALS, "occurred_at": "2026-11-03T17:30:00+00:00", "state": "baseline",
                     "adverse_event_category": "nausea_vomiting"}
        forged = self.signed({**discharge, "adverse_events": needle(
            "rest_quarantined_adverse_events")}, phone=Phone.new())
        assert self.client.post(f"{url}/discharge", headers=phone,
                                json=forged).status_code == 422
        _ok(self.client.post(f"{url}/discharge", headers=phone, json=self.signed({
            **discharge, "adverse_events": needle("rest_adverse_events")})))
        _ok(self.client.post(f"{url}/outcomes", headers=phone, json=self.signed({
            "instrument": "phq9", "items": {str(i): 1 for i in range(1, 10)},
            "occurred_at": "2026-11-03T17:35:00+00:00"})))
        _ok(self.client.post(f"{url}/waste", headers=phone, json=self.waste(
            visit_id, needle("rest_waste_details"))))
        self.clock.set(datetime.fromisoformat("2026-11-03T18:00:00+00:00"))
        phone = self.as_(Role.NURSE, phone=True)
        _ok(self.client.post(f"{url}/check-out", headers=phone, json={
            **FAR, "occurred_at": "2026-11-03T18:00:00+00:00",
            "reason": needle("rest_check_out_reason")}), 200)

    def waste(self, visit_id: str, details: str, quantity_ug: int = 15_000) -> dict:
        """Return a visit's waste, witnessed by the pharmacist's password, signed."""
        body = {"id": str(uuid.uuid4()), "product_id": self.pharmacy.product_id, "lot": "L1",
                "expiry": "2028-01-31", "quantity_ug": quantity_ug,
                "occurred_at": "2026-11-03T17:40:00+00:00", "details": {"note": details},
                "witnesses": [{"user_id": str(self.pharmacy.users[Role.PHARMACIST].id),
                               "password": PASSWORD}]}
        movement = signed_payload(self.pharmacy, {**body, "kind": "waste",
                                                  "visit_id": visit_id})
        return {**body, "signature": self.pharmacy.phone.sign(movement)}

    def rest_whole_session(self, visit_id: str) -> None:
        """Post a whole session whose waste the ledger refuses: it is quarantined, kept."""
        phone = self.as_(Role.NURSE, phone=True)
        answer = _ok(self.client.post(f"/api/v1/visits/{visit_id}/session", headers=phone, json={
            "discharge": self.signed({
                **VITALS, "occurred_at": V4, "state": "baseline",
                "adverse_event_category": "other",
                "adverse_events": needle("rest_session_adverse_events")}),
            "waste": self.waste(visit_id, needle("rest_quarantined_waste_details"),
                                quantity_ug=900_000_000)}))
        assert [q["record_type"] for q in answer["quarantined"]] == ["custody_waste"]

    def sync_session(self, visit_id: str) -> None:
        """Push a check-in, a session and a waste from the phone, with refused records too."""
        headers = self.as_(Role.NURSE, phone=True)
        cursor = _ok(self.client.get("/api/v1/sync", headers=headers, query_string={
            "last_pulled_at": 0, "schema_version": 1}), 200)["timestamp"]
        at = "2026-11-10T15:{:02d}:00+00:00"
        discharge = {"visit_id": visit_id, **VITALS, "cadss_items": None, "cadss_total": None,
                     "occurred_at": at.format(50), "state": "baseline",
                     "adverse_event_category": "other"}
        pre = {"visit_id": visit_id, **PRE, "cadss_items": None, "cadss_total": None,
               "co_medications": "[]", "occurred_at": at.format(1)}
        honest = self.row({**discharge, "adverse_events": needle("sync_adverse_events")})
        changes = {
            "evv_events": [self.row({"visit_id": visit_id, "kind": "check_in",
                                     "latitude": 41.8881, "longitude": -87.6298,
                                     "accuracy_m": 12, "occurred_at": at.format(0),
                                     "reason": needle("sync_check_in_reason")})],
            "pre_doses": [
                self.row({**pre, "decision_reason": needle("sync_decision_reason"),
                          "bp_justification": needle("sync_bp_justification")}),
                self.row({**pre, "decision_reason": needle("sync_forged_decision_reason"),
                          "bp_justification": None}, phone=Phone.new())],
            "discharges": [
                honest,
                self.row({**discharge, "state": "not-a-state",
                          "adverse_events": needle("sync_invalid_adverse_events")})],
            "custody_entries": [self.custody_row(visit_id, needle("sync_waste_details"))],
        }
        pushed = _ok(self.push(headers, cursor, changes), 200)
        self.resent = (cursor, honest)
        assert len(pushed["quarantined"]) == 2, pushed
        twin = {**honest, "adverse_events": needle("sync_duplicate_adverse_events")}
        twin = self.row({key: value for key, value in twin.items()
                         if key not in ("signature", "_status", "_changed")})
        again = _ok(self.push(headers, cursor, {"discharges": [{**twin, "id": honest["id"]}]}),
                    200)
        assert [q["reason"].split(":")[0] for q in again["quarantined"]] == [
            "conflicting_duplicate"]

    def row(self, columns: dict, phone: Phone | None = None) -> dict:
        """Return a pushed row, signed as WatermelonDB holds it."""
        row = {"id": str(uuid.uuid4()), **columns}
        return {**row, "signature": (phone or self.pharmacy.phone).sign(row),
                "_status": "created", "_changed": ""}

    def custody_row(self, visit_id: str, details: str) -> dict:
        """Return a witnessed waste as the phone pushes it."""
        body = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": self.pharmacy.product_id,
                "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 5_000,
                "occurred_at": "2026-11-10T17:00:00+00:00", "visit_id": visit_id,
                "details": {"note": details}}
        witness = {"user_id": str(self.pharmacy.users[Role.PHARMACIST].id),
                   "password": PASSWORD}
        return {**body, "from_holder": None, "to_holder": None, "corrects_id": None,
                "details": json.dumps(body["details"]), "witnesses": json.dumps([witness]),
                "signature": self.pharmacy.phone.sign(signed_payload(self.pharmacy, body)),
                "_status": "created", "_changed": ""}

    def push(self, headers: dict, cursor: int, created: dict[str, list]):
        """Push `created` rows."""
        return self.client.post("/api/v1/sync", headers={
            **headers, "Idempotency-Key": str(uuid.uuid4())},
            query_string={"last_pulled_at": cursor, "schema_version": 1},
            json={"changes": {table: {"created": rows, "updated": [], "deleted": []}
                              for table, rows in created.items()}})

    def review(self) -> None:
        """Note on a flag, take it into review and resolve it with a note."""
        headers = self.as_(Role.COMPLIANCE)
        flags = _ok(self.client.get("/api/v1/flags", headers=headers), 200)
        assert flags, "the seeded records raised no flag"
        flag_id = flags[0]["id"]
        _ok(self.client.post(f"/api/v1/flags/{flag_id}/notes", headers=headers,
                             json={"note": needle("flag_note")}), 200)
        _ok(self.client.post(f"/api/v1/flags/{flag_id}/assign", headers=headers, json={
            "assignee_id": str(self.pharmacy.users[Role.COMPLIANCE].id)}), 200)
        _ok(self.client.post(f"/api/v1/flags/{flag_id}/resolve", headers=headers, json={
            "resolution": "justified", "note": needle("flag_resolution_note")}), 200)

    def second_factor(self) -> None:
        """Begin the pharmacist's TOTP enrolment: its secret is sealed too, though not PHI."""
        pharmacist = self.pharmacy.users[Role.PHARMACIST]
        # Signed in first: replacing the World's factor takes a current code of it.
        headers = self.as_(Role.PHARMACIST)
        _ok(self.client.post("/api/v1/me/factors/totp", headers=headers,
                             json={"code": self.world.code(pharmacist)}))

    def reads(self, app: Flask) -> dict[str, object]:
        """Return what `app`'s API answers for everything the seeded records feed."""
        client = app.test_client()
        # Signed in through `app` itself: its keys, not the seeding app's, open the factors'
        # sealed secrets.
        reader = World(app)
        reader.authenticators = self.world.authenticators
        users, org = self.pharmacy.users, self.pharmacy.org
        headers = reader.headers(org, users[Role.ADMIN])
        reviewer = reader.headers(org, users[Role.COMPLIANCE])
        pages = {f"session {name}": f"/api/v1/visits/{visit}/session"
                 for name, visit in self.visits.items()}
        pages.update({"evv": f"/api/v1/visits/{self.visits['v1']}/evv",
                      "visits": "/api/v1/visits", "entries": "/api/v1/custody/entries",
                      "losses": "/api/v1/custody/losses", "patients": "/api/v1/patients"})
        reads = {name: client.get(url, headers=headers).json for name, url in pages.items()}
        # Listed in no particular order: rewriting rows (rotation, a migration) may reorder them.
        reads["patients"] = sorted(reads["patients"], key=lambda patient: patient["id"])
        flags = client.get("/api/v1/flags", headers=reviewer,
                           query_string={"status": ["open", "in_review", "resolved"]}).json
        reads["flags"] = [client.get(f"/api/v1/flags/{flag['id']}", headers=reviewer).json
                          for flag in flags]
        assert all(not isinstance(read, dict) or "error" not in read for read in reads.values())
        return reads


def seed(app: Flask, clock: FixedClock) -> Seeder:
    """Seed an organisation with a needle in every field, each request committed."""
    seeder = Seeder(app, clock)
    seeder.patients()
    visits = seeder.plans_and_visits()
    seeder.custody()
    seeder.rest_session(visits["v1"])
    seeder.rest_whole_session(visits["v4"])
    seeder.sync_session(visits["v2"])
    seeder.review()
    seeder.second_factor()
    seeder.visits = visits
    seeder.world.session.close()
    return seeder
