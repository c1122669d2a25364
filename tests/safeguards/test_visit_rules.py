"""Missed visits, frequency overrides, off-plan doses and doses the bag did not hold."""

from __future__ import annotations

import pytest

from safeguards.rules.visits import VISITS
from tests.safeguards.factories import dose, facts, found, ids, visit

MISSED_CASES = [
    ("completed", "completed", False),
    ("missed", "missed", True),
    ("scheduled", "scheduled", False),
    ("cancelled", "cancelled", False),
]


@pytest.mark.parametrize(("status", "expected"), [c[1:] for c in MISSED_CASES],
                         ids=[c[0] for c in MISSED_CASES])
def test_missed_visit_cases(status, expected):
    findings = found(VISITS, facts(visits=(visit(status=status, status_reason="no check-in"),)))
    assert ("visit.missed" in ids(findings)) is expected


def test_a_missed_visit_names_the_patient_nurse_and_reason():
    [finding] = found(VISITS, facts(visits=(visit(status="missed", status_reason="late"),)))
    assert finding.evidence["patient_id"] == "patient-1"
    assert finding.evidence["nurse_id"] == "nurse-1"
    assert finding.evidence["reason"] == "late"


OVERRIDE_CASES = [
    ("no override", {}, False),
    ("override", {"override": True, "override_reason": "relapse", "override_by_id": "rx-1"}, True),
    ("override, cancelled", {"override": True, "status": "cancelled"}, False),
    ("override, rescheduled", {"override": True, "status": "rescheduled"}, False),
    ("override, scheduled", {"override": True, "status": "scheduled"}, True),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in OVERRIDE_CASES],
                         ids=[c[0] for c in OVERRIDE_CASES])
def test_frequency_override_cases(fields, expected):
    findings = found(VISITS, facts(visits=(visit(**fields),)))
    assert ("scheduling.frequency_override" in ids(findings)) is expected


OFF_PLAN_CASES = [
    ("as planned", {}, False),
    ("another product", {"product_id": "product-2"}, True),
    ("another route", {"route": "IM"}, True),
    ("both", {"product_id": "product-2", "route": "IM"}, True),
    ("plan unknown", {"product_id": "product-2", "plan_product_id": None, "route": "IM",
                      "plan_route": None}, False),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in OFF_PLAN_CASES],
                         ids=[c[0] for c in OFF_PLAN_CASES])
def test_off_plan_product_cases(fields, expected):
    findings = found(VISITS, facts(doses=(dose(**fields),)))
    assert ("dosing.off_plan_product" in ids(findings)) is expected


def test_an_off_plan_dose_says_what_differs():
    [finding] = found(VISITS, facts(doses=(dose(route="IM"),)))
    assert "route" in finding.summary and "product" not in finding.summary.split("differs")[0]
    assert finding.subject.id == "visit-1"
    assert finding.evidence["plan_route"] == "IV"


@pytest.mark.parametrize(("entry", "expected"), [("entry-1", False), (None, True)])
def test_administer_discrepancy_cases(entry, expected):
    findings = found(VISITS, facts(doses=(dose(custody_entry_id=entry),)))
    assert ("custody.administer_discrepancy" in ids(findings)) is expected
