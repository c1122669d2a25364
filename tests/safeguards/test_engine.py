"""Running rules: modes, a failing rule contained, findings de-duplicated."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import pytest

from safeguards import RULE_ERROR, Mode, Policy, Registry, RuleMeta, Severity, Subject, run

BP_HOLD = RuleMeta(
    id="monitoring.bp_hold", version=1, title="Dosed over the blood-pressure hold",
    severity=Severity.HIGH, rationale="Ketamine raises blood pressure; a high start is a risk.",
    source="CLINICAL.md Monitoring (practice)", mode=Mode.ENABLED)


@dataclass(frozen=True)
class Reading:
    """A pre-dose systolic reading at a visit."""

    visit_id: str
    systolic: int


def bp_over_hold(readings: list[Reading], policy: Policy):
    """Flag each visit dosed with a systolic pressure above the policy's hold."""
    hold = policy.value("bp_hold_systolic")
    for reading in readings:
        if reading.systolic > hold:
            yield BP_HOLD.finding(
                Subject("visit", reading.visit_id),
                f"Dosed at systolic {reading.systolic} mmHg, above the {hold} mmHg hold.",
                {"visit_id": reading.visit_id, "systolic": reading.systolic, "hold": hold},
                key=(reading.visit_id,))


def meta(rule_id: str, mode: Mode = Mode.ENABLED) -> RuleMeta:
    """Return metadata for a test rule."""
    return RuleMeta(id=rule_id, version=3, title="Test rule", severity=Severity.MEDIUM,
                    rationale="Exercises the engine.", source="tests", mode=mode)


def registry_of(*rules) -> Registry:
    """Return a registry of (metadata, check) pairs."""
    registry = Registry()
    for rule_meta, check in rules:
        registry.rule(rule_meta)(check)
    return registry


def failing(exception: Exception):
    """Return a check that raises `exception`."""

    def check(facts, policy):
        raise exception

    return check


HIGH_READING = [Reading("v-1", 150)]


@pytest.mark.parametrize(("readings", "overrides", "flagged"), [
    ([], {}, []),
    ([Reading("v-1", 140)], {}, []),
    ([Reading("v-1", 141)], {}, ["v-1"]),
    ([Reading("v-1", 141), Reading("v-2", 120), Reading("v-3", 170)], {}, ["v-1", "v-3"]),
    ([Reading("v-1", 141)], {"bp_hold_systolic": 150}, []),
])
def test_example_rule_flags_readings_over_the_policy_hold(readings, overrides, flagged):
    findings = run(registry_of((BP_HOLD, bp_over_hold)), readings,
                   Policy().with_overrides(overrides))
    assert [finding.subject.id for finding in findings] == flagged


@pytest.mark.parametrize(("own", "overrides", "shadows"), [
    (Mode.ENABLED, {}, [False]),
    (Mode.SHADOW, {}, [True]),
    (Mode.DISABLED, {}, []),
    (Mode.ENABLED, {"monitoring.bp_hold": Mode.SHADOW}, [True]),
    (Mode.ENABLED, {"monitoring.bp_hold": Mode.DISABLED}, []),
    (Mode.SHADOW, {"monitoring.bp_hold": Mode.ENABLED}, [False]),
])
def test_modes_decide_whether_and_how_findings_come_out(own, overrides, shadows):
    registry = registry_of((replace(BP_HOLD, mode=own), bp_over_hold)).with_modes(overrides)
    assert [finding.shadow for finding in run(registry, HIGH_READING, Policy())] == shadows


@pytest.mark.parametrize(("exception", "name"), [
    (ZeroDivisionError("division by zero"), "ZeroDivisionError"),
    (KeyError("bp_hold_systolic"), "KeyError"),
    (LookupError("patient Jane Doe"), "LookupError"),
])
def test_a_failing_rule_becomes_a_finding_and_others_still_run(exception, name, caplog):
    registry = registry_of((meta("test.broken"), failing(exception)), (BP_HOLD, bp_over_hold))
    with caplog.at_level(logging.ERROR, logger="safeguards.engine"):
        findings = run(registry, HIGH_READING, Policy())
    error, flagged = findings
    assert flagged.rule_id == "monitoring.bp_hold"
    assert (error.rule_id, error.severity, error.shadow) == (RULE_ERROR.id, Severity.HIGH, False)
    assert error.subject == Subject("rule", "test.broken")
    assert dict(error.evidence) == {"rule_id": "test.broken", "rule_version": 3,
                                    "exception": name}
    assert "test.broken" in error.summary
    assert ". Check the server log for the error" in error.summary
    assert "Jane" not in str(error)
    assert "test.broken" in caplog.text


def test_findings_yielded_before_a_failure_are_kept():
    def half_done(facts, policy):
        yield from bp_over_hold(facts, policy)
        raise RuntimeError("second pass broke")

    findings = run(registry_of((BP_HOLD, half_done)), HIGH_READING, Policy())
    assert [finding.rule_id for finding in findings] == ["monitoring.bp_hold", RULE_ERROR.id]


@pytest.mark.parametrize(("mode", "shadows"), [
    (Mode.ENABLED, [False]),
    (Mode.SHADOW, [True]),  # a rule on trial that crashes is news for its trial, not reviewers
    (Mode.DISABLED, []),
])
def test_a_failing_rule_reports_in_its_own_mode(mode, shadows):
    registry = registry_of((meta("test.broken", mode), failing(ValueError())))
    assert [finding.shadow for finding in run(registry, None, Policy())] == shadows


def test_each_failing_rule_reports_separately():
    registry = registry_of((meta("test.one"), failing(ValueError())),
                           (meta("test.two"), failing(ValueError())))
    findings = run(registry, None, Policy())
    assert [finding.subject.id for finding in findings] == ["test.one", "test.two"]


def repeated(severities: list[Severity]):
    """Return a check that reports the same occurrence once per severity."""
    rule_meta = meta("test.repeat")

    def check(facts, policy):
        for number, severity in enumerate(severities):
            yield rule_meta.finding(Subject("visit", "v-1"), f"Report number {number}.",
                                    {"number": number}, key=("v-1",), severity=severity)

    return rule_meta, check


@pytest.mark.parametrize(("severities", "kept"), [
    ([Severity.LOW], (Severity.LOW, 0)),
    ([Severity.LOW, Severity.CRITICAL, Severity.HIGH], (Severity.CRITICAL, 1)),
    ([Severity.HIGH, Severity.MEDIUM], (Severity.HIGH, 0)),
    ([Severity.MEDIUM, Severity.MEDIUM], (Severity.MEDIUM, 0)),  # a tie keeps the first
])
def test_duplicates_collapse_to_the_most_severe(severities, kept):
    findings = run(registry_of(repeated(severities)), None, Policy())
    assert [(finding.severity, finding.evidence["number"]) for finding in findings] == [kept]


def test_distinct_occurrences_are_all_kept():
    readings = [Reading("v-1", 150), Reading("v-2", 160), Reading("v-1", 150)]
    findings = run(registry_of((BP_HOLD, bp_over_hold)), readings, Policy())
    assert [finding.subject.id for finding in findings] == ["v-1", "v-2"]


def case_of(doses: list[tuple[str, Severity]]):
    """Return a check that reports each dose as an occurrence of one case about plan-1."""
    rule_meta = meta("test.case")

    def check(facts, policy):
        for dose_id, severity in doses:
            yield rule_meta.finding(Subject("patient", "patient-1"), f"Dose {dose_id}.",
                                    {"dose_id": dose_id}, key=("plan-1",), severity=severity,
                                    occurrence=dose_id)

    return rule_meta, check


@pytest.mark.parametrize(("doses", "kept"), [
    ([], []),
    ([("d-1", Severity.LOW)], [("d-1", Severity.LOW)]),
    # A flood under one cause: one case, every dose an occurrence of it.
    ([("d-1", Severity.LOW), ("d-2", Severity.LOW), ("d-3", Severity.LOW)],
     [("d-1", Severity.LOW), ("d-2", Severity.LOW), ("d-3", Severity.LOW)]),
    # The same dose found twice in a run is one occurrence, at its most severe.
    ([("d-1", Severity.LOW), ("d-1", Severity.HIGH), ("d-2", Severity.LOW)],
     [("d-1", Severity.HIGH), ("d-2", Severity.LOW)]),
])
def test_a_case_keeps_each_occurrence_once(doses, kept):
    findings = run(registry_of(case_of(doses)), None, Policy())
    assert [(f.occurrence, f.severity) for f in findings] == kept
    assert len({f.dedup_key for f in findings}) == min(len(kept), 1)
