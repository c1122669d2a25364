"""Pure rules over plain facts that flag risks for a reviewer, apart from the app and database."""

from safeguards.engine import RULE_ERROR, run
from safeguards.findings import Finding, Severity, Subject, SubjectKind, dedup_key
from safeguards.policy import DEFAULT_THRESHOLDS, Policy, Threshold, UnknownThreshold
from safeguards.registry import DuplicateRule, Mode, Registry, Rule, RuleMeta, UnknownRule

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RULE_ERROR",
    "DuplicateRule",
    "Finding",
    "Mode",
    "Policy",
    "Registry",
    "Rule",
    "RuleMeta",
    "Severity",
    "Subject",
    "SubjectKind",
    "Threshold",
    "UnknownRule",
    "UnknownThreshold",
    "dedup_key",
    "run",
]
