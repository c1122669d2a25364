"""The flag queue and a flag's page: filters, counts, pages, the evidence timeline, the review."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Role, User
from backend.audit.models import AuditEvent
from backend.console import timeline
from backend.custody.models import CustodyEntry, Kind
from backend.flags.models import Flag, FlagEvent
from safeguards.findings import Severity, Subject, SubjectKind
from safeguards.rules.custody import COUNT_DISCREPANCY
from tests.backend.administration.test_sessions import PRE, Session, dose
from tests.backend.conftest import START
from tests.backend.console.conftest import Desk, signed_in
from tests.backend.flags.test_flag_review import Review
from tests.factories import PASSWORD, World, signed_payload

C, A, PH, PR, N = Role.COMPLIANCE, Role.ADMIN, Role.PHARMACIST, Role.PRESCRIBER, Role.NURSE
FLAG_LINK = re.compile(r'href="/console/flags/([0-9a-f-]{36})"')
FAR = {"latitude": "41.888100", "longitude": "-87.629800", "accuracy_m": 12,
       "occurred_at": "2026-11-03T15:02:00+00:00", "reason": "Parked round the corner"}


@pytest.fixture
def review(world: World) -> Review:
    return Review(world)


def desk_of(review: Review, role: Role = C) -> Desk:
    """Return a browser signed in as the clinic's user with `role`, on the queue."""
    desk = signed_in(review.world, review.org, review.users[role])
    desk.get("/console/flags")
    return desk


def listed(page) -> list[str]:
    """Return the ids of the flags a queue page lists, in order."""
    return FLAG_LINK.findall(page.get_data(as_text=True))


def text(page) -> str:
    """Return a page's text with its markup's whitespace folded, for reading sentences."""
    return re.sub(r"\s+", " ", page.get_data(as_text=True))


def audited(world: World, action: str, object_id: object) -> int:
    """Return how many audit rows record `action` on `object_id`."""
    return world.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == action, AuditEvent.object_id == str(object_id)))


def history(world: World, flag_id: str) -> list[str]:
    """Return the actions of a flag's history."""
    world.session.expire_all()
    return list(world.session.scalars(select(FlagEvent.action).where(
        FlagEvent.flag_id == uuid.UUID(flag_id)).order_by(FlagEvent.seq)))


@pytest.mark.parametrize("role", [C, A])
def test_the_queue_lists_the_most_severe_first_then_the_oldest(review: Review, role):
    names = {}
    for name, severity in [("low", Severity.LOW), ("old high", Severity.HIGH),
                           ("critical", Severity.CRITICAL), ("new high", Severity.HIGH)]:
        names[review.raise_(name, severity=severity)] = name
        review.later(minutes=5)
    page = desk_of(review, role).get("/console/flags")
    assert page.status_code == 200
    assert [names[i] for i in listed(page)] == ["critical", "old high", "new high", "low"]
    assert listed(page) == review.queue(status="open")
    said = text(page)
    assert "Flag B." not in said and "Flag critical." in said
    assert page.get_data(as_text=True).count("<h1>") == 1
    assert '<a href="/console/flags" aria-current="page">Flags</a>' in said
    for count, severity in [(1, "Critical"), (2, "High"), (0, "Medium"), (1, "Low")]:
        assert re.search(rf"<strong>{count}</strong><a href=\"[^\"]*\">{severity} flags", said)


@pytest.fixture
def sorted_out(review: Review) -> dict[str, str]:
    """Flags that differ in one way each from a plain open one."""
    clinic = review.clinic
    ids = {
        "plain": review.raise_("plain"),
        "critical": review.raise_("critical", severity=Severity.CRITICAL),
        "count": review.raise_("count", rule=COUNT_DISCREPANCY),
        "nurse": review.raise_("nurse", subject=Subject(SubjectKind.NURSE,
                                                         str(clinic.nurse.id))),
        "patient": review.raise_("patient", evidence={"patient_id": clinic.patient_id}),
        "shadow": review.raise_("shadow", shadow=True),
        "assigned": review.raise_("assigned"),
        "resolved": review.raise_("resolved"),
    }
    review.assign(ids["assigned"], to=A)
    review.assign(ids["resolved"])
    review.resolve(ids["resolved"], "false_positive")
    return ids


@pytest.mark.parametrize(("query", "expected"), [
    ({}, {"plain", "critical", "count", "nurse", "patient", "assigned"}),
    ({"status": "any"}, {"plain", "critical", "count", "nurse", "patient", "assigned",
                         "resolved"}),
    ({"status": "resolved"}, {"resolved"}),
    ({"status": "in_review"}, {"assigned"}),
    ({"severity": "critical"}, {"critical"}),
    ({"rule": "custody.count_discrepancy"}, {"count"}),
    ({"nurse": "{nurse}"}, {"nurse"}),
    ({"patient": "{patient}"}, {"patient"}),
    ({"assignee": "{admin}"}, {"assigned"}),
    ({"shadow": "true"}, {"shadow"}),
    ({"subject_kind": "nurse", "subject_id": "{nurse}", "status": "any"}, {"nurse"}),
])
def test_the_queue_filters_as_the_api_does(review: Review, sorted_out, query, expected):
    people = {"nurse": str(review.clinic.nurse.id), "patient": review.clinic.patient_id,
              "admin": str(review.users[A].id)}
    query = {name: value.format(**people) for name, value in query.items()}
    page = desk_of(review).get("/console/flags", query_string=query)
    assert page.status_code == 200, text(page)
    names = {flag_id: name for name, flag_id in sorted_out.items()}
    assert {names[flag_id] for flag_id in listed(page)} == expected


def test_the_counts_are_of_the_filtered_queue_whatever_its_severity(review: Review, sorted_out):
    said = text(desk_of(review).get("/console/flags", query_string={
        "severity": "critical", "status": "any"}))
    # Filtered to critical, the counts still say how many of each the other filters leave.
    assert re.search(r"<strong>1</strong><a href=\"[^\"]*severity=critical[^\"]*\">Critical", said)
    assert re.search(r"<strong>5</strong><a href=\"[^\"]*\">Medium flags", said)
    assert re.search(r"<strong>1</strong><a href=\"[^\"]*\">High flags", said)


def test_a_patient_is_found_by_record_number_and_the_read_is_audited(review: Review,
                                                                      sorted_out, world):
    patient = review.client.get(f"/api/v1/patients/{review.clinic.patient_id}",
                                headers=review.headers(A)).json
    before = audited(world, "patient.read", patient["id"])
    page = desk_of(review).get("/console/flags", query_string={"mrn": patient["mrn"]})
    assert listed(page) == [sorted_out["patient"]]
    assert audited(world, "patient.read", patient["id"]) == before + 1
    # The page's own links carry the patient's id, never her record number.
    assert patient["mrn"] not in re.sub(r'value="[^"]*"', "", page.get_data(as_text=True))
    unknown = desk_of(review).get("/console/flags", query_string={"mrn": "MRN-NOBODY"})
    assert unknown.status_code == 200
    assert "No patient of this organisation has this record number." in text(unknown)
    assert listed(unknown) == []


def test_the_queue_is_paged(review: Review):
    ids = []
    for number in range(5):
        ids.append(review.raise_(f"paged {number}"))
        review.later(minutes=1)
    desk = desk_of(review)
    first = desk.get("/console/flags", query_string={"limit": 2})
    assert listed(first) == ids[:2]
    assert "Previous page" not in text(first)
    [following] = re.findall(r'href="([^"]*)">Next page', first.get_data(as_text=True))
    second = desk.get(following.replace("&amp;", "&"))
    assert listed(second) == ids[2:4]
    assert "Previous page" in text(second)
    last = desk.get("/console/flags", query_string={"limit": 2, "offset": 4})
    assert listed(last) == ids[4:]
    assert "Next page" not in text(last)


def test_htmx_gets_the_queue_alone(review: Review):
    review.raise_("swapped")
    page = desk_of(review).get("/console/flags", headers={"HX-Request": "true"})
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert body.lstrip().startswith('<section id="queue"')
    assert "<html" not in body and len(listed(page)) == 1


def test_a_bad_filter_is_refused_beside_its_field(review: Review):
    page = desk_of(review).get("/console/flags", query_string={"nurse": "not-an-id"})
    assert page.status_code == 422
    assert re.search(r'id="nurse-error">[^<]*UUID', page.get_data(as_text=True))


@pytest.mark.parametrize("role", [PH, PR])
def test_other_desk_roles_may_not_review_flags(review: Review, role):
    flag_id = review.raise_("not theirs")
    desk = signed_in(review.world, review.org, review.users[role])
    assert desk.get("/console/flags").status_code == 403
    assert desk.get(f"/console/flags/{flag_id}").status_code == 403
    refused = desk.post(f"/console/flags/{flag_id}/notes", {"note": "mine"})
    assert refused.status_code == 403
    assert history(review.world, flag_id) == ["raised"]
    assert 'href="/console/flags"' not in text(desk.get("/console/", follow_redirects=True))


def test_a_nurse_cannot_sign_in_to_review(review: Review):
    answer = Desk(review.world.app.test_client()).sign_in(review.org, review.users[N])
    assert answer.status_code == 403


def test_another_organisations_flag_is_not_found(review: Review, world: World):
    other = Review(world)
    theirs = other.raise_("theirs")
    desk = desk_of(review)
    assert desk.get(f"/console/flags/{theirs}").status_code == 404
    assert desk.get("/console/flags/not-a-flag").status_code == 404
    for step, form in [("assign", {"assignee_id": str(review.officer.id)}),
                       ("notes", {"note": "Not mine."}),
                       ("resolve", {"resolution": "justified", "note": "Not mine."})]:
        assert desk.post(f"/console/flags/{theirs}/{step}", form).status_code == 404
    assert history(world, theirs) == ["raised"]


@pytest.mark.parametrize("role", [C, A])
def test_a_flag_page_shows_its_rule_evidence_and_history_and_audits_the_read(review: Review,
                                                                           world: World, role):
    flag_id = review.raise_("shelf", rule=COUNT_DISCREPANCY, evidence={
        "lot": "L9", "ledger_ug": 5000, "counted_ug": 4000, "difference_ug": -1000})
    page = desk_of(review, role).get(f"/console/flags/{flag_id}")
    said = text(page)
    assert page.status_code == 200
    assert f"<h1>{COUNT_DISCREPANCY.title}</h1>" in said
    for shown in (COUNT_DISCREPANCY.rationale, COUNT_DISCREPANCY.source, "Flag shelf.",
                  "<code>ledger_ug</code></dt><dd>5000</dd>", "lot L9"):
        assert shown in said
    for label, button in (("Verdict", "Assign to me"), ("Note", "Add note"), ("", "Resolve")):
        assert f">{button}</button>" in said
        assert not label or f">{label}</label>" in said
    assert said.count("<h1>") == 1
    assert audited(world, "flag.read", flag_id) == 1
    review.flag(flag_id)
    # The API's GET writes the same row.
    assert audited(world, "flag.read", flag_id) == 2


def test_a_count_discrepancys_timeline_shows_the_lots_ledger(world: World):
    from tests.factories import Pharmacy

    pharmacy = Pharmacy(world)
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(200_000).status_code == 201
    counted = pharmacy.client.post("/api/v1/custody/counts", headers=pharmacy.as_(PH), json={
        "holder": "vault", "counted_at": START.isoformat(),
        "counts": [{"product_id": pharmacy.product_id, "lot": "L1", "quantity_ug": 790_000}]})
    assert counted.status_code == 201, counted.json
    flag = world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id,
        Flag.rule_id == "custody.count_discrepancy")).one()
    desk = signed_in(world, pharmacy.org, pharmacy.users[C])
    said = text(desk.get(f"/console/flags/{flag.id}"))
    assert "about lot L1" in said
    assert re.search(r"<strong>Ledger #1</strong> Receive of 1000 mg \(1000000 µg\) of lot L1 "
                     r"from the supplier to the vault", said)
    assert re.search(r"<strong>Ledger #2</strong> Dispense of 200 mg \(200000 µg\) of lot L1 "
                     r"from the vault to the bag of Test User", said)
    assert re.search(r'<li class="finding">[^<]*<time[^>]*>[^<]*</time> <strong>Finding</strong> '
                     r"Counted 790000 µg of lot L1 in vault", said)


@pytest.fixture
def dosed(world: World) -> Session:
    """A visit checked in away from home, dosed above the plan's maximum, its rest wasted."""
    visit = Session(world)
    pharmacy = visit.pharmacy
    checked_in = pharmacy.client.post(f"/api/v1/visits/{visit.visit['id']}/check-in",
                                      headers=visit.phone_headers, json=FAR)
    assert checked_in.status_code == 200, checked_in.json
    assert visit.post("pre-dose", visit.signed(PRE)).status_code == 201
    assert visit.post("dose", visit.signed(dose(pharmacy.product_id, 80_000))).status_code == 201
    waste = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": pharmacy.product_id,
             "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 20_000,
             "occurred_at": "2026-11-03T15:55:00+00:00", "visit_id": visit.visit["id"]}
    signature = pharmacy.phone.sign(signed_payload(pharmacy, waste))
    wasted = visit.post("waste", {**{k: v for k, v in waste.items() if k not in (
        "kind", "visit_id")}, "signature": signature, "witnesses": [
        {"user_id": str(pharmacy.users[PH].id), "password": PASSWORD}]})
    assert wasted.status_code == 201, wasted.json
    return visit


def test_a_dose_flags_timeline_shows_the_visit_dose_readings_and_waste(dosed: Session,
                                                                       world: World):
    pharmacy = dosed.pharmacy
    flag = world.session.scalars(select(Flag).where(
        Flag.subject_id == dosed.visit["id"], Flag.rule_id == "dosing.above_plan_max")).one()
    desk = signed_in(world, pharmacy.org, pharmacy.users[C])
    page = desk.get(f"/console/flags/{flag.id}")
    said = text(page)
    assert page.status_code == 200
    assert "Pat Test (MRN MRN-" in said
    assert re.search(r"<strong>Visit</strong> Scheduled 2026-11-03 15:00 UTC to [^<]* with Test "
                     r"User: checked in\.", said)
    assert re.search(r"<strong>Check-in</strong> By Test User, 11\d\d m from the "
                     r"patient&#39;s home \(radius 250 m, GPS accuracy ±12 m\); reason given: "
                     r"Parked round the corner\.", said)
    assert re.search(r"<strong>Dose</strong> 80 mg \(80000 µg\) IV of lot L1, [^;]*; "
                     r"1\.142857 mg/kg at 70 kg; the plan: 35 mg, at most 70 mg\.", said)
    assert "<dt>Threshold</dt><dd><code>plan_max_dose_ug</code> 70000" in said
    assert "<td>Pre-dose</td>" in said and "<td class=\"num\">122/78</td>" in said
    assert re.search(r"<strong>Ledger #\d+</strong> Waste of 20 mg \(20000 µg\) of lot L1 from "
                     r"the bag of Test User to waste, by Test User; witnessed by Test User\.",
                     said)
    assert re.search(r"<strong>Ledger #\d+</strong> Administer of 80 mg \(80000 µg\) of lot L1 "
                     r"from the bag of Test User to the patient", said)
    # What the page showed, it audited as the API would: the flag, the patient, the session.
    for action, object_id in (("flag.read", flag.id), ("patient.read", flag.patient_id),
                              ("session.read", dosed.visit["id"])):
        assert audited(world, action, object_id) == 1, action


def test_assign_note_and_resolve_through_the_forms(review: Review, world: World):
    flag_id = review.raise_("reviewed")
    desk = desk_of(review)
    desk.get(f"/console/flags/{flag_id}")
    assigned = desk.post(f"/console/flags/{flag_id}/assign",
                         {"assignee_id": str(review.officer.id)})
    assert assigned.status_code == 303
    assert assigned.headers["Location"] == f"/console/flags/{flag_id}"
    assert (review.flag(flag_id)["status"], review.flag(flag_id)["assignee_id"]) == (
        "in_review", str(review.officer.id))
    page = desk.get(f"/console/flags/{flag_id}")
    assert "The flag is assigned to you and is in review." in text(page)

    noted = desk.post(f"/console/flags/{flag_id}/notes",
                      {"note": "Asked the nurse for her count sheet.", "resolution": ""})
    assert noted.status_code == 303
    assert "Your note is step 4 of the flag&#39;s history." in text(desk.get(noted.location))
    assert review.flag(flag_id)["events"][-1]["note"] == "Asked the nurse for her count sheet."

    resolved = desk.post(f"/console/flags/{flag_id}/resolve",
                         {"resolution": "false_positive", "note": "The count sheet matches."})
    assert resolved.status_code == 303
    assert "The flag is resolved as false positive." in text(desk.get(resolved.location))
    shown = review.flag(flag_id)
    assert (shown["status"], shown["resolution"], shown["resolved_by_id"]) == (
        "resolved", "false_positive", str(review.officer.id))
    assert history(world, flag_id) == ["raised", "assigned", "status_changed", "note",
                                       "resolved"]
    for action in ("flag.assign", "flag.note", "flag.resolve"):
        assert audited(world, action, flag_id) == 1


def test_resolving_an_open_flag_is_refused_with_the_apis_conflict(review: Review, world):
    flag_id = review.raise_("too soon")
    desk = desk_of(review)
    desk.get(f"/console/flags/{flag_id}")
    refused = desk.post(f"/console/flags/{flag_id}/resolve",
                        {"resolution": "justified", "note": "Looks fine."})
    assert refused.status_code == 409
    said = text(refused)
    assert re.search(r'<h2 id="review">Review</h2> <div class="refusal" role="alert"> '
                     r"<p><strong>A open flag cannot be resolved; it must be in_review\.", said)
    # The form keeps what was written.
    assert "Looks fine.</textarea>" in said
    assert '<option value="justified" selected>' in said
    # The page shown again read the flag, but a refusal's unit is rolled back, audit and all.
    assert audited(world, "flag.read", flag_id) == 1
    assert audited(world, "flag.resolve", flag_id) == 0
    assert review.flag(flag_id)["status"] == "open"
    assert history(world, flag_id) == ["raised"]


@pytest.mark.parametrize(("step", "form", "field", "label"), [
    ("notes", {"note": "   "}, "note", "Note"),
    ("resolve", {"resolution": "justified", "note": ""}, "note", "Note"),
    ("resolve", {"note": "No verdict given."}, "resolution", "Verdict"),
])
def test_a_blank_note_or_verdict_is_refused_beside_its_field(review: Review, world, step, form,
                                                            field, label):
    flag_id = review.raise_("blank")
    review.assign(flag_id)
    desk = desk_of(review)
    desk.get(f"/console/flags/{flag_id}")
    refused = desk.post(f"/console/flags/{flag_id}/{step}", form)
    assert refused.status_code == 422
    body = refused.get_data(as_text=True)
    assert re.search(rf'<label for="f-{field}">{label}</label>\s*<(textarea|select) '
                     rf'id="f-{field}"[^>]* aria-invalid="true" aria-describedby="{field}-error"',
                     body)
    assert re.search(rf'<span class="field-error" id="{field}-error">[^<]+</span>', body)
    assert history(world, flag_id) == ["raised", "assigned", "status_changed"]
    assert review.flag(flag_id)["status"] == "in_review"


def test_a_post_without_its_csrf_token_changes_nothing(review: Review, world: World):
    flag_id = review.raise_("forged")
    desk = desk_of(review)
    forged = desk.post(f"/console/flags/{flag_id}/assign",
                       {"assignee_id": str(review.officer.id)}, token=False)
    assert forged.status_code == 400
    assert review.flag(flag_id)["status"] == "open"
    assert history(world, flag_id) == ["raised"]


def test_a_timeline_says_how_many_visits_it_left_out(dosed: Session, world: World,
                                                     monkeypatch):
    monkeypatch.setattr(timeline, "MOST_VISITS", 0)
    pharmacy = dosed.pharmacy
    flag = world.session.scalars(select(Flag).where(
        Flag.subject_id == dosed.visit["id"], Flag.rule_id == "dosing.above_plan_max")).one()
    said = text(signed_in(world, pharmacy.org, pharmacy.users[C]).get(f"/console/flags/{flag.id}"))
    assert "The 0 visits nearest the finding are shown; 1 more in this window are left out" in said
    assert "<strong>Dose</strong>" not in said
    assert audited(world, "session.read", dosed.visit["id"]) == 0


@pytest.mark.parametrize("role, kind", [(PH, SubjectKind.NURSE), (PR, SubjectKind.PRESCRIBER),
                                        (N, SubjectKind.NURSE)])
def test_a_flag_about_a_person_names_her_role(review: Review, role, kind):
    # The pharmacy rules file a pharmacist as the flag's person under the subject kind `nurse`.
    person = review.users[role]
    flag_id = review.raise_("person", subject=Subject(kind, str(person.id)),
                            evidence={"nurse_id": str(person.id)} if kind is SubjectKind.NURSE
                            else {})
    named = f"{role.capitalize()} {person.display_name}"
    desk = desk_of(review)
    page = text(desk.get(f"/console/flags/{flag_id}"))
    assert f"<dd>{named}</dd>" in page
    queue = text(desk.get("/console/flags?status=any"))
    assert f"<td>{named}</td>" in queue
    if kind is SubjectKind.NURSE:
        assert f"Every flag about this {role}<" in page
        staff = person.display_name + ("" if role is N else f" ({role})")
        assert f"<td>{staff}</td>" in queue


@pytest.mark.parametrize(("attested_at", "said"), [
    (None, "witnessed by Ann Lee."),
    ("2026-11-03T16:02:30.000000+00:00", "witnessed by Ann Lee, whose phone confirmed 2 min "
                                         "after."),
    ("2026-11-03T19:00:00.000000+00:00", "witnessed by Ann Lee, whose phone confirmed 180 min "
                                         "after."),
    ("2026-11-03T15:30:00.000000+00:00", "witnessed by Ann Lee, whose phone confirmed 30 min "
                                         "before.")])
def test_a_timeline_says_when_a_witness_phone_confirmed_a_waste(attested_at, said):
    nurse, witness = (User(id=uuid.uuid4(), display_name=name) for name in ("Bea Ray", "Ann Lee"))
    confirmed = {"user_id": str(witness.id), "method": "device_signature",
                 **({"attested_at": attested_at} if attested_at else {})}
    entry = CustodyEntry(seq=4, kind=Kind.WASTE, quantity_ug=5_000, lot="L1",
                         from_holder=f"bag:{nurse.id}", to_holder="waste", actor_id=nurse.id,
                         occurred_at=datetime(2026, 11, 3, 16, 0, tzinfo=UTC),
                         confirmations=[confirmed])
    moment = timeline._movement(entry, {nurse.id: nurse, witness.id: witness}, None)
    assert moment.sentence.endswith(said), moment.sentence
