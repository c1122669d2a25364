"""What a safeguard rule reports: a finding about a subject, its severity and its evidence."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

EvidenceValue = str | int | Decimal
KeyPart = str | int


class Severity(StrEnum):
    """How urgently a finding needs a reviewer, from info up to critical."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Return the position on the scale: 0 for info up to 4 for critical."""
        return list(Severity).index(self)

    # str would compare alphabetically ("critical" < "high"); compare by rank instead.
    def __lt__(self, other: object) -> bool:
        return self.rank < _rank(other) if isinstance(other, str) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.rank <= _rank(other) if isinstance(other, str) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self.rank > _rank(other) if isinstance(other, str) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self.rank >= _rank(other) if isinstance(other, str) else NotImplemented


def _rank(other: str) -> int:
    # A plain string is read as a severity, so "high" compares by rank, and "urgent" is refused.
    return Severity(other).rank


class SubjectKind(StrEnum):
    """What sort of thing a finding is about."""

    PATIENT = "patient"
    NURSE = "nurse"
    LOT = "lot"
    VISIT = "visit"
    DEVICE = "device"
    ORGANISATION = "organisation"
    # A treatment plan (its id), and the prescriber (a user id) who writes plans.
    PLAN = "plan"
    PRESCRIBER = "prescriber"
    # The engine's own findings about a rule that failed to run are about that rule.
    RULE = "rule"


@dataclass(frozen=True)
class Subject:
    """Name the one thing a finding is about: its kind and its id."""

    kind: SubjectKind
    id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SubjectKind(self.kind))
        if not self.id:
            raise ValueError("a subject needs an id")


def dedup_key(rule_id: str, subject: Subject, parts: tuple[KeyPart, ...] = ()) -> str:
    """Return a fixed-length key that is the same for the same rule, subject and parts."""
    for part in parts:
        if not isinstance(part, KeyPart):
            raise TypeError(f"key parts are str or int, not {type(part).__name__}")
    # The rule version stays out: a revised rule must not reopen a flag for the same occurrence.
    # JSON keeps parts apart unambiguously: ("a,b",) differs from ("a", "b"), and 1 from "1".
    identity = json.dumps([rule_id, subject.kind.value, subject.id, *parts],
                          separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()


@dataclass(frozen=True)
class Finding:
    """One thing a rule flagged: about whom, how severe, in words, and the evidence behind it."""

    rule_id: str
    rule_version: int
    severity: Severity
    subject: Subject
    summary: str
    evidence: Mapping[str, EvidenceValue] = field(hash=False)
    dedup_key: str
    shadow: bool = False
    # The event this finding saw (a dose, a check-in, a refusal), when its case gathers many:
    # the dedup key names the case (rule and root cause), this names one occurrence of it, so a
    # case counts distinct events and a re-check of the same event counts nothing.
    occurrence: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))
        if not self.summary.strip():
            raise ValueError("a finding needs a summary a reviewer can read")
        for name, value in self.evidence.items():
            # Floats would blur doses and counts (0.1 mg/kg is not 0.1000000000000000055…).
            if not isinstance(value, EvidenceValue):
                raise TypeError(f"evidence {name!r} is {type(value).__name__}; "
                                "use str, int or Decimal")
        # A private copy behind a read-only view: nobody can change what was found afterwards.
        object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))

    @property
    def occurrence_key(self) -> str:
        """Return what identifies the event seen: its occurrence, else the case itself."""
        return self.occurrence or self.dedup_key


# How many distinct occurrences of one case raise its severity one step, then two: the same
# out-of-range home, the same refusal, the same shortfall, again and again, is itself a signal.
ESCALATION_STEPS = ("escalation_occurrences_first", "escalation_occurrences_second")


def escalated(severity: Severity, occurrences: int, steps: tuple[int, ...],
              ceiling: Severity = Severity.HIGH) -> Severity:
    """Return `severity` raised one step per threshold in `steps` that `occurrences` reached.

    Repetition alone never makes a case critical (`ceiling`): critical stays what a rule
    itself judges critical; a case already above the ceiling keeps its own severity.
    """
    reached = sum(1 for step in steps if step and occurrences >= step)
    if not reached or severity >= ceiling:
        return severity
    return list(Severity)[min(severity.rank + reached, ceiling.rank)]
