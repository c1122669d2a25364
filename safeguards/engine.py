"""Run the registered rules over facts: each in its mode, each failure contained, no duplicates."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from safeguards.findings import Finding, Severity, Subject, SubjectKind
from safeguards.policy import Policy
from safeguards.registry import Mode, Registry, Rule, RuleMeta

log = logging.getLogger(__name__)

RULE_ERROR = RuleMeta(
    id="engine.rule_error", version=1, title="A safeguard rule failed to run",
    severity=Severity.HIGH,
    rationale="A rule that crashes checks nothing; its silence must not pass for an all-clear.",
    source="DESIGN.md Safeguards", mode=Mode.ENABLED)


def run(registry: Registry, facts: Any, policy: Policy) -> list[Finding]:
    """Run every enabled and shadow rule over `facts`; return their findings, one per occurrence."""
    findings: list[Finding] = []
    for rule in registry:
        mode = registry.mode(rule.meta.id)
        if mode is Mode.DISABLED:
            continue
        found = _check(rule, facts, policy)
        if mode is Mode.SHADOW:
            found = [replace(finding, shadow=True) for finding in found]
        findings.extend(found)
    return _deduplicate(findings)


def _check(rule: Rule, facts: Any, policy: Policy) -> list[Finding]:
    found: list[Finding] = []
    try:
        for finding in rule.check(facts, policy):
            found.append(finding)
    except Exception as exc:
        # One broken rule must not silence the others; its failure becomes a finding instead.
        log.exception("safeguard rule %s v%d failed", rule.meta.id, rule.meta.version)
        found.append(_failure(rule.meta, exc))
    return found


def _failure(meta: RuleMeta, exc: Exception) -> Finding:
    exception = type(exc).__qualname__
    # The message stays in the log: it may quote facts, and evidence holds only ids and numbers.
    return RULE_ERROR.finding(
        Subject(SubjectKind.RULE, meta.id),
        f"Rule {meta.id} (v{meta.version}) failed with {exception}, so it checked nothing "
        "in this run. Check the server log for the error with an engineer; until it is "
        "fixed, check what the rule covers by hand.",
        {"rule_id": meta.id, "rule_version": meta.version, "exception": exception},
        key=(exception,))


def _deduplicate(findings: list[Finding]) -> list[Finding]:
    # One finding per occurrence of a case: a case's distinct events all reach its flag, which
    # counts them; the same event found twice in a run is kept once, at its most severe.
    kept: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        identity = (finding.dedup_key, finding.occurrence_key)
        held = kept.get(identity)
        if held is None or finding.severity > held.severity:
            kept[identity] = finding
    return list(kept.values())
