"""One case per cause: a flag counts the distinct occurrences of its case, escalates with them,
reopens when it gets worse, and refused custody writes are facts the rules see."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.custody.models import CustodyRefusal
from backend.flags.models import Flag, FlagOccurrence
from backend.flags.service import raise_flags
from backend.scan import service as scan
from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.rules.frequency import INTERVAL
from tests.backend.console.conftest import signed_in
from tests.backend.custody.test_custody_workflows import _count
from tests.factories import Pharmacy, World

C = Role.COMPLIANCE


def _too_soon(patient_id: str, nurse_id: str, dose_number: int,
              severity: Severity | None = None) -> Finding:
    """Return the interval rule's finding for one dose of the patient's case with the nurse."""
    return INTERVAL.finding(
        Subject(SubjectKind.PATIENT, patient_id),
        f"A dose was given 24.0 h after the previous one (dose {dose_number}).",
        {"patient_id": patient_id, "nurse_id": nurse_id, "dose_id": f"dose-{dose_number}"},
        key=(nurse_id,), occurrence=f"dose-{dose_number}", severity=severity)


class Cases:
    """A clinic whose flags the test raises as the scan would, and reads through the API."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pharmacy = Pharmacy(world)
        self.org = self.pharmacy.org
        self.patient_id, self.nurse_id = self.pharmacy.patient_id, str(self.pharmacy.nurse.id)

    def raise_(self, *numbers: int, severity: Severity | None = None) -> None:
        """Raise one finding per dose number in one run, as a scan does, and commit."""
        raise_flags(self.world.session, self.world.rt.clock.now(), self.org.id,
                    [_too_soon(self.patient_id, self.nurse_id, n, severity) for n in numbers])
        self.world.commit()

    def flags(self) -> list[dict]:
        """Return the organisation's live queue of interval flags."""
        response = self.world.client.get("/api/v1/flags", headers=self.pharmacy.as_(C),
                                         query_string={"rule": INTERVAL.id})
        assert response.status_code == 200, response.json
        return response.json

    def flag(self, flag_id: str) -> dict:
        """Return one flag with its history and occurrences."""
        response = self.world.client.get(f"/api/v1/flags/{flag_id}",
                                         headers=self.pharmacy.as_(C))
        assert response.status_code == 200, response.json
        return response.json

    def review(self, flag_id: str, step: str, body: dict) -> dict:
        """Take a review step as the compliance officer."""
        response = self.world.client.post(f"/api/v1/flags/{flag_id}/{step}",
                                          headers=self.pharmacy.as_(C), json=body)
        assert response.status_code == 200, response.json
        return response.json


@pytest.fixture
def cases(world: World) -> Cases:
    return Cases(world)


FLOOD_CASES = [
    # (doses raised in each run, the case's occurrences after the runs)
    ("one dose", [[1]], 1),
    ("a flood of twelve doses in one run", [list(range(1, 13))], 12),
    ("a flood over three runs", [[1, 2], [3, 4, 5], [6]], 6),
    ("each night re-finds the same doses", [[1, 2, 3], [1, 2, 3], [1, 2, 3]], 3),
    ("the nightly window moves on", [[1, 2, 3], [2, 3, 4], [3, 4, 5]], 5),
]


@pytest.mark.parametrize(("runs", "occurrences"), [c[1:] for c in FLOOD_CASES],
                         ids=[c[0] for c in FLOOD_CASES])
def test_a_flood_under_one_cause_is_one_flag_counting_distinct_occurrences(cases, runs,
                                                                          occurrences):
    for numbers in runs:
        cases.raise_(*numbers)
        cases.world.rt.clock.advance(days=1)
    [queued] = cases.flags()
    assert queued["occurrences"] == occurrences
    flag = cases.flag(queued["id"])
    assert len(flag["occurrence_list"]) == occurrences
    # The history holds the first raise and one step per new occurrence, not the re-checks.
    assert len(flag["events"]) == occurrences
    latest = max(n for numbers in runs for n in numbers)
    assert flag["evidence"]["dose_id"] == flag["occurrence_key"] == f"dose-{latest}"
    new = [event["detail"]["occurrence_key"] for event in flag["events"][1:]]
    assert len(new) == len(set(new)) == occurrences - 1


def test_the_console_shows_cases_with_their_occurrences(cases):
    cases.raise_(*range(1, 6))
    [queued] = cases.flags()
    desk = signed_in(cases.world, cases.org, cases.pharmacy.users[C])
    queue = re.sub(r"\s+", " ", desk.get("/console/flags").get_data(as_text=True))
    assert "Occurrences" in queue
    assert re.search(r'class="num"[^>]*>5</td>', queue)
    page = re.sub(r"\s+", " ", desk.get(f"/console/flags/{queued['id']}").get_data(as_text=True))
    assert "5 occurrences of this case" in page
    assert "the evidence below is of the latest, <code>dose-5</code>" in page
    assert all(f"<code>dose-{n}</code>" in page for n in range(1, 6))


def test_the_nightly_rescan_does_not_inflate_occurrences(cases):
    cases.raise_(1, 2)
    [flag] = cases.flags()
    events = len(cases.flag(flag["id"])["events"])
    for _night in range(3):
        cases.world.rt.clock.advance(days=1)
        cases.raise_(1, 2)
    again = cases.flag(flag["id"])
    assert (again["occurrences"], len(again["events"])) == (2, events)
    assert again["last_seen_at"] > flag["last_seen_at"]
    stored = cases.world.session.scalar(select(func.count()).select_from(FlagOccurrence).where(
        FlagOccurrence.flag_id == uuid.UUID(flag["id"])))
    assert stored == 2


ESCALATION_CASES = [
    # (occurrences, severity of a HIGH-less rule raised at LOW: 3 → medium, 6 → high)
    (2, "low"),
    (3, "medium"),
    (5, "medium"),
    (6, "high"),
    (9, "high"),
]


@pytest.mark.parametrize(("occurrences", "severity"), ESCALATION_CASES)
def test_repetition_raises_the_case_s_severity(cases, occurrences, severity):
    cases.raise_(*range(1, occurrences + 1), severity=Severity.LOW)
    [flag] = cases.flags()
    assert (flag["occurrences"], flag["severity"]) == (occurrences, severity)
    if severity != "low":
        assert f"Repeated: {occurrences} distinct occurrences" in flag["summary"]


def _resolve(cases: Cases, flag_id: str) -> None:
    cases.review(flag_id, "assign", {"assignee_id": str(cases.pharmacy.users[C].id)})
    cases.review(flag_id, "resolve", {"resolution": "justified", "note": "Phase change."})


def test_a_resolved_case_stays_resolved_until_it_gets_more_severe(cases):
    cases.raise_(1, 2, severity=Severity.LOW)
    [flag] = cases.flags()
    _resolve(cases, flag["id"])
    # A re-check and a new occurrence at the same severity leave the verdict standing.
    cases.raise_(1, 2, severity=Severity.LOW)
    assert cases.flag(flag["id"])["status"] == "resolved"
    # The third occurrence reaches the first step: the case is worse, so it reopens.
    cases.raise_(3, severity=Severity.LOW)
    reopened = cases.flag(flag["id"])
    assert (reopened["status"], reopened["severity"], reopened["occurrences"]) == (
        "open", "medium", 3)
    assert reopened["events"][-1]["action"] == "reopened"
    assert reopened["evidence"]["dose_id"] == "dose-3"


def test_a_more_severe_occurrence_reopens_a_resolved_case(cases):
    cases.raise_(1, severity=Severity.LOW)
    [flag] = cases.flags()
    _resolve(cases, flag["id"])
    cases.raise_(2, severity=Severity.CRITICAL)
    reopened = cases.flag(flag["id"])
    assert (reopened["status"], reopened["severity"], reopened["occurrences"]) == (
        "open", "critical", 2)


def test_a_case_keeps_its_worst_severity_while_open(cases):
    cases.raise_(1, severity=Severity.HIGH)
    cases.raise_(2, severity=Severity.LOW)
    [flag] = cases.flags()
    assert (flag["severity"], flag["evidence"]["dose_id"]) == ("high", "dose-2")


# Refused custody writes: kept after the rollback, and judged.


def _wrong_seal_return(pharmacy: Pharmacy):
    return pharmacy.post(Role.NURSE, {"kind": "return", "quantity_ug": 10_000,
                                      "details": {"seal_id": "NOT-HER-KIT"}})


REFUSED_CASES = [
    # (wrong-seal returns refused, whether the refusal flag is raised)
    (2, False),
    (3, True),
]


@pytest.mark.parametrize(("tries", "flagged"), REFUSED_CASES)
def test_repeated_wrong_seal_returns_are_stored_and_flagged(world: World, tries, flagged):
    pharmacy = Pharmacy(world)
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000, seal="S-1").status_code == 201
    for _try in range(tries):
        refused = _wrong_seal_return(pharmacy)
        assert refused.status_code == 409, refused.json
        assert refused.json["error"]["code"] == "seal_mismatch"
    stored = list(world.session.scalars(select(CustodyRefusal).where(
        CustodyRefusal.organisation_id == pharmacy.org.id)))
    assert len(stored) == tries
    assert {(row.code, row.kind, row.nurse_id, row.holder, row.lot, row.quantity_ug)
            for row in stored} == {("seal_mismatch", "return", pharmacy.nurse.id,
                                    f"bag:{pharmacy.nurse.id}", "L1", 10_000)}
    flags = list(world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id == "custody.refusals_repeated")))
    assert len(flags) == (1 if flagged else 0)
    if flagged:
        [flag] = flags
        assert (flag.nurse_id, flag.severity, flag.evidence["refusals"]) == (
            pharmacy.nurse.id, "medium", tries)
    # The refused writes moved nothing: the kit is still in the bag.
    balances = pharmacy.client.get("/api/v1/custody/balances",
                                   headers=pharmacy.as_(Role.PHARMACIST)).json
    assert {(b["holder"], b["quantity_ug"]) for b in balances
            if b["holder"].startswith("bag:")} == {(f"bag:{pharmacy.nurse.id}", 100_000)}


def test_a_transfer_refused_for_too_little_stock_is_kept_too(world: World):
    pharmacy = Pharmacy(world)
    colleague = world.user(pharmacy.org, Role.NURSE)
    assert pharmacy.receive(1_000_000).status_code == 201
    refused = pharmacy.post(Role.NURSE, {"kind": "transfer", "quantity_ug": 10_000,
                                         "nurse_id": str(colleague.id)})
    assert refused.status_code == 409, refused.json
    [row] = world.session.scalars(select(CustodyRefusal).where(
        CustodyRefusal.organisation_id == pharmacy.org.id))
    assert (row.code, row.kind, row.nurse_id) == ("insufficient_stock", "transfer",
                                                  pharmacy.nurse.id)


# Unreturned stock, judged per dispense.


def test_stock_kept_after_a_cancelled_visit_is_flagged_while_another_visit_is_open(
        world: World):
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    today = pharmacy.schedule("2026-11-02T18:00:00+00:00")
    later = pharmacy.schedule("2026-11-09T18:00:00+00:00")
    assert (today.status_code, later.status_code) == (201, 201), (today.json, later.json)
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000, seal="S-1").status_code == 201
    clock = world.rt.clock
    clock.advance(hours=2)
    cancelled = pharmacy.client.post(f"/api/v1/visits/{today.json['id']}/cancel",
                                     headers=pharmacy.as_(Role.NURSE),
                                     json={"reason": "Patient not home"})
    assert cancelled.status_code == 200, cancelled.json
    cancelled_at = clock.now()
    clock.set(cancelled_at + timedelta(hours=2, minutes=-1))
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    assert _unreturned(world, pharmacy) == []
    clock.set(cancelled_at + timedelta(hours=2, minutes=1))
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    [flag] = _unreturned(world, pharmacy)
    assert (flag.nurse_id, flag.evidence["quantity_ug"], flag.evidence["seal_id"]) == (
        pharmacy.nurse.id, 100_000, "S-1")
    # The next night finds it again: still one flag, one occurrence.
    clock.advance(days=1)
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    [again] = _unreturned(world, pharmacy)
    assert (again.id, again.occurrences) == (flag.id, 1)


def test_a_kit_is_not_due_while_its_own_visit_is_open(world: World):
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    assert pharmacy.schedule("2026-11-02T18:00:00+00:00").status_code == 201
    assert pharmacy.receive(1_000_000).status_code == 201
    assert pharmacy.dispense(100_000, seal="S-1").status_code == 201
    world.rt.clock.advance(hours=3)
    scan.scan_organisation(world.session, world.rt, pharmacy.org.id)
    assert _unreturned(world, pharmacy) == []


def _unreturned(world: World, pharmacy: Pharmacy) -> list[Flag]:
    return list(world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id == "custody.unreturned_stock")))


# The same shortfall again: a holder's lot counted short is one case that grows.


def test_repeated_shortfalls_of_one_lot_are_one_case_that_escalates(world: World):
    pharmacy = Pharmacy(world)
    assert pharmacy.receive(1_000_000).status_code == 201
    counted = []
    for short in (1_000, 2_000, 3_000):
        world.rt.clock.advance(days=1)
        response = _count(pharmacy, "vault", {"L1": 1_000_000 - short})
        assert response.status_code == 201, response.json
        counted.append(response.json)
    [flag] = world.session.scalars(select(Flag).where(
        Flag.organisation_id == pharmacy.org.id, Flag.rule_id == "custody.count_discrepancy"))
    assert (flag.occurrences, flag.evidence["difference_ug"]) == (3, -3_000)
    # Each count names the case that holds it.
    assert {line["flag_id"] for count in counted for line in count["lots"]} == {str(flag.id)}
    assert flag.severity == "high"
