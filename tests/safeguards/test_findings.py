"""Severity order, subjects, de-duplication keys and the immutability of findings."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from safeguards import Finding, Severity, Subject, SubjectKind, dedup_key
from safeguards.findings import escalated

VISIT = Subject(SubjectKind.VISIT, "v-1")


@pytest.mark.parametrize(("lower", "higher"), [
    (Severity.INFO, Severity.LOW),
    (Severity.LOW, Severity.MEDIUM),
    (Severity.MEDIUM, Severity.HIGH),
    (Severity.HIGH, Severity.CRITICAL),
    (Severity.INFO, Severity.CRITICAL),
    (Severity.HIGH, "critical"),  # alphabetically "critical" < "high": the rank must win
    ("medium", Severity.HIGH),
])
def test_severity_compares_by_rank(lower, higher):
    assert lower < higher
    assert lower <= higher
    assert higher > lower
    assert higher >= lower
    assert not higher < lower


def test_severity_sorts_from_info_to_critical():
    assert sorted(Severity, reverse=True)[0] is Severity.CRITICAL
    assert max([Severity.HIGH, Severity.CRITICAL, Severity.MEDIUM]) is Severity.CRITICAL


def test_severity_refuses_comparison_with_unknown_word():
    with pytest.raises(ValueError, match="urgent"):
        assert Severity.HIGH < "urgent"


@pytest.mark.parametrize(("kind", "subject_id", "error"), [
    ("patient", "p-1", None),
    ("organisation", "o-1", None),
    ("pharmacist", "x-1", ValueError),
    ("nurse", "", ValueError),
])
def test_subject_accepts_known_kinds_only(kind, subject_id, error):
    if error:
        with pytest.raises(error):
            Subject(kind, subject_id)
    else:
        assert Subject(kind, subject_id).kind is SubjectKind(kind)


@pytest.mark.parametrize(("first", "second"), [
    (("dosing.ceiling", VISIT, ("dose-1",)), ("dosing.ceiling", VISIT, ("dose-1",))),
    (("dosing.ceiling", VISIT, ()), ("dosing.ceiling", Subject("visit", "v-1"), ())),
])
def test_dedup_key_is_stable_for_the_same_identity(first, second):
    assert dedup_key(*first) == dedup_key(*second)


@pytest.mark.parametrize("other", [
    ("dosing.creep", VISIT, ("dose-1",)),                       # another rule
    ("dosing.ceiling", Subject("visit", "v-2"), ("dose-1",)),   # another subject id
    ("dosing.ceiling", Subject("patient", "v-1"), ("dose-1",)),  # another subject kind
    ("dosing.ceiling", VISIT, ("dose-2",)),                     # another part
    ("dosing.ceiling", VISIT, ("dose-1", "dose-2")),            # an extra part
    ("dosing.ceiling", VISIT, ()),                              # no part
])
def test_dedup_key_differs_when_identity_differs(other):
    assert dedup_key("dosing.ceiling", VISIT, ("dose-1",)) != dedup_key(*other)


@pytest.mark.parametrize(("left", "right"), [
    (("a,b",), ("a", "b")),   # a separator inside a part must not merge parts
    ((1,), ("1",)),           # an int is not its string
    (("a", "b"), ("b", "a")),  # order matters
])
def test_dedup_key_keeps_parts_apart(left, right):
    assert dedup_key("custody.bag", VISIT, left) != dedup_key("custody.bag", VISIT, right)


def test_dedup_key_is_fixed_length_hex():
    keys = {dedup_key("waste.rate", VISIT, ("x" * n,)) for n in (0, 1, 1000)}
    assert {len(key) for key in keys} == {64}
    assert all(int(key, 16) >= 0 for key in keys)


@pytest.mark.parametrize("part", [1.5, Decimal("1.5"), None])
def test_dedup_key_refuses_parts_that_are_not_str_or_int(part):
    with pytest.raises(TypeError):
        dedup_key("dosing.ceiling", VISIT, (part,))


def finding(**changes) -> Finding:
    """Return a valid finding, with `changes` applied."""
    fields = {"rule_id": "dosing.ceiling", "rule_version": 1, "severity": Severity.HIGH,
              "subject": VISIT, "summary": "Dose of 1.2 mg/kg is above the 1.0 mg/kg ceiling.",
              "evidence": {"dose_id": "d-1", "mg_per_kg": Decimal("1.2")},
              "dedup_key": dedup_key("dosing.ceiling", VISIT, ("d-1",))}
    return Finding(**(fields | changes))


def test_finding_evidence_is_a_read_only_copy():
    evidence = {"dose_id": "d-1"}
    flagged = finding(evidence=evidence)
    evidence["dose_id"] = "d-2"
    assert flagged.evidence["dose_id"] == "d-1"
    with pytest.raises(TypeError):
        flagged.evidence["dose_id"] = "d-3"


@pytest.mark.parametrize(("changes", "error"), [
    ({"evidence": {"mg_per_kg": 1.2}}, TypeError),
    ({"evidence": {"dose": None}}, TypeError),
    ({"summary": "  "}, ValueError),
    ({"severity": "urgent"}, ValueError),
])
def test_finding_refuses_bad_fields(changes, error):
    with pytest.raises(error):
        finding(**changes)


def test_finding_reads_severity_from_its_name():
    assert finding(severity="critical").severity is Severity.CRITICAL


def test_a_finding_s_occurrence_defaults_to_its_case():
    finding = Finding(rule_id="test.rule", rule_version=1, severity=Severity.LOW,
                      subject=VISIT, summary="Seen.", evidence={}, dedup_key="case")
    assert finding.occurrence_key == "case"
    assert replace(finding, occurrence="dose-1").occurrence_key == "dose-1"


STEPS = (3, 6)


@pytest.mark.parametrize(("severity", "occurrences", "expected"), [
    (Severity.LOW, 1, Severity.LOW),
    (Severity.LOW, 2, Severity.LOW),  # just below the first step
    (Severity.LOW, 3, Severity.MEDIUM),  # at it
    (Severity.LOW, 5, Severity.MEDIUM),  # just below the second
    (Severity.LOW, 6, Severity.HIGH),  # at the second
    (Severity.LOW, 100, Severity.HIGH),
    (Severity.INFO, 6, Severity.MEDIUM),
    (Severity.MEDIUM, 3, Severity.HIGH),
    (Severity.MEDIUM, 6, Severity.HIGH),  # never critical by repetition
    (Severity.HIGH, 100, Severity.HIGH),
    (Severity.CRITICAL, 100, Severity.CRITICAL),
])
def test_repetition_raises_severity_step_by_step_up_to_high(severity, occurrences, expected):
    assert escalated(severity, occurrences, STEPS) is expected


def test_a_step_of_zero_is_no_step():
    assert escalated(Severity.LOW, 10, (0, 0)) is Severity.LOW
