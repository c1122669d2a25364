"""The compliance review of flags: the queue, assignment, notes, verdicts, re-raises, history."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Uuid,
    column,
    delete,
    insert,
    select,
    table,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from backend import schema
from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.flags.models import Flag, FlagEvent
from backend.flags.service import raise_flag
from safeguards.findings import Severity, Subject, SubjectKind
from safeguards.registry import RuleMeta
from safeguards.rules.custody import COUNT_DISCREPANCY
from safeguards.rules.monitoring import INFUSION_SHORT
from tests.factories import Clinic, World

C, A = Role.COMPLIANCE, Role.ADMIN


class Review:
    """A clinic whose compliance officer reviews the flags the test raises."""

    def __init__(self, world: World) -> None:
        self.world, self.client = world, world.client
        self.clinic = Clinic(world)
        self.org, self.users = self.clinic.org, self.clinic.users
        self.officer = self.users[C]
        self._headers: dict[Role, dict] = {}

    def headers(self, role: Role = C) -> dict:
        """Return the headers of one login of the clinic's user with `role`."""
        if role not in self._headers:
            self._headers[role] = self.clinic.as_(role)
        return self._headers[role]

    def later(self, **delta: float) -> None:
        """Move the clock on; logins older than an access token's life are made again."""
        self.world.rt.clock.advance(**delta)
        self._headers.clear()

    def raise_(self, name: str, *, rule: RuleMeta = INFUSION_SHORT,
               severity: Severity | None = None, subject: Subject | None = None,
               evidence: dict | None = None, shadow: bool = False) -> str:
        """Raise a flag keyed by `name`; return its id."""
        finding = rule.finding(subject or Subject(SubjectKind.ORGANISATION, str(self.org.id)),
                               f"Flag {name}.", evidence or {"name": name}, key=(name,),
                               severity=severity)
        flag = raise_flag(self.world.session, self.world.rt.clock.now(), self.org.id,
                          replace(finding, shadow=shadow))
        self.world.commit()
        return str(flag.id)

    def queue(self, role: Role = C, **query) -> list[str]:
        """Return the ids in the queue the query selects, in order."""
        response = self.client.get("/api/v1/flags", headers=self.headers(role),
                                   query_string=query)
        assert response.status_code == 200, response.json
        return [flag["id"] for flag in response.json]

    def flag(self, flag_id: str, role: Role = C) -> dict:
        """Return a flag with its history."""
        response = self.client.get(f"/api/v1/flags/{flag_id}", headers=self.headers(role))
        assert response.status_code == 200, response.json
        return response.json

    def post(self, flag_id: str, step: str, body: dict, role: Role = C):
        """Take a review step on a flag."""
        return self.client.post(f"/api/v1/flags/{flag_id}/{step}", headers=self.headers(role),
                                json=body)

    def assign(self, flag_id: str, to: Role = C) -> dict:
        """Assign a flag to the clinic's user with role `to`."""
        response = self.post(flag_id, "assign", {"assignee_id": str(self.users[to].id)})
        assert response.status_code == 200, response.json
        return response.json

    def resolve(self, flag_id: str, resolution: str, note: str = "Checked the ledger.") -> dict:
        """Resolve a flag in review."""
        response = self.post(flag_id, "resolve", {"resolution": resolution, "note": note})
        assert response.status_code == 200, response.json
        return response.json


@pytest.fixture
def review(world: World) -> Review:
    return Review(world)


def test_the_queue_puts_the_most_severe_first_then_the_oldest(review: Review):
    names = {}
    for name, severity in [("low", Severity.LOW), ("old high", Severity.HIGH),
                           ("medium", Severity.MEDIUM), ("critical", Severity.CRITICAL),
                           ("new high", Severity.HIGH), ("info", Severity.INFO)]:
        names[review.raise_(name, severity=severity)] = name
        review.later(minutes=5)
    # Raised again later, the old high flag keeps its place: age is when it was first seen.
    review.raise_("old high", severity=Severity.HIGH)
    assert [names[i] for i in review.queue()] == [
        "critical", "old high", "new high", "medium", "low", "info"]
    assert [names[i] for i in review.queue(limit=2, offset=1)] == ["old high", "new high"]


@pytest.fixture
def sorted_out(review: Review) -> tuple[Review, dict[str, str]]:
    """Flags that differ in one way each from a plain medium one."""
    clinic, nurse = review.clinic, review.clinic.nurse
    other_nurse = review.world.user(review.org, Role.NURSE)
    other_patient = clinic.patient([other_nurse])
    ids = {
        "plain": review.raise_("plain", severity=Severity.MEDIUM),
        "critical": review.raise_("critical", severity=Severity.CRITICAL),
        "count": review.raise_("count", rule=COUNT_DISCREPANCY),
        "nurse": review.raise_("nurse", subject=Subject(SubjectKind.NURSE, str(nurse.id))),
        "other nurse": review.raise_("other nurse", evidence={
            "nurse_id": str(other_nurse.id), "patient_id": other_patient}),
        "patient": review.raise_("patient", evidence={"patient_id": clinic.patient_id}),
        "shadow": review.raise_("shadow", shadow=True),
        "assigned": review.raise_("assigned"),
        "resolved": review.raise_("resolved"),
    }
    review.assign(ids["assigned"], to=A)
    review.assign(ids["resolved"])
    review.resolve(ids["resolved"], "false_positive")
    return review, {**ids, "_nurse": str(other_nurse.id), "_patient": other_patient}


@pytest.mark.parametrize(("query", "expected"), [
    ({}, {"plain", "critical", "count", "nurse", "other nurse", "patient", "assigned",
          "resolved"}),
    ({"status": "open"}, {"plain", "critical", "count", "nurse", "other nurse", "patient"}),
    ({"status": ["in_review", "resolved"]}, {"assigned", "resolved"}),
    ({"severity": "critical"}, {"critical"}),
    ({"severity": ["critical", "high"]}, {"critical", "count"}),
    ({"rule": "custody.count_discrepancy"}, {"count"}),
    ({"nurse": "_nurse"}, {"other nurse"}),
    ({"patient": "_patient"}, {"other nurse"}),
    ({"assignee": "admin"}, {"assigned"}),
    ({"shadow": "true"}, {"shadow"}),
    ({"shadow": "true", "status": "resolved"}, set()),
])
def test_every_filter_narrows_the_queue(sorted_out, query, expected):
    review, ids = sorted_out
    names = {flag_id: name for name, flag_id in ids.items()}
    placeholders = {"_nurse": ids["_nurse"], "_patient": ids["_patient"],
                    "admin": str(review.users[A].id)}
    query = {key: placeholders.get(value, value) if isinstance(value, str) else value
             for key, value in query.items()}
    assert {names[flag_id] for flag_id in review.queue(**query)} == expected


def test_the_nurse_filter_finds_a_flag_by_its_subject_or_its_visit(review: Review):
    clinic = review.clinic
    clinic.plan()
    visit = clinic.schedule("2026-11-03T15:00:00+00:00").json
    by_subject = review.raise_("subject", subject=Subject(SubjectKind.NURSE,
                                                          str(clinic.nurse.id)))
    by_visit = review.raise_("visit", subject=Subject(SubjectKind.VISIT, visit["id"]))
    assert set(review.queue(nurse=str(clinic.nurse.id))) == {by_subject, by_visit}
    assert review.queue(patient=clinic.patient_id) == [by_visit]


def test_evidence_naming_nobody_of_the_organisation_still_raises_the_flag(review: Review):
    stranger = Clinic(review.world)
    flag_id = review.raise_("odd", evidence={"nurse_id": "not-a-uuid",
                                             "patient_id": stranger.patient_id})
    flag = review.flag(flag_id)
    assert (flag["nurse_id"], flag["patient_id"]) == (None, None)


def test_unknown_filter_values_are_refused(review: Review):
    for query in ({"status": "closed"}, {"severity": "urgent"}, {"nurse": "me"}, {"x": "1"}):
        response = review.client.get("/api/v1/flags", headers=review.headers(),
                                     query_string=query)
        assert response.status_code == 422, query


def test_a_flag_goes_through_review_and_keeps_its_history(review: Review, world: World):
    flag_id = review.raise_("ledger", severity=Severity.HIGH)
    raised = review.flag(flag_id)
    assert (raised["status"], raised["assignee_id"]) == ("open", None)
    assert raised["evidence"] == {"name": "ledger"}

    assigned = review.assign(flag_id)
    assert (assigned["status"], assigned["assignee_id"]) == ("in_review", str(review.officer.id))
    review.later(hours=1)
    noted = review.post(flag_id, "notes", {"note": "Asked the nurse for her count sheet."})
    assert noted.status_code == 200, noted.json
    resolved = review.resolve(flag_id, "confirmed_diversion", "Two vials missing.")

    assert resolved["status"] == "resolved"
    assert resolved["resolution"] == "confirmed_diversion"
    assert resolved["resolved_by_id"] == str(review.officer.id)
    assert resolved["resolved_at"] == "2026-11-02T15:00:00+00:00"
    officer = str(review.officer.id)
    steps = [(e["seq"], e["action"], e["actor_id"], e["from_status"], e["to_status"], e["note"])
             for e in review.flag(flag_id)["events"]]
    assert steps == [
        (1, "raised", None, None, "open", None),
        (2, "assigned", officer, None, None, None),
        (3, "status_changed", officer, "open", "in_review", None),
        (4, "note", officer, None, None, "Asked the nurse for her count sheet."),
        (5, "resolved", officer, "in_review", "resolved", "Two vials missing."),
    ]
    assert review.flag(flag_id)["events"][0]["detail"]["evidence"] == {"name": "ledger"}
    audited = world.session.scalars(select(AuditEvent.action).where(
        AuditEvent.object_type == "flag", AuditEvent.object_id == flag_id)
        .order_by(AuditEvent.occurred_at)).all()
    # Each of the three reads (GET) is audited too: a flag's evidence quotes PHI.
    assert sorted(audited) == ["flag.assign", "flag.note", *["flag.read"] * 3, "flag.resolve"]


def test_a_flag_can_be_handed_to_another_reviewer_and_noted_after_its_verdict(review: Review):
    flag_id = review.raise_("handover")
    review.assign(flag_id)
    handed = review.assign(flag_id, to=A)
    assert (handed["status"], handed["assignee_id"]) == ("in_review", str(review.users[A].id))
    assert handed["events"][-1]["detail"] == {"from": str(review.officer.id),
                                              "to": str(review.users[A].id)}
    review.resolve(flag_id, "justified")
    late = review.post(flag_id, "notes", {"note": "The prescriber confirmed the change."})
    assert late.status_code == 200
    assert (late.json["status"], late.json["events"][-1]["action"]) == ("resolved", "note")


def _deactivated_officer(review: Review) -> str:
    officer = review.world.user(review.org, C)
    response = review.client.patch(f"/api/v1/users/{officer.id}", headers=review.headers(A),
                                   json={"active": False})
    assert response.status_code == 200, response.json
    return str(officer.id)


ILLEGAL = [
    pytest.param("in_review", "resolve", {"resolution": "justified"}, 422, "validation_error",
                 id="resolve-without-note"),
    pytest.param("in_review", "resolve", {"resolution": "justified", "note": "  "}, 422,
                 "validation_error", id="resolve-with-blank-note"),
    pytest.param("in_review", "resolve", {"resolution": "fine", "note": "x"}, 422,
                 "validation_error", id="unknown-resolution"),
    pytest.param("open", "resolve", {"resolution": "justified", "note": "x"}, 409,
                 "illegal_transition", id="resolve-before-review"),
    pytest.param("resolved", "resolve", {"resolution": "false_positive", "note": "x"}, 409,
                 "illegal_transition", id="resolve-twice"),
    pytest.param("resolved", "assign", {"assignee_id": "officer"}, 409, "illegal_transition",
                 id="assign-resolved"),
    pytest.param("open", "assign", {"assignee_id": "nurse"}, 422, "validation_error",
                 id="assign-to-nurse"),
    pytest.param("open", "assign", {"assignee_id": "stranger"}, 422, "validation_error",
                 id="assign-to-another-organisation"),
    pytest.param("open", "assign", {"assignee_id": "deactivated"}, 422, "validation_error",
                 id="assign-to-deactivated"),
    pytest.param("open", "assign", {"assignee_id": str(uuid.uuid4())}, 422, "validation_error",
                 id="assign-to-nobody"),
    pytest.param("open", "notes", {"note": ""}, 422, "validation_error", id="empty-note"),
]


@pytest.mark.parametrize(("status", "step", "body", "code", "error"), ILLEGAL)
def test_illegal_steps_are_refused_and_change_nothing(review: Review, status, step, body, code,
                                                      error):
    flag_id = review.raise_("contested")
    if status != "open":
        review.assign(flag_id)
    if status == "resolved":
        review.resolve(flag_id, "justified")
    people = {"officer": lambda: str(review.officer.id),
              "nurse": lambda: str(review.clinic.nurse.id),
              "stranger": lambda: str(Clinic(review.world).users[C].id),
              "deactivated": lambda: _deactivated_officer(review)}
    body = {key: people[value]() if value in people else value for key, value in body.items()}
    before = review.flag(flag_id)

    response = review.post(flag_id, step, body)

    assert response.status_code == code, response.json
    assert response.json["error"]["code"] == error
    assert review.flag(flag_id) == before
    if "assignee_id" in body and code == 422:
        assert "assignee_id" in response.json["error"]["details"]["fields"]


def test_an_illegal_transition_says_what_is_allowed(review: Review):
    flag_id = review.raise_("early")
    response = review.post(flag_id, "resolve", {"resolution": "justified", "note": "x"})
    assert response.json["error"]["details"] == {
        "status": "open", "action": "resolved", "allowed_from": ["in_review"]}


def test_a_repeat_finding_keeps_the_evidence_it_replaces(review: Review):
    flag_id = review.raise_("count", evidence={"name": "count", "difference_ug": 500})
    review.later(hours=2)
    review.raise_("count", evidence={"name": "count", "difference_ug": 900})
    flag = review.flag(flag_id)
    # The same event found again, changed: one occurrence still, showing its new evidence.
    assert (flag["status"], flag["occurrences"]) == ("open", 1)
    assert flag["evidence"]["difference_ug"] == 900
    assert flag["last_seen_at"] == "2026-11-02T16:00:00+00:00"
    again = flag["events"][-1]
    assert (again["action"], again["actor_id"]) == ("re_raised", None)
    assert again["detail"]["previous"]["evidence"]["difference_ug"] == 500
    assert again["detail"]["finding"]["evidence"]["difference_ug"] == 900
    assert (again["detail"]["occurrence"], again["detail"]["new_occurrence"]) == (1, False)


def test_the_same_finding_again_neither_counts_nor_adds_history(review: Review):
    flag_id = review.raise_("count", evidence={"name": "count", "difference_ug": 500})
    events = len(review.flag(flag_id)["events"])
    review.later(hours=2)
    review.raise_("count", evidence={"name": "count", "difference_ug": 500})
    review.raise_("count", evidence={"name": "count", "difference_ug": 500})
    flag = review.flag(flag_id)
    # Re-checks (every write, every night) are not occurrences: the time says it was seen.
    assert (flag["occurrences"], len(flag["events"])) == (1, events)
    assert flag["last_seen_at"] == "2026-11-02T16:00:00+00:00"


def test_a_resolved_flag_raised_again_stays_resolved_as_judged(review: Review):
    flag_id = review.raise_("count", evidence={"name": "count", "difference_ug": 500})
    review.assign(flag_id)
    review.resolve(flag_id, "justified", "Spillage, witnessed.")
    review.raise_("count", evidence={"name": "count", "difference_ug": 600})
    flag = review.flag(flag_id)
    assert (flag["status"], flag["resolution"], flag["occurrences"]) == (
        "resolved", "justified", 1)
    # The verdict stays beside the evidence it was given on; the new finding is in the history.
    assert flag["evidence"]["difference_ug"] == 500
    assert flag["events"][-1]["action"] == "re_raised"
    assert flag["events"][-1]["detail"]["finding"]["evidence"]["difference_ug"] == 600
    assert review.queue(status="open") == []
    # Found the same way each night after, it is not written into the history again.
    events = len(flag["events"])
    review.raise_("count", evidence={"name": "count", "difference_ug": 600})
    assert len(review.flag(flag_id)["events"]) == events


def test_a_resolved_flag_raised_more_severely_reopens(review: Review, world: World):
    flag_id = review.raise_("count", severity=Severity.MEDIUM)
    review.assign(flag_id)
    review.resolve(flag_id, "false_positive", "Counted twice.")
    review.raise_("count", severity=Severity.CRITICAL, evidence={"name": "count", "n": 3})
    flag = review.flag(flag_id)
    assert (flag["status"], flag["severity"], flag["assignee_id"]) == ("open", "critical", None)
    assert (flag["resolution"], flag["resolved_at"], flag["resolved_by_id"]) == (None, None, None)
    assert flag["evidence"] == {"name": "count", "n": 3}
    re_raised, reopened = flag["events"][-2:]
    assert re_raised["action"] == "re_raised"
    assert re_raised["detail"]["previous"]["severity"] == "medium"
    assert (reopened["action"], reopened["from_status"], reopened["to_status"]) == (
        "reopened", "resolved", "open")
    assert reopened["detail"]["resolution"] == "false_positive"
    assert reopened["detail"]["resolved_by_id"] == str(review.officer.id)
    assert review.queue(status="open") == [flag_id]
    assert world.session.scalar(select(AuditEvent.action).where(
        AuditEvent.object_id == flag_id, AuditEvent.action == "flag.reopen")) == "flag.reopen"


def test_nothing_is_deleted_from_a_flags_history(review: Review, world: World):
    flag_id = review.raise_("kept")
    for change in (update(FlagEvent).values(action="rewritten"), delete(FlagEvent)):
        with pytest.raises(DBAPIError, match="append_only"), world.session.begin_nested():
            world.session.execute(change.where(FlagEvent.flag_id == uuid.UUID(flag_id)))
    assert len(review.flag(flag_id)["events"]) == 1


FLAG_ENDPOINTS = [("GET", "/api/v1/flags"), ("GET", "/api/v1/flags/{flag}"),
                  ("POST", "/api/v1/flags/{flag}/assign"), ("POST", "/api/v1/flags/{flag}/notes"),
                  ("POST", "/api/v1/flags/{flag}/resolve")]
BODIES = {"assign": {"assignee_id": "{officer}"}, "notes": {"note": "x"},
          "resolve": {"resolution": "justified", "note": "x"}}


def _call(review: Review, method: str, template: str, flag_id: str, headers: dict):
    path = template.format(flag=flag_id)
    body = BODIES.get(path.rsplit("/", 1)[-1])
    if body:
        body = {k: v.format(officer=review.officer.id) for k, v in body.items()}
    return review.client.open(path, method=method, headers=headers, json=body)


@pytest.mark.parametrize("role", [Role.NURSE, Role.PHARMACIST, Role.PRESCRIBER])
def test_other_roles_cannot_see_or_touch_flags(review: Review, role: Role):
    flag_id = review.raise_("private")
    for method, template in FLAG_ENDPOINTS:
        response = _call(review, method, template, flag_id, review.headers(role))
        assert response.status_code == 403, (method, template)
    assert len(review.flag(flag_id)["events"]) == 1


def test_another_organisations_flag_is_not_found(review: Review, world: World):
    flag_id = review.raise_("theirs")
    other = Clinic(world)
    headers = other.as_(C)
    for method, template in FLAG_ENDPOINTS[1:]:
        response = _call(review, method, template, flag_id, headers)
        assert response.status_code == 404, (method, template, response.json)
        assert response.json["error"]["code"] == "not_found"
    assert world.client.get("/api/v1/flags", headers=headers).json == []
    assert world.session.get(Flag, uuid.UUID(flag_id)).status == "open"


def test_flags_raised_before_the_review_workflow_get_their_history(empty_engine):
    schema.upgrade(empty_engine, "0004")
    org, nurse, flag = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    seen = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    # The model tables write the columns 0004 had: the others are left out of the inserts.
    tables = schema.metadata.tables
    with empty_engine.begin() as conn:
        conn.execute(insert(tables["organisation"]).values(
            id=org, slug="old", name="Old", dea_registration="FV0000000",
            timezone="UTC", created_at=seen))
        conn.execute(insert(tables["app_user"]).values(
            id=nurse, organisation_id=org, username="n", display_name="N", role="nurse",
            password_hash="x", active=True, created_at=seen, updated_at=seen))
        # The flag as 0004 stored it, summary and evidence in clear.
        flag_0004 = table(
            "flag", column("id", Uuid()), column("organisation_id", Uuid()),
            column("evidence", JSON()), column("shadow", Boolean()),
            column("first_seen_at", DateTime(timezone=True)),
            column("last_seen_at", DateTime(timezone=True)),
            *(column(name, String()) for name in (
                "rule_id", "severity", "subject_kind", "subject_id", "summary", "dedup_key",
                "status")), *(column(name, Integer()) for name in ("rule_version",
                                                                  "occurrences")))
        conn.execute(insert(flag_0004).values(
            id=flag, organisation_id=org, rule_id="visit.missed", rule_version=1,
            severity="medium", subject_kind="nurse", subject_id=str(nurse),
            summary="Old flag.", evidence={"patient_id": str(uuid.uuid4())},
            dedup_key="k", shadow=False, status="open", occurrences=1,
            first_seen_at=seen, last_seen_at=seen + timedelta(hours=1)))

    schema.upgrade(empty_engine, "0005")

    with empty_engine.connect() as conn:
        row = conn.execute(text("SELECT nurse_id, patient_id, updated_at FROM flag")).one()
        event = conn.execute(text("SELECT seq, action, to_status FROM flag_event")).one()
    assert uuid.UUID(str(row.nurse_id)) == nurse
    assert row.patient_id is None
    assert row.updated_at is not None
    assert tuple(event) == (1, "raised", "open")
    schema.downgrade(empty_engine, "0004")
    with empty_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM flag")) == 1
