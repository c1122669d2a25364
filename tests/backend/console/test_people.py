"""The nurse and patient pages: sections by role, charts with the right numbers, audit, 404s."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import pytest
from sqlalchemy import select

from backend.accounts.models import Role, User
from backend.audit.models import AuditEvent
from backend.custody.chain import signed_payload
from tests.backend.console.conftest import Desk, signed_in
from tests.factories import PASSWORD, Clinic, Pharmacy, Phone, World

DAY1 = "2026-11-03T15:00:00+00:00"
HOME = ("41.878100", "-87.629800")
AT_HOME = {"latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 12,
           "occurred_at": "2026-11-03T15:02:00+00:00"}
PRE = {"systolic": 122, "diastolic": 78, "heart_rate": 70, "spo2": 98, "respiratory_rate": 14,
       "moaas": 5, "decision": "go"}
A, PR, PH, C = Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST, Role.COMPLIANCE


class Round:
    """One nurse's home visit through the API: checked in, a dose given, the rest wasted."""

    def __init__(self, pharmacy: Pharmacy, nurse: User, device: tuple[uuid.UUID, Phone],
                 patient_id: str) -> None:
        self.pharmacy, self.nurse, self.patient_id = pharmacy, nurse, patient_id
        (self.device_id, self.phone), self.client = device, pharmacy.client
        self.phone_headers = pharmacy.world.headers(pharmacy.org, nurse, self.device_id)
        self.visit_id: str | None = None

    def book(self, start: str = DAY1) -> str:
        """Book a visit for the nurse at her patient's, returning its id."""
        response = self.client.post("/api/v1/visits", headers=self.pharmacy.as_(A), json={
            "patient_id": self.patient_id, "nurse_id": str(self.nurse.id),
            "scheduled_start": start})
        assert response.status_code == 201, response.json
        self.visit_id = response.json["id"]
        return self.visit_id

    def record(self, part: str, body: dict):
        """Post one record of the session from the nurse's phone."""
        return self.client.post(f"/api/v1/visits/{self.visit_id}/{part}",
                                headers=self.phone_headers, json=body)

    def signed(self, body: dict) -> dict:
        """Return `body` with an id, a time and the phone's signature."""
        body = {"id": str(uuid.uuid4()), "occurred_at": DAY1, **body}
        return {**body, "signature": self.phone.sign(body)}

    def give(self, quantity_ug: int, score: int | None = None) -> None:
        """Check in, record the pre-dose check and the dose (and a PHQ-9 of `score`)."""
        assert self.record("check-in", AT_HOME).status_code == 200
        assert self.record("pre-dose", self.signed(PRE)).status_code == 201
        given = self.record("dose", self.signed({
            "product_id": self.pharmacy.product_id, "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": quantity_ug, "route": "IV",
            "infusion_started_at": "2026-11-03T15:10:00+00:00",
            "infusion_ended_at": "2026-11-03T15:50:00+00:00"}))
        assert given.status_code == 201, given.json
        if score is not None:
            # Items of 0 to 3 adding up to `score`.
            items = {str(item): min(3, max(0, score - 3 * (item - 1))) for item in range(1, 10)}
            scored = self.record("outcomes", self.signed({"instrument": "phq9",
                                                          "items": items}))
            assert scored.status_code == 201, scored.json

    def waste(self, quantity_ug: int, witness: User) -> None:
        """Waste `quantity_ug` of the visit's lot before `witness`."""
        body = {"id": str(uuid.uuid4()), "product_id": self.pharmacy.product_id, "lot": "L1",
                "expiry": "2028-01-31", "quantity_ug": quantity_ug, "occurred_at": DAY1}
        signature = self.phone.sign(signed_payload({
            **body, "kind": "waste", "visit_id": self.visit_id, "details": {},
            "from_holder": f"bag:{self.nurse.id}", "to_holder": "waste",
            "occurred_at": datetime.fromisoformat(DAY1)}))
        wasted = self.record("waste", {**body, "signature": signature, "witnesses": [
            {"user_id": str(witness.id), "password": PASSWORD}]})
        assert wasted.status_code == 201, wasted.json


@pytest.fixture
def ward(world: World) -> Pharmacy:
    """Three nurses each on one visit: Ann (the clinic's nurse) gives 35 mg and wastes 15 mg
    before the pharmacist; Bea gives 28 mg and wastes 5 mg before Ann; Cat gives 21 mg and
    wastes 2 mg before the pharmacist. Every patient weighs 70 kg."""
    pharmacy = Pharmacy(world)
    assert pharmacy.receive(1_000_000).status_code == 201
    pharmacist = pharmacy.users[PH]
    rounds = {}
    for name, given, wasted, witness in (("ann", 35_000, 15_000, pharmacist),
                                         ("bea", 28_000, 5_000, pharmacy.nurse),
                                         ("cat", 21_000, 2_000, pharmacist)):
        nurse = pharmacy.nurse if name == "ann" else world.user(pharmacy.org, Role.NURSE, name)
        nurse.display_name = name.capitalize()
        world.commit()
        patient_id = (pharmacy.patient_id if name == "ann"
                      else pharmacy.patient([nurse], HOME))
        pharmacy.plan(patient_id)
        weighed = pharmacy.client.post(f"/api/v1/patients/{patient_id}/weights",
                                       headers=pharmacy.as_(A), json={
                                           "weight_kg": "70", "measured_at": "2026-11-01T10:00Z"})
        assert weighed.status_code == 201, weighed.json
        dispensed = pharmacy.post(PH, {"kind": "dispense", "quantity_ug": 100_000,
                                       "nurse_id": str(nurse.id),
                                       "details": {"seal_id": f"S-{name}"}})
        assert dispensed.status_code == 201, dispensed.json
        device = ((pharmacy.device_id, pharmacy.phone) if name == "ann"
                  else world.device(pharmacy.org, nurse))
        rounds[name] = Round(pharmacy, nurse, device, patient_id)
        rounds[name].book()
        rounds[name].give(given, score=7 if name == "ann" else None)
        rounds[name].waste(wasted, witness)
    pharmacy.rounds = rounds
    # An hour on: what was recorded is in the past of every "until now".
    world.rt.clock.advance(hours=1)
    return pharmacy


def _page(desk: Desk, path: str, status: int = 200) -> str:
    response = desk.get(path)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def _svg(html: str, chart_id: str) -> str:
    found = re.search(rf'<svg[^>]* id="{chart_id}".*?</svg>', html, re.S)
    assert found, f"no chart {chart_id}"
    return found.group(0)


def _desc(html: str, chart_id: str) -> str:
    return re.search(rf'<desc id="{chart_id}-desc">(.*?)</desc>', _svg(html, chart_id),
                     re.S).group(1)


def _audited(world: World, action: str) -> list[AuditEvent]:
    return list(world.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# The nurse page


def test_her_peer_charts_draw_the_other_nurses_and_mark_her(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[C])
    html = _page(desk, f"/console/nurses/{ward.nurse.id}")
    # Ann wasted 15 mg in one visit; Bea 5 mg and Cat 2 mg: her peers.
    waste = _desc(html, "waste-per-visit")
    assert "for 2 peers: median 3.5 mg" in waste
    assert "range 2 to 5 mg" in waste
    assert "Ann: 15 mg; of 2 peers, 2 lower, 0 equal, 0 higher" in waste
    assert waste.count("peer") >= 2
    assert _svg(html, "waste-per-visit").count('class="chart-peer"') == 2
    assert _svg(html, "waste-per-visit").count('class="chart-her"') == 1
    # 35, 28 and 21 mg against plans of 35 mg: 100, 80 and 60% of the planned dose.
    planned = _desc(html, "dose-against-plan")
    assert "Ann: 100 %; of 2 peers, 2 lower" in planned
    assert "range 60 to 80 %" in planned
    # Against what the plans left: each 35 mg plan leaves 465 mg of a 500 mg vial (10 mL of
    # 50 mg/mL); Ann wasted 15 mg of it (3.2%), Bea 5 mg and Cat 2 mg.
    share = _desc(html, "waste-share")
    assert "Waste as a share of what the plans left for 2 peers" in share
    assert "Ann: 3.22581 %; of 2 peers, 2 lower" in share
    assert "range 0.430108 to 1.07527 %" in share
    assert "Ann: 1; of 2 peers, 0 lower, 2 equal" in _desc(html, "visits-per-day")
    # The same numbers in a table, for those who do not read the charts.
    assert re.search(r"Waste per visit \(mg\)</th>\s*<td class=\"num\">15</td>\s*"
                     r"<td class=\"num\">2</td>\s*<td>2, 5</td>", html)


def test_her_witnesses_and_whom_she_witnessed(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[C])
    html = _page(desk, f"/console/nurses/{ward.nurse.id}")
    by = html[html.index("Who witnessed her wastes"):html.index("Whose wastes she witnessed")]
    assert ward.users[PH].display_name in by and "Bea" not in by
    witnessed = html[html.index("Whose wastes she witnessed"):]
    assert f'href="/console/nurses/{ward.rounds["bea"].nurse.id}">Bea</a>' in witnessed


def test_her_flags_link_to_the_queue_filtered_by_her(world: World, ward: Pharmacy):
    from backend.flags.service import raise_flag
    from safeguards.findings import Subject, SubjectKind
    from safeguards.rules.peers import RATE_OUTLIER

    raise_flag(world.session, world.rt.clock.now(), ward.org.id, RATE_OUTLIER.finding(
        Subject(SubjectKind.NURSE, str(ward.nurse.id)), "Wasted far more than peers.",
        {"nurse_id": str(ward.nurse.id)}))
    world.commit()
    html = _page(signed_in(world, ward.org, ward.users[A]), f"/console/nurses/{ward.nurse.id}")
    assert f'href="/console/flags?nurse={ward.nurse.id}&amp;status=any"' in html
    assert "Wasted far more than peers." in html


def test_her_bag_statement_shows_each_lot_in_mg(world: World, ward: Pharmacy):
    html = _page(signed_in(world, ward.org, ward.users[PH]), f"/console/nurses/{ward.nurse.id}")
    # 100 mg dispensed, 35 mg given, 15 mg wasted: 50 mg left in the bag.
    assert '<th scope="col" class="num">Lot L1</th>' in html
    figures = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td class="num">(?:<strong>)?'
                              r'([0-9.]+)', html))
    assert {name: figures[name] for name in ("Opening", "Dispensed", "Administered", "Wasted",
                                             "Returned", "Remaining")} == {
        "Opening": "0.000", "Dispensed": "100.000", "Administered": "35.000",
        "Wasted": "15.000", "Returned": "0.000", "Remaining": "50.000"}


def test_a_pharmacist_sees_only_the_bag(world: World, ward: Pharmacy):
    html = _page(signed_in(world, ward.org, ward.users[PH]), f"/console/nurses/{ward.nurse.id}")
    assert "Her bag&#39;s statement" in html or "Her bag's statement" in html
    assert "waste-per-visit" not in html and "Witnesses" not in html
    assert "/console/flags?nurse=" not in html


@pytest.mark.parametrize("role", [A, C, PH])
def test_the_nurse_pages_open_for_their_roles(world: World, ward: Pharmacy, role):
    desk = signed_in(world, ward.org, ward.users[role])
    listed = _page(desk, "/console/nurses")
    assert "<h1>Nurses</h1>" in listed
    for name in ("Ann", "Bea", "Cat"):
        assert f">{name}</a>" in listed
    assert listed.count("<h1>") == 1
    assert 'href="/console/nurses"' in listed  # in the menu
    assert _page(desk, f"/console/nurses/{ward.nurse.id}").count("<h1>") == 1


def test_the_nurse_list_shows_reviewers_each_ones_figures(world: World, ward: Pharmacy):
    html = _page(signed_in(world, ward.org, ward.users[C]), "/console/nurses")
    row = re.search(r">Bea</a></td>(.*?)</tr>", html, re.S).group(1)
    # Bea wasted 5 mg of the 465 mg her 35 mg plan left (1.07527%) and gave 80% of the plan.
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["1", "5", "1.07527", "80", "1"]


def test_the_nurse_list_is_paged(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[A])
    first = _page(desk, "/console/nurses?limit=2")
    assert ">Ann</a>" in first and ">Bea</a>" in first and ">Cat</a>" not in first
    assert "Next page" in first and "Previous page" not in first
    second = _page(desk, "/console/nurses?limit=2&offset=2")
    assert ">Cat</a>" in second and "Previous page" in second


def test_a_prescriber_may_not_open_the_nurse_pages(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[PR])
    assert "Nurses</a>" not in _page(desk, "/console/patients")
    _page(desk, "/console/nurses", 403)
    _page(desk, f"/console/nurses/{ward.nurse.id}", 403)


def test_only_a_nurse_of_the_organisation_has_a_nurse_page(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[C])
    other = Clinic(world)
    for nurse_id in (other.nurse.id, ward.users[PH].id, uuid.uuid4(), "not-an-id"):
        assert "Not found" in _page(desk, f"/console/nurses/{nurse_id}", 404)


def test_a_period_off_the_list_is_refused_beside_its_field(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[C])
    html = _page(desk, f"/console/nurses/{ward.nurse.id}?days=5", 422)
    assert 'id="days-error"' in html
    assert _page(desk, f"/console/nurses/{ward.nurse.id}?days=90").count('value="90" selected')


# The patient page


def test_the_patient_page_draws_doses_against_the_plan_and_scores(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[C])
    html = _page(desk, f"/console/patients/{ward.patient_id}")
    doses = _desc(html, "doses-mg")
    assert "Dose: 1 value on 2026-11-03; latest 35 mg" in doses
    assert "Maximum dose 70 mg" in doses
    per_kg = _desc(html, "doses-mg-per-kg")
    assert "latest 0.5 mg/kg" in per_kg and "Plan dose 0.5 mg/kg" in per_kg
    assert "PHQ-9: 1 value on 2026-11-03; latest 7 points" in _desc(html, "scores")
    assert re.search(r'<td class="num">35</td>\s*<td class="num">0.5</td>', html)
    assert f'href="/console/visits/{ward.rounds["ann"].visit_id}/monitoring-record"' in html


def test_visits_are_shown_against_the_phase_limits(world: World, ward: Pharmacy):
    html = _page(signed_in(world, ward.org, ward.users[PR]),
                 f"/console/patients/{ward.patient_id}")
    section = html[html.index("Visits against the phase"):]
    assert "Within" in section
    assert re.search(r'<td class="num">1 \(2\)</td>', section)  # the induction's 2 a week


def test_a_visit_outside_the_limits_says_which_and_why(world: World, ward: Pharmacy):
    booked = ward.client.post("/api/v1/visits", headers=ward.as_(PR), json={
        "patient_id": ward.patient_id, "nurse_id": str(ward.nurse.id),
        "scheduled_start": "2026-11-04T15:00:00+00:00", "override_reason": "Travel next week"})
    assert booked.status_code == 201, booked.json
    html = _page(signed_in(world, ward.org, ward.users[C]),
                 f"/console/patients/{ward.patient_id}")
    section = html[html.index("Visits against the phase"):]
    assert section.count('<tr class="differs">') == 2
    assert "Outside: Doses 24.0 h apart; the phase requires at least 48 h." in section
    assert section.count("(a prescriber overrode the limits)") == 1
    assert re.search(r'<td class="num">24.0 \(48\)</td>', section)


def test_the_patient_page_writes_the_apis_audit_rows(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[C])
    before = {action: len(_audited(world, action))
              for action in ("patient.read", "patient.trajectory_read")}
    _page(desk, f"/console/patients/{ward.patient_id}")
    for action, count in before.items():
        rows = _audited(world, action)
        assert len(rows) == count + 1, action
        assert rows[-1].object_id == ward.patient_id
        assert rows[-1].user_id == ward.users[C].id


def test_the_monitoring_record_page_is_an_audited_read(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[PR])
    visit_id = ward.rounds["ann"].visit_id
    html = _page(desk, f"/console/visits/{visit_id}/monitoring-record")
    assert "35.000 mg (0.500 mg/kg)" in html
    [read] = _audited(world, "session.monitoring_record_read")
    assert read.object_id == visit_id


def test_the_patient_list_is_an_audited_read_of_each_listed(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[A])
    html = _page(desk, "/console/patients?limit=2")
    assert html.count('href="/console/patients/') == 2 and "Next page" in html
    listed = [row for row in _audited(world, "patient.read") if row.detail == {"via": "list"}
              and row.user_id == ward.users[A].id]
    assert len(listed) == 2


def test_a_patient_is_found_by_mrn(world: World, ward: Pharmacy):
    mrn = ward.client.get(f"/api/v1/patients/{ward.patient_id}", headers=ward.as_(A)).json["mrn"]
    desk = signed_in(world, ward.org, ward.users[C])
    html = _page(desk, f"/console/patients?mrn={mrn}")
    assert html.count('href="/console/patients/') == 1
    assert f'href="/console/patients/{ward.patient_id}"' in html
    assert "No patient has this MRN." in _page(desk, "/console/patients?mrn=NOPE")


@pytest.mark.parametrize("role", [A, PR, C])
def test_the_patient_pages_open_for_the_apis_readers(world: World, ward: Pharmacy, role):
    desk = signed_in(world, ward.org, ward.users[role])
    assert "<h1>Patients</h1>" in _page(desk, "/console/patients")
    assert _page(desk, f"/console/patients/{ward.patient_id}").count("<h1>") == 1


def test_a_pharmacist_may_not_open_a_patient(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[PH])
    before = len(_audited(world, "patient.read"))
    _page(desk, "/console/patients", 403)
    _page(desk, f"/console/patients/{ward.patient_id}", 403)
    _page(desk, f"/console/visits/{ward.rounds['ann'].visit_id}/monitoring-record", 403)
    assert len(_audited(world, "patient.read")) == before


def test_another_organisations_patient_is_not_found(world: World, ward: Pharmacy):
    other = Clinic(world)
    desk = signed_in(world, ward.org, ward.users[C])
    _page(desk, f"/console/patients/{other.patient_id}", 404)
    _page(desk, f"/console/patients/{uuid.uuid4()}", 404)
    visit = other.plan() and other.schedule(DAY1).json
    _page(desk, f"/console/visits/{visit['id']}/monitoring-record", 404)


def test_a_nurse_has_no_console(world: World, ward: Pharmacy, desk: Desk):
    answer = desk.sign_in(ward.org, ward.nurse)
    assert answer.status_code == 403
    assert desk.get(f"/console/patients/{ward.patient_id}").status_code == 302


def test_pages_hold_no_inline_style_or_script(world: World, ward: Pharmacy):
    desk = signed_in(world, ward.org, ward.users[A])
    for path in ("/console/nurses", f"/console/nurses/{ward.nurse.id}", "/console/patients",
                 f"/console/patients/{ward.patient_id}",
                 f"/console/visits/{ward.rounds['ann'].visit_id}/monitoring-record"):
        html = _page(desk, path)
        assert " style=" not in html and "<script>" not in html, path
        assert html.count("<h1>") == 1, path
        assert '<th scope="col"' in html or "<table" not in html, path
