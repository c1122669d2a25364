"""The monitoring rules run over every session of the facts, under each session's plan."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from safeguards.facts import Facts
from safeguards.findings import Finding
from safeguards.policy import Policy
from safeguards.registry import Registry, Rule
from safeguards.rules.indexes import plan_policies
from safeguards.rules.monitoring import MONITORING


def over_sessions(rule: Rule) -> Rule:
    """Return `rule`, a check of one session, as a check of every session in the facts."""

    def check(facts: Facts, policy: Policy) -> Iterator[Finding]:
        visits = {visit.id: visit for visit in facts.visits}
        plans = {dose.visit_id: dose.plan_version_id for dose in facts.doses}
        policy_of = plan_policies(facts, policy)
        for session in facts.sessions:
            visit = visits.get(session.visit_id)
            for finding in rule.check(session, policy_of(plans.get(session.visit_id))):
                # The session knows only its visit; the review queue filters on the people.
                yield finding if visit is None else replace(finding, evidence={
                    **finding.evidence, "nurse_id": visit.nurse_id,
                    "patient_id": visit.patient_id})

    check.__doc__ = rule.check.__doc__
    return Rule(rule.meta, check)


SESSIONS = Registry(over_sessions(rule) for rule in MONITORING)
