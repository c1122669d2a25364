"""Pure rules over plain facts that flag risks for a reviewer, apart from the app and database."""

from safeguards.engine import RULE_ERROR, run
from safeguards.facts import (
    BagHolding,
    BagShift,
    Count,
    DeviceClock,
    Dose,
    EvvEvent,
    Facts,
    LedgerBreak,
    Loss,
    NurseActivity,
    Phase,
    QuarantinedEvent,
    Visit,
    Waste,
    WitnessPair,
)
from safeguards.findings import Finding, Severity, Subject, SubjectKind, dedup_key
from safeguards.policy import DEFAULT_THRESHOLDS, Policy, Threshold, UnknownThreshold
from safeguards.registry import Cadence, DuplicateRule, Mode, Registry, Rule, RuleMeta, UnknownRule
from safeguards.rules import ALL
from safeguards.rules.monitoring import SessionFacts

__all__ = [
    "ALL",
    "DEFAULT_THRESHOLDS",
    "RULE_ERROR",
    "BagHolding",
    "BagShift",
    "Cadence",
    "Count",
    "DeviceClock",
    "Dose",
    "DuplicateRule",
    "EvvEvent",
    "Facts",
    "Finding",
    "LedgerBreak",
    "Loss",
    "Mode",
    "NurseActivity",
    "Phase",
    "Policy",
    "QuarantinedEvent",
    "Registry",
    "Rule",
    "RuleMeta",
    "SessionFacts",
    "Severity",
    "Subject",
    "SubjectKind",
    "Threshold",
    "UnknownRule",
    "UnknownThreshold",
    "Visit",
    "Waste",
    "WitnessPair",
    "dedup_key",
    "run",
]
