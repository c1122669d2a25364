"""Rule metadata, registration, lookup and per-organisation mode overrides."""

from __future__ import annotations

import pytest

from safeguards import DuplicateRule, Mode, Registry, RuleMeta, Severity, Subject, UnknownRule


def meta(rule_id: str = "monitoring.bp_hold", mode: Mode = Mode.ENABLED, **changes) -> RuleMeta:
    """Return valid metadata for a rule, with `changes` applied."""
    fields = {"id": rule_id, "version": 1, "title": "Dosed over a blood-pressure hold",
              "severity": Severity.HIGH, "rationale": "Ketamine raises blood pressure.",
              "source": "CLINICAL.md Monitoring", "mode": mode}
    return RuleMeta(**(fields | changes))


def no_findings(facts, policy):
    """Flag nothing."""
    return []


def registry_of(*metas: RuleMeta) -> Registry:
    """Return a registry holding a rule without findings for each of `metas`."""
    registry = Registry()
    for rule_meta in metas:
        registry.rule(rule_meta)(no_findings)
    return registry


@pytest.mark.parametrize(("changes", "error"), [
    ({"rule_id": "BP hold"}, ValueError),
    ({"rule_id": "bp_hold"}, ValueError),  # a family is required: family.name
    ({"version": 0}, ValueError),
    ({"severity": "urgent"}, ValueError),
    ({"mode": "paused"}, ValueError),
])
def test_rule_meta_refuses_bad_fields(changes, error):
    with pytest.raises(error):
        meta(**changes)


def test_decorator_registers_and_returns_the_check():
    registry = Registry()
    returned = registry.rule(meta())(no_findings)
    assert returned is no_findings
    assert registry.get("monitoring.bp_hold").check is no_findings
    assert [rule.meta.id for rule in registry] == ["monitoring.bp_hold"]


@pytest.mark.parametrize("second", [meta(), meta(version=2), meta(title="Another title")])
def test_duplicate_id_is_refused(second):
    registry = registry_of(meta())
    with pytest.raises(DuplicateRule, match=r"monitoring\.bp_hold"):
        registry.rule(second)(no_findings)


def test_unknown_id_is_refused():
    with pytest.raises(UnknownRule):
        Registry().get("dosing.ceiling")


@pytest.mark.parametrize(("own", "overrides", "expected"), [
    (Mode.ENABLED, {}, Mode.ENABLED),
    (Mode.ENABLED, {"monitoring.bp_hold": Mode.SHADOW}, Mode.SHADOW),
    (Mode.SHADOW, {"monitoring.bp_hold": "enabled"}, Mode.ENABLED),
    (Mode.ENABLED, {"monitoring.bp_hold": Mode.DISABLED}, Mode.DISABLED),
])
def test_an_organisation_overrides_a_rule_mode(own, overrides, expected):
    registry = registry_of(meta(mode=own))
    assert registry.with_modes(overrides).mode("monitoring.bp_hold") is expected
    assert registry.mode("monitoring.bp_hold") is own


def test_overrides_layer_on_earlier_overrides():
    registry = registry_of(meta(), meta("dosing.ceiling"))
    layered = (registry.with_modes({"monitoring.bp_hold": Mode.SHADOW})
               .with_modes({"dosing.ceiling": Mode.DISABLED}))
    assert layered.mode("monitoring.bp_hold") is Mode.SHADOW
    assert layered.mode("dosing.ceiling") is Mode.DISABLED


@pytest.mark.parametrize(("overrides", "error"), [
    ({"monitoring.bp_hod": Mode.SHADOW}, UnknownRule),
    ({"monitoring.bp_hold": "paused"}, ValueError),
])
def test_overrides_are_refused_for_unknown_rules_and_modes(overrides, error):
    with pytest.raises(error):
        registry_of(meta()).with_modes(overrides)


@pytest.mark.parametrize(("severity", "expected"), [
    (None, Severity.HIGH),
    (Severity.CRITICAL, Severity.CRITICAL),
])
def test_meta_builds_its_findings(severity, expected):
    subject = Subject("visit", "v-1")
    built = meta().finding(subject, "Dosed at 150/95 mmHg.", {"systolic": 150},
                           key=("v-1",), severity=severity)
    assert (built.rule_id, built.rule_version, built.severity) == (
        "monitoring.bp_hold", 1, expected)
    assert built.dedup_key == meta().finding(subject, "Other words.", {}, key=("v-1",)).dedup_key


def test_a_registry_splits_by_cadence_keeping_modes():
    from safeguards import ALL, Cadence

    with_mode = ALL.with_modes({"dosing.creep": Mode.SHADOW, "waste.late": Mode.DISABLED})
    population = with_mode.of_cadence(Cadence.POPULATION)
    events = with_mode.of_cadence(Cadence.EVENT)
    assert {rule.meta.id for rule in population} | {rule.meta.id for rule in events} == {
        rule.meta.id for rule in ALL}
    assert {"dosing.creep", "waste.rate_outlier", "waste.witness_pair",
            "custody.ledger_break"} <= {rule.meta.id for rule in population}
    assert "frequency.interval_below_min" in {rule.meta.id for rule in events}
    assert population.mode("dosing.creep") is Mode.SHADOW
    assert events.mode("waste.late") is Mode.DISABLED
