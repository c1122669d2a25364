"""WatermelonDB-compatible sync: pull, push, conflicts, retries, quarantine, entitlement."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from backend.accounts.models import Role
from backend.administration.models import DoseRecord, Observation, QuarantinedEvent
from backend.custody.models import CustodyEntry
from backend.custody.verify import verify
from backend.devices.models import Device
from backend.flags.models import Flag
from backend.patients.models import PatientNurse
from backend.sync import checks, docs, tombstones
from backend.sync import pull as pull_service
from backend.sync.models import PendingCheck, SyncPush
from backend.visits.models import EvvEvent, Visit
from tests.factories import Pharmacy, World, signed_payload

DAY1 = "2026-11-03T15:00:00+00:00"
ROW_ID = "5b0f7c1e-1111-4c4c-9d9d-000000000001"


class Handset:
    """A nurse's phone speaking the sync protocol, signing rows as WatermelonDB holds them."""

    def __init__(self, pharmacy: Pharmacy, nurse=None, device=None) -> None:
        self.pharmacy = pharmacy
        self.nurse = nurse or pharmacy.nurse
        self.device_id, self.phone = device or (pharmacy.device_id, pharmacy.phone)
        self.headers = pharmacy.world.headers(pharmacy.org, self.nurse, self.device_id)
        self.cursor = 0

    def pull(self, cursor=None, **params):
        query = {"last_pulled_at": self.cursor if cursor is None else cursor,
                 "schema_version": 1, **params}
        return self.pharmacy.client.get("/api/v1/sync", query_string=query,
                                        headers=self.headers)

    def push(self, changes, key=None, cursor=None, headers=None, **params):
        extra = {"Idempotency-Key": key} if key else {}
        query = {"last_pulled_at": self.cursor if cursor is None else cursor, **params}
        return self.pharmacy.client.post("/api/v1/sync", query_string=query,
                                         headers={**self.headers, **extra, **(headers or {})},
                                         json={"changes": changes})

    def sync_pull(self):
        response = self.pull()
        assert response.status_code == 200, response.json
        self.cursor = response.json["timestamp"]
        return response.json["changes"]

    def row(self, columns: dict, **bookkeeping) -> dict:
        row = {"id": str(uuid.uuid4()), **columns}
        return {**row, "signature": self.phone.sign(row), "_status": "created",
                "_changed": "", **bookkeeping}


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    pharmacy.receive(1_000_000)
    pharmacy.dispense(500_000)
    return pharmacy


def test_first_pull_holds_the_nurses_schedule(pharmacy):
    visit = pharmacy.schedule(DAY1).json
    handset = Handset(pharmacy)
    changes = handset.sync_pull()
    assert [v["id"] for v in changes["visits"]["created"]] == [visit["id"]]
    assert changes["patients"]["created"][0]["name"] == "Pat Test"
    assert handset.cursor > 0


HOME = {"latitude": 41.8781, "longitude": -87.6298, "accuracy_m": 12}
PRE = {"systolic": 122, "diastolic": 78, "heart_rate": 70, "spo2": 98, "respiratory_rate": 14,
       "moaas": 5, "decision": "go", "cadss_items": None, "cadss_total": None,
       "co_medications": "[]", "decision_reason": None, "bp_justification": None}
VITALS = {"systolic": 126, "diastolic": 80, "heart_rate": 72, "spo2": 97,
          "respiratory_rate": 14, "moaas": 4, "cadss_items": None, "cadss_total": None,
          "bprs_items": None, "bprs_total": None}


def session_rows(handset: Handset, visit_id: str, product_id: str) -> dict:
    """Return a check-in and a whole session as the phone would push them."""
    at = "2026-11-03T15:0{}:00+00:00"
    return {
        "evv_events": {"created": [handset.row({
            "visit_id": visit_id, "kind": "check_in", **HOME, "occurred_at": at.format(0),
            "reason": None})], "updated": [], "deleted": []},
        "pre_doses": {"created": [handset.row({"visit_id": visit_id, **PRE,
                                               "occurred_at": at.format(1)})],
                      "updated": [], "deleted": []},
        "doses": {"created": [handset.row({
            "visit_id": visit_id, "occurred_at": at.format(2), "product_id": product_id,
            "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 35_000, "route": "IV",
            "infusion_started_at": "2026-11-03T15:10:00+00:00",
            "infusion_ended_at": "2026-11-03T15:50:00+00:00"})], "updated": [], "deleted": []},
        "observations": {"created": [
            handset.row({"visit_id": visit_id, **VITALS, "occurred_at": at.format(n)})
            for n in (3, 4, 5)], "updated": [], "deleted": []},
    }


def count(world: World, model, **where) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return world.session.scalar(query)


@pytest.fixture
def visit(pharmacy) -> dict:
    return pharmacy.schedule(DAY1).json


def test_incremental_pull_holds_only_what_changed(pharmacy, visit):
    handset = Handset(pharmacy)
    handset.sync_pull()
    assert all(not any(c.values()) for c in handset.sync_pull().values())
    cancelled = pharmacy.client.post(f"/api/v1/visits/{visit['id']}/cancel",
                                     headers=pharmacy.as_(Role.ADMIN),
                                     json={"reason": "patient unwell"})
    assert cancelled.status_code == 200, cancelled.json
    changes = handset.sync_pull()
    assert [v["status"] for v in changes["visits"]["updated"]] == ["cancelled"]
    assert sum(len(c["created"]) + len(c["updated"]) for c in changes.values()) == 1


def test_a_push_records_the_session_in_one_transaction(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    response = handset.push(session_rows(handset, visit["id"], pharmacy.product_id), key="k1")
    assert response.status_code == 200, response.json
    assert response.json["applied"] == {"evv_events": 1, "pre_doses": 1, "doses": 1,
                                        "observations": 3}
    assert response.json["quarantined"] == []
    stored = world.session.get(Visit, uuid.UUID(visit["id"]))
    world.session.refresh(stored)
    assert stored.status == "checked_in"
    dose = world.session.scalars(select(DoseRecord).where(
        DoseRecord.visit_id == stored.id)).one()
    assert dose.custody_entry_id is not None
    changes = handset.sync_pull()
    # What the phone pushed it holds; what the server made of it comes back.
    assert changes["observations"] == {"created": [], "updated": [], "deleted": []}
    assert [v["status"] for v in changes["visits"]["updated"]] == ["checked_in"]
    assert [e["id"] for e in changes["custody_entries"]["created"]] == [
        str(dose.custody_entry_id)]


def test_a_pushed_dose_binds_its_administer_entry_in_the_phones_signature(pharmacy, visit,
                                                                         world, app):
    handset = Handset(pharmacy)
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    assert handset.push(rows).status_code == 200
    [row] = rows["doses"]["created"]
    dose = world.session.get(DoseRecord, uuid.UUID(row["id"]))
    entry = world.session.get(CustodyEntry, dose.custody_entry_id)
    signed = {name: value for name, value in row.items()
              if name not in ("signature", "_status", "_changed")}
    assert (entry.device_id, entry.device_signature) == (handset.device_id, row["signature"])
    assert entry.signed_record == signed
    report = verify(world.session, pharmacy.org.id, world.rt.keys.verifying_keys(),
                    app.config["CHECKPOINT_DIR"])
    assert (report.ok, report.entries) == (True, 3), report.problem


def test_a_retried_push_is_answered_again_and_creates_nothing_twice(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    changes = session_rows(handset, visit["id"], pharmacy.product_id)
    first = handset.push(changes, key="same")
    again = handset.push(changes, key="same")
    assert again.status_code == first.status_code == 200
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    # Without the key, the identical records are recognised one by one.
    third = handset.push(changes, key="another")
    assert third.status_code == 200, third.json
    assert third.json["applied"] == {}
    assert third.json["unchanged"] == {"evv_events": 1, "pre_doses": 1, "doses": 1,
                                       "observations": 3}
    assert count(world, Observation, visit_id=uuid.UUID(visit["id"])) == 3
    assert count(world, EvvEvent, visit_id=uuid.UUID(visit["id"])) == 1
    pushes = list(world.session.scalars(select(SyncPush).where(
        SyncPush.user_id == pharmacy.nurse.id).order_by(SyncPush.started_at)))
    assert {p.idempotency_key for p in pushes} == {"same", "another"}
    assert all(p.device_id == pharmacy.device_id and len(p.body_sha256) == 64 for p in pushes)


def test_the_same_key_with_another_body_is_refused(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    handset.push(session_rows(handset, visit["id"], pharmacy.product_id), key="k")
    response = handset.push(session_rows(handset, visit["id"], pharmacy.product_id), key="k")
    assert response.status_code == 422
    assert response.json["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(("claimed_ago", "status"), [
    (timedelta(minutes=4, seconds=59), 409),
    # Past the lease, the claim is from a push whose process died: its retry takes it over.
    (timedelta(minutes=5), 200)])
def test_a_key_still_running_answers_409(pharmacy, visit, world, claimed_ago, status):
    handset = Handset(pharmacy)
    handset.sync_pull()
    changes = session_rows(handset, visit["id"], pharmacy.product_id)
    body = json.dumps({"changes": changes}).encode()
    world.session.add(SyncPush(
        organisation_id=pharmacy.org.id, user_id=pharmacy.nurse.id, device_id=None,
        idempotency_key="busy", body_sha256=hashlib.sha256(body).hexdigest(),
        last_pulled_at=handset.cursor, schema_version=1, state="running",
        started_at=world.rt.clock.now() - claimed_ago))
    world.commit()
    response = pharmacy.client.post(
        "/api/v1/sync", query_string={"last_pulled_at": handset.cursor}, data=body,
        headers={**handset.headers, "Idempotency-Key": "busy",
                 "Content-Type": "application/json"})
    assert response.status_code == status, response.json
    if status == 409:
        assert response.json["error"]["code"] == "push_in_progress"
    assert count(world, Observation) == (0 if status == 409 else 3)
    assert count(world, SyncPush) == 1


def test_a_visit_changed_since_the_pull_refuses_the_whole_push(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    moved = pharmacy.client.post(f"/api/v1/visits/{visit['id']}/cancel",
                                 headers=pharmacy.as_(Role.ADMIN), json={"reason": "moved"})
    assert moved.status_code == 200
    changes = session_rows(handset, visit["id"], pharmacy.product_id)
    changes["visits"] = {"created": [], "deleted": [], "updated": [
        {"id": visit["id"], "status": "checked_in", "_status": "updated",
         "_changed": "status"}]}
    response = handset.push(changes, key="conflict")
    assert response.status_code == 409
    assert response.json["error"]["code"] == "sync_conflict"
    assert response.json["error"]["details"]["record_id"] == visit["id"]
    assert count(world, Observation) == count(world, EvvEvent) == 0
    assert count(world, QuarantinedEvent) == 0
    # After pulling, the same key may be used again: the conflict did not consume it.
    handset.sync_pull()
    retried = handset.push(changes, key="conflict")
    assert retried.status_code == 200, retried.json
    assert retried.json["kept_server_values"] == [
        {"table": "visits", "record_id": visit["id"], "fields": ["status"]}]


def test_untrusted_rows_are_quarantined_flagged_and_the_rest_applies(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    changes = session_rows(handset, visit["id"], pharmacy.product_id)
    forged = changes["observations"]["created"][0]
    forged["systolic"] = 200
    handset.push({"observations": {"created": [changes["observations"]["created"][1]],
                                   "updated": [], "deleted": []}})
    twin = dict(changes["observations"]["created"][1], heart_rate=150)
    twin["signature"] = handset.phone.sign({k: v for k, v in twin.items()
                                            if k not in ("signature", "_status", "_changed")})
    invalid = handset.row({"visit_id": visit["id"], **VITALS, "spo2": 20,
                           "occurred_at": DAY1})
    response = handset.push({**changes, "observations": {
        "created": [forged, twin, invalid, changes["observations"]["created"][2]],
        "updated": [], "deleted": []}})
    assert response.status_code == 200, response.json
    reasons = {q["record_id"]: q["reason"] for q in response.json["quarantined"]}
    assert reasons[forged["id"]].startswith("signature_invalid")
    assert reasons[twin["id"]].startswith("conflicting_duplicate")
    assert reasons[invalid["id"]].startswith("invalid") and "spo2" in reasons[invalid["id"]]
    assert count(world, Observation, visit_id=uuid.UUID(visit["id"])) == 2
    held = {q.record_id: q for q in world.session.scalars(select(QuarantinedEvent))}
    assert held[forged["id"]].payload["systolic"] == 200
    flags = pharmacy.client.get("/api/v1/flags", headers=pharmacy.as_(Role.COMPLIANCE),
                                query_string={"rule": "sync.quarantined_event"})
    assert flags.status_code == 200, flags.json
    flagged = {f["evidence"]["record_id"]: f["evidence"]["reason"] for f in flags.json}
    assert flagged == reasons, "each quarantined row raises a flag with its reason"
    assert all(f["evidence"]["record_type"] == "observations" for f in flags.json)
    nurse_view = pharmacy.client.get("/api/v1/flags", headers=handset.headers)
    assert nurse_view.status_code == 403


@pytest.mark.parametrize(("changes", "where"), [
    ({"nonsense": {"created": [], "updated": [], "deleted": []}}, {"table": "nonsense"}),
    ({"observations": {"created": [{"id": "not-a-uuid"}]}},
     {"table": "observations", "field": "id"}),
    ({"observations": {"created": [{"id": ROW_ID, "colour": "red"}]}},
     {"table": "observations", "record_id": ROW_ID, "field": "colour"}),
    ({"observations": {"created": [{"id": ROW_ID, "systolic": "high"}]}},
     {"table": "observations", "record_id": ROW_ID, "field": "systolic"}),
    ({"observations": {"created": [], "updated": [{"id": ROW_ID}]}},
     {"table": "observations", "record_id": ROW_ID, "field": "updated"}),
    ({"doses": {"created": [], "updated": [], "deleted": [ROW_ID]}},
     {"table": "doses", "record_id": ROW_ID, "field": "deleted"}),
    ({"observations": []}, {"table": "observations"}),
])
def test_a_malformed_push_is_refused_whole_naming_table_record_and_field(
        pharmacy, visit, world, changes, where):
    handset = Handset(pharmacy)
    handset.sync_pull()
    good = session_rows(handset, visit["id"], pharmacy.product_id)
    response = handset.push({**good, **changes})
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "malformed_push"
    assert where.items() <= response.json["error"]["details"].items()
    assert count(world, Observation) == count(world, EvvEvent) == 0
    [logged] = world.session.scalars(select(SyncPush)).all()
    assert (logged.response_status, logged.summary) == (400, {"refused": "malformed_push"})


def test_a_body_that_is_not_json_is_400(pharmacy):
    handset = Handset(pharmacy)
    response = pharmacy.client.post("/api/v1/sync", data=b"{nope",
                                    headers={**handset.headers,
                                             "Content-Type": "application/json"})
    assert response.status_code == 400


def test_too_many_records_is_413(pharmacy, visit, app):
    handset = Handset(pharmacy)
    handset.sync_pull()
    app.config["SYNC_MAX_PUSH_RECORDS"] = 5
    response = handset.push(session_rows(handset, visit["id"], pharmacy.product_id))
    assert response.status_code == 413
    assert response.json["error"]["details"] == {"records": 6, "limit": 5}


def test_reference_tables_are_read_only(pharmacy, visit):
    handset = Handset(pharmacy)
    response = handset.push({"patients": {"created": [], "deleted": [], "updated": [
        {"id": pharmacy.patient_id, "name": "Someone Else"}]}})
    assert response.status_code == 403
    assert response.json["error"]["details"] == {"table": "patients"}


def test_a_phone_may_not_create_or_delete_visits(pharmacy, visit):
    handset = Handset(pharmacy)
    handset.sync_pull()
    made = handset.push({"visits": {"created": [{"id": ROW_ID, "status": "scheduled"}],
                                    "updated": [], "deleted": []}})
    assert made.status_code == 403
    gone = handset.push({"visits": {"created": [], "updated": [], "deleted": [visit["id"]]}})
    assert gone.status_code == 403
    absent = handset.push({"visits": {"created": [], "updated": [], "deleted": [ROW_ID]}})
    assert absent.status_code == 200


def test_a_reassigned_patient_is_deleted_from_the_old_nurses_phone(pharmacy, visit, world):
    other = world.user(pharmacy.org, Role.NURSE)
    handset, theirs = Handset(pharmacy), Handset(pharmacy, nurse=other, device=(None, None))
    handset.sync_pull()
    assert theirs.sync_pull()["patients"]["created"] == []
    admin = pharmacy.as_(Role.ADMIN)
    added = pharmacy.client.post(f"/api/v1/patients/{pharmacy.patient_id}/nurses",
                                 headers=admin, json={"nurse_id": str(other.id)})
    assert added.status_code in (200, 201), added.json
    ended = pharmacy.client.delete(
        f"/api/v1/patients/{pharmacy.patient_id}/nurses/{pharmacy.nurse.id}", headers=admin)
    assert ended.status_code == 204, ended.json
    lost = handset.sync_pull()
    assert lost["patients"]["deleted"] == [pharmacy.patient_id]
    assert visit["id"] in lost["visits"]["deleted"]
    assert len(lost["plan_versions"]["deleted"]) == 1
    gained = theirs.sync_pull()
    assert [p["id"] for p in gained["patients"]["updated"] + gained["patients"]["created"]] \
        == [pharmacy.patient_id]
    assert [v["id"] for v in gained["visits"]["updated"] + gained["visits"]["created"]] \
        == [visit["id"]]


def test_a_first_pull_can_be_paged(pharmacy, world):
    for day in range(3):
        assert pharmacy.schedule(f"2026-11-{3 + 7 * day:02d}T15:00:00+00:00").status_code == 201
    handset = Handset(pharmacy)
    whole = handset.pull(cursor=0).json
    seen, cursor, pages = [], 0, 0
    while True:
        page = handset.pull(cursor=cursor, limit=2).json
        pages += 1
        seen += [r["id"] for c in page["changes"].values() for r in c["created"] + c["updated"]]
        cursor = page["timestamp"]
        if not page["has_more"]:
            break
    assert sorted(seen) == sorted(r["id"] for c in whole["changes"].values()
                                  for r in c["created"] + c["updated"])
    assert pages > 2 and cursor == whole["timestamp"]


def test_an_old_cursor_past_the_pruned_tombstones_must_reset(pharmacy, visit, world, clock):
    other = world.user(pharmacy.org, Role.NURSE)
    handset = Handset(pharmacy)
    handset.sync_pull()
    old = handset.cursor
    admin = pharmacy.as_(Role.ADMIN)
    # A one-day window keeps the test's clock near real time, which token checks also read.
    window = pharmacy.client.patch("/api/v1/safeguards/policy", headers=admin,
                                   json={"thresholds": {"sync_offline_window_days": "1"}})
    assert window.status_code == 200, window.json
    pharmacy.client.post(f"/api/v1/patients/{pharmacy.patient_id}/nurses", headers=admin,
                         json={"nurse_id": str(other.id)})
    pharmacy.client.delete(f"/api/v1/patients/{pharmacy.patient_id}/nurses/"
                           f"{pharmacy.nurse.id}", headers=admin)
    clock.advance(hours=23)
    assert tombstones.prune(world.session, world.rt) == {"pruned": {}}
    clock.advance(hours=2)
    pruned = tombstones.prune(world.session, world.rt)["pruned"][str(pharmacy.org.id)]
    world.commit()
    assert pruned["revocations"] == 1
    handset.headers = world.headers(pharmacy.org, pharmacy.nurse, pharmacy.device_id)
    response = handset.pull(cursor=old)
    assert response.status_code == 410, response.json
    assert response.json["error"]["code"] == "sync_reset_required"
    assert handset.pull(cursor=0).status_code == 200
    assert handset.pull(cursor=pruned["horizon"]).status_code == 200


def test_schema_versions(pharmacy, visit, monkeypatch):
    handset = Handset(pharmacy)
    handset.sync_pull()
    assert handset.pull(schema_version=pull_service.SCHEMA_VERSION + 1).status_code == 422
    monkeypatch.setattr(pull_service, "MUTABLE_SINCE", 2)
    old = handset.pull()
    assert old.status_code == 426 and old.json["error"]["code"] == "schema_too_old"
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    with_visit = {**rows, "visits": {"created": [], "deleted": [], "updated": [
        {"id": visit["id"], "status": "checked_in"}]}}
    assert handset.push(with_visit, schema_version=1).status_code == 426
    clinical_only = handset.push(rows, schema_version=1)
    assert clinical_only.status_code == 200, clinical_only.json


@pytest.mark.parametrize(("ahead", "flagged"), [(60, False), (300, False), (301, True),
                                                (-900, True)])
def test_a_phone_clock_off_past_policy_is_flagged(pharmacy, world, clock, ahead, flagged):
    handset = Handset(pharmacy)
    device_time = (clock.now() + timedelta(seconds=ahead)).isoformat()
    response = pharmacy.client.get("/api/v1/sync", query_string={"schema_version": 1},
                                   headers={**handset.headers, "X-Device-Time": device_time})
    assert response.status_code == 200
    device = world.session.get(Device, pharmacy.device_id)
    world.session.refresh(device)
    assert device.clock_offset_ms == ahead * 1000
    found = world.session.scalars(select(Flag).where(Flag.rule_id == "device.clock_drift")).all()
    assert bool(found) is flagged


def test_only_nurses_sync(pharmacy):
    response = pharmacy.client.get("/api/v1/sync", query_string={"schema_version": 1},
                                   headers=pharmacy.as_(Role.PHARMACIST))
    assert response.status_code == 403


@pytest.fixture
def ward(pharmacy, world):
    """Three nurses with phones, and their phones' local copies of the patients table."""
    nurses = [pharmacy.nurse] + [world.user(pharmacy.org, Role.NURSE) for _ in range(2)]
    handsets = [Handset(pharmacy)] + [Handset(pharmacy, nurse=n, device=(None, None))
                                      for n in nurses[1:]]
    return nurses, handsets, [dict() for _ in nurses], [pharmacy.patient_id]


def _assigned(world: World, nurse) -> set[str]:
    return {str(p) for p in world.session.scalars(select(PatientNurse.patient_id).where(
        PatientNurse.nurse_id == nurse.id, PatientNurse.ended_at.is_(None)))}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 4), st.sets(st.integers(0, 2), max_size=3)),
                      min_size=1, max_size=5))
def test_a_nurse_never_pulls_another_nurses_patients(pharmacy, world, ward, steps):
    nurses, handsets, phones, patients = ward
    admin = pharmacy.as_(Role.ADMIN)
    for which, chosen in steps:
        wanted = {str(nurses[i].id) for i in chosen}
        if which >= len(patients):
            if wanted:
                patients.append(pharmacy.patient([nurses[i] for i in sorted(chosen)]))
            continue
        patient_id = patients[which]
        current = {str(p) for p in world.session.scalars(select(PatientNurse.nurse_id).where(
            PatientNurse.patient_id == uuid.UUID(patient_id), PatientNurse.ended_at.is_(None)))}
        for nurse_id in sorted(wanted - current):
            added = pharmacy.client.post(f"/api/v1/patients/{patient_id}/nurses",
                                         headers=admin, json={"nurse_id": nurse_id})
            assert added.status_code in (200, 201), added.json
        for nurse_id in sorted(current - wanted):
            ended = pharmacy.client.delete(f"/api/v1/patients/{patient_id}/nurses/{nurse_id}",
                                           headers=admin)
            assert ended.status_code == 204, ended.json
        world.session.expire_all()
    for nurse, handset, phone in zip(nurses, handsets, phones, strict=True):
        changes = handset.sync_pull()
        for record in changes["patients"]["created"] + changes["patients"]["updated"]:
            phone[record["id"]] = record
        for gone in changes["patients"]["deleted"]:
            phone.pop(gone, None)
        everything = handset.pull(cursor=0).json["changes"]["patients"]
        mine = _assigned(world, nurse)
        assert set(phone) == mine
        assert {r["id"] for r in everything["created"] + everything["updated"]} == mine


def test_the_phone_schema_document_matches_the_server():
    assert docs.PATH.read_text() == docs.render(), "run `vigil sync-docs`"


def test_a_nurse_pulls_her_own_bag_and_not_the_vault(pharmacy, world):
    other = world.user(pharmacy.org, Role.NURSE)
    pharmacy.post(Role.PHARMACIST, {"kind": "dispense", "lot": "L1", "quantity_ug": 1_000,
                                    "nurse_id": str(other.id), "details": {"seal_id": "S-2"}})
    entries = Handset(pharmacy).sync_pull()["custody_entries"]["created"]
    assert [(e["kind"], e["to_holder"]) for e in entries] == [
        ("dispense", f"bag:{pharmacy.nurse.id}")]


def test_check_out_listed_before_check_in_still_applies_in_order(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    check_out = handset.row({"visit_id": visit["id"], "kind": "check_out", **HOME,
                             "occurred_at": "2026-11-03T17:10:00+00:00", "reason": None})
    rows["evv_events"]["created"].insert(0, check_out)
    response = handset.push(rows)
    assert response.status_code == 200, response.json
    assert response.json["quarantined"] == []
    stored = world.session.get(Visit, uuid.UUID(visit["id"]))
    world.session.refresh(stored)
    assert stored.status == "completed"


def test_the_next_pull_corrects_what_the_server_did_not_take(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    forged = handset.row({"visit_id": visit["id"], **VITALS, "occurred_at": DAY1})
    forged["systolic"] = 180
    response = handset.push({
        "observations": {"created": [forged], "updated": [], "deleted": []},
        "visits": {"created": [], "deleted": [], "updated": [
            {"id": visit["id"], "status": "completed", "_status": "updated",
             "_changed": "status"}]}})
    assert response.status_code == 200, response.json
    assert [q["record_id"] for q in response.json["quarantined"]] == [forged["id"]]
    changes = handset.sync_pull()
    # The phone drops the record the server holds only in quarantine, and learns the status.
    assert changes["observations"]["deleted"] == [forged["id"]]
    assert [(v["id"], v["status"]) for v in changes["visits"]["updated"]] == [
        (visit["id"], "scheduled")]
    other = world.user(pharmacy.org, Role.NURSE)
    assert Handset(pharmacy, nurse=other, device=(None, None)).sync_pull()[
        "observations"]["deleted"] == []


def test_a_push_takes_the_counter_once_at_commit(pharmacy, visit, world, connection):
    handset = Handset(pharmacy)
    handset.sync_pull()
    statements = []
    engine = connection.engine

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        response = handset.push(session_rows(handset, visit["id"], pharmacy.product_id))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.json
    # Per-record savepoints are released along the way; numbering waits for the real commit.
    # The counter is taken by one upsert, which locks its row as an UPDATE would (on
    # PostgreSQL, in the statement that upserts the numbered rows).
    taken = [i for i, s in enumerate(statements) if "INSERT INTO sync_counter" in s]
    assert len(taken) == 1
    assert taken[0] > max(i for i, s in enumerate(statements)
                          if s.startswith("INSERT INTO monitoring"))


def test_synced_sessions_are_judged_by_the_sync_checks_job(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    rows["observations"]["created"].append(handset.row({
        "visit_id": visit["id"], **VITALS, "systolic": 195, "diastolic": 115,
        "occurred_at": "2026-11-03T15:30:00+00:00"}))
    response = handset.push(rows)
    assert response.status_code == 200, response.json
    assert response.json["sessions_queued"] == 1

    def alarms() -> list[Flag]:
        return list(world.session.scalars(select(Flag).where(
            Flag.rule_id == "monitoring.alarming_vitals")))

    assert alarms() == []
    assert checks.judge_pending(world.session, world.rt) == {"judged": 1}
    world.commit()
    assert [flag.subject_id for flag in alarms()] == [visit["id"]]
    assert count(world, PendingCheck) == 0
    assert checks.judge_pending(world.session, world.rt) == {"judged": 0}


# A witness's phone may time its confirmation, under its signature; pulled back as pushed.
@pytest.mark.parametrize("attested", [{}, {"attested_at": "2026-11-03T16:02:00.000000+00:00"}])
def test_a_witnessed_waste_pushed_from_the_phone_enters_the_ledger(pharmacy, visit, world,
                                                                   attested):
    handset = Handset(pharmacy)
    handset.sync_pull()
    witness = world.user(pharmacy.org, Role.NURSE)
    witness_device, witness_phone = world.device(pharmacy.org, witness)

    def waste(quantity_ug: int, signer=None) -> dict:
        body = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": pharmacy.product_id,
                "lot": "L1", "expiry": "2028-01-31", "quantity_ug": quantity_ug,
                "occurred_at": "2026-11-03T16:00:00+00:00", "visit_id": visit["id"]}
        movement = signed_payload(pharmacy, body)
        confirmation = {"user_id": str(witness.id), "device_id": str(witness_device),
                        "signature": witness_phone.sign({**movement, **attested}), **attested}
        return {**body, "from_holder": None, "to_holder": None, "corrects_id": None,
                "details": "{}", "witnesses": json.dumps([confirmation]),
                "signature": (signer or handset.phone).sign(movement), "_status": "created"}

    honest, forged = waste(15_000), waste(15_000, signer=witness_phone)
    response = handset.push({"custody_entries": {"created": [honest, forged], "updated": [],
                                                 "deleted": []}})
    assert response.status_code == 200, response.json
    assert response.json["applied"] == {"custody_entries": 1}
    assert [(q["record_id"], q["reason"].split(":")[0]) for q in response.json["quarantined"]] \
        == [(forged["id"], "signature_invalid")]
    entry = world.session.get(CustodyEntry, uuid.UUID(honest["id"]))
    assert (entry.kind, entry.from_holder, entry.to_holder, entry.quantity_ug) == (
        "waste", f"bag:{pharmacy.nurse.id}", "waste", 15_000)
    assert [(c["method"], c.get("attested_at")) for c in entry.confirmations] == [
        ("device_signature", attested.get("attested_at"))]
    again = handset.push({"custody_entries": {"created": [honest], "updated": [],
                                              "deleted": []}})
    assert again.json["unchanged"] == {"custody_entries": 1}
    # The server set the holders, so the phone gets its entry back, updated, signatures kept.
    pulled = handset.sync_pull()["custody_entries"]
    assert [row["id"] for row in pulled["created"]] == []
    [back] = pulled["updated"]
    assert (back["id"], back["from_holder"], back["to_holder"]) == (
        honest["id"], f"bag:{pharmacy.nurse.id}", "waste")
    assert json.loads(back["witnesses"]) == json.loads(honest["witnesses"])
    assert back["signature"] == honest["signature"]


def test_a_cursor_the_server_never_handed_out_is_refused(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    ahead = handset.cursor + 1
    pulled = handset.pull(cursor=ahead)
    pushed = handset.push(session_rows(handset, visit["id"], pharmacy.product_id), cursor=ahead)
    for response in (pulled, pushed):
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"]["fields"] == {
            "last_pulled_at": [f"ahead of the server's sequence ({handset.cursor})"]}
    assert count(world, Observation) == 0


def pulled_ids(changes: dict, action: str) -> set[str]:
    return {record["id"] for actions in changes.values() for record in actions[action]}


def test_a_phone_does_not_pull_back_what_it_pushed(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    spare = Handset(pharmacy, device=world.device(pharmacy.org, pharmacy.nurse))
    spare.cursor = handset.cursor
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    assert handset.push(rows).status_code == 200
    mine = pulled_ids(rows, "created")
    back = handset.sync_pull()
    assert mine.isdisjoint(pulled_ids(back, "created") | pulled_ids(back, "updated"))
    # The same nurse's other phone holds none of it.
    theirs = spare.sync_pull()
    assert mine <= pulled_ids(theirs, "created")
    assert mine.isdisjoint(pulled_ids(theirs, "updated"))


def test_a_phone_pulling_from_zero_again_gets_back_what_it_pushed(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    assert handset.push(rows).status_code == 200
    # Reset, then a first sync in pages: what it pushed comes back in later pages as created.
    created, updated, cursor = set(), set(), 0
    while True:
        page = handset.pull(cursor=cursor, limit=2).json
        created |= pulled_ids(page["changes"], "created")
        updated |= pulled_ids(page["changes"], "updated")
        cursor = page["timestamp"]
        if not page["has_more"]:
            break
    assert pulled_ids(rows, "created") <= created
    assert updated == set()


def test_a_pushed_record_renumbered_on_the_server_comes_back_as_updated(pharmacy, visit, world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    other = Handset(pharmacy, nurse=world.user(pharmacy.org, Role.NURSE), device=(None, None))
    other.sync_pull()
    rows = session_rows(handset, visit["id"], pharmacy.product_id)
    assert handset.push(rows).status_code == 200
    added = pharmacy.client.post(f"/api/v1/patients/{pharmacy.patient_id}/nurses",
                                 headers=pharmacy.as_(Role.ADMIN),
                                 json={"nurse_id": str(other.nurse.id)})
    assert added.status_code in (200, 201), added.json
    mine, back = pulled_ids(rows, "created"), handset.sync_pull()
    assert mine <= pulled_ids(back, "updated")
    assert mine.isdisjoint(pulled_ids(back, "created"))
    assert mine <= pulled_ids(other.sync_pull(), "created")


def custody_row(pharmacy: Pharmacy, handset: Handset, body: dict, **columns) -> dict:
    """Return a custody entry as the phone pushes it, signed over its ledger movement."""
    body = {"id": str(uuid.uuid4()), "product_id": pharmacy.product_id, "lot": "L1",
            "expiry": "2028-01-31", "occurred_at": "2026-11-03T16:00:00.000Z", **body}
    row = {"from_holder": None, "to_holder": None, "corrects_id": None, "witnesses": None,
           **body, "details": json.dumps(body.get("details", {})), **columns}
    return {**row, "signature": handset.phone.sign(signed_payload(pharmacy, body)),
            "_status": "created", "_changed": ""}


def test_a_custody_entry_held_as_the_server_stores_it_is_not_sent_back(pharmacy, visit,
                                                                         world):
    handset = Handset(pharmacy)
    handset.sync_pull()
    witness = world.user(pharmacy.org, Role.NURSE)
    witness_device, witness_phone = world.device(pharmacy.org, witness)

    def waste(**columns) -> dict:
        body = {"id": str(uuid.uuid4()), "kind": "waste", "quantity_ug": 5_000,
                "visit_id": visit["id"], "occurred_at": "2026-11-03T16:00:00.000Z"}
        movement = signed_payload(pharmacy, {"product_id": pharmacy.product_id, "lot": "L1",
                                             "expiry": "2028-01-31", **body})
        confirmation = {"user_id": str(witness.id), "device_id": str(witness_device),
                        "signature": witness_phone.sign(movement)}
        return custody_row(pharmacy, handset, body,
                           witnesses=json.dumps([confirmation]), **columns)

    # Holders as the server sets them, the time in the phone's own notation.
    whole = waste(from_holder=f"bag:{pharmacy.nurse.id}", to_holder="waste")
    bare = waste()
    response = handset.push({"custody_entries": {"created": [whole, bare], "updated": [],
                                                 "deleted": []}})
    assert response.status_code == 200, response.json
    assert response.json["applied"] == {"custody_entries": 2}
    pulled = handset.sync_pull()["custody_entries"]
    assert pulled["created"] == []
    assert [(row["id"], row["from_holder"], row["to_holder"]) for row in pulled["updated"]] == [
        (bare["id"], f"bag:{pharmacy.nurse.id}", "waste")]
    # Pushed again as pulled, the entry is recognised, not quarantined.
    again = handset.push({"custody_entries": {"created": [
        {**pulled["updated"][0], "_status": "created", "_changed": ""}], "updated": [],
        "deleted": []}})
    assert (again.json["unchanged"], again.json["quarantined"]) == ({"custody_entries": 1}, [])


def _api_entry(pharmacy: Pharmacy, visit_id: str) -> dict:
    return {"id": str(uuid.uuid4()), "kind": "waste", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 15_000,
            "occurred_at": "2026-11-03T16:00:00+00:00", "visit_id": visit_id, "details": {},
            "witnesses": [], "signature": "c2lnbmVk"}


def _pushed_entry(body: dict) -> dict:
    """Return the API's body as the phone's row: JSON columns as text, the receiver as a bag."""
    receiver = body.get("nurse_id")
    row = {key: value for key, value in body.items() if key != "nurse_id"}
    return {**row, "details": json.dumps(body["details"]),
            "witnesses": json.dumps(body["witnesses"]), "from_holder": None,
            "to_holder": f"bag:{receiver}" if receiver else None, "corrects_id": None,
            "_status": "created", "_changed": ""}


@pytest.mark.parametrize("wrong", [
    {"quantity_ug": 0}, {"quantity_ug": 1.5}, {"lot": ""}, {"lot": "L" * 41},
    {"expiry": "2028-02-30"}, {"occurred_at": "2026-11-03T16:00:00"}, {"kind": "steal"},
    {"product_id": "a product"}, {"details": ["seal"]}, {"witnesses": [{"user_id": "her"}]},
    {"witnesses": [{"user_id": ROW_ID, "method": "password"}]},
    {"kind": "transfer", "nurse_id": "the other nurse"}, {"signature": "s" * 101},
])
def test_a_pushed_custody_entry_is_refused_with_the_apis_field_errors(pharmacy, visit, world,
                                                                     wrong):
    body = {**_api_entry(pharmacy, visit["id"]), **wrong}
    api = pharmacy.client.post("/api/v1/custody/entries", json=body,
                               headers=pharmacy.as_(Role.NURSE, pharmacy.device_id))
    assert api.status_code == 422, api.json
    handset = Handset(pharmacy)
    handset.sync_pull()
    response = handset.push({"custody_entries": {"created": [_pushed_entry(body)]}})
    assert response.status_code == 200, response.json
    [held] = response.json["quarantined"]
    code, _, fields = held["reason"].partition(": ")
    assert (code, json.loads(fields)) == ("invalid", api.json["error"]["details"]["fields"])
    assert count(world, CustodyEntry, id=uuid.UUID(body["id"])) == 0
