"""Rules as data beside their checks, registered once and switched per organisation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from safeguards.findings import EvidenceValue, Finding, KeyPart, Severity, Subject, dedup_key
from safeguards.policy import Policy

RULE_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

Check = Callable[[Any, Policy], Iterable[Finding]]


class Mode(StrEnum):
    """Whether a rule runs, and whether its findings reach reviewers."""

    ENABLED = "enabled"
    # Runs and records findings marked shadow, so a new or retuned rule can be judged first.
    SHADOW = "shadow"
    DISABLED = "disabled"


class Cadence(StrEnum):
    """When a rule runs: as each fact is written, or over the population at night."""

    # One event and its neighbours decide it (a dose, its visit, the patient's recent doses).
    EVENT = "event"
    # It compares people or counts over weeks: the nightly scan runs it over the window.
    POPULATION = "population"


class DuplicateRule(ValueError):
    """A rule id is registered twice."""


class UnknownRule(LookupError):
    """No rule is registered under this id."""


@dataclass(frozen=True)
class RuleMeta:
    """Describe a rule: what it flags, how severe, why, on what authority, and how it runs."""

    id: str
    version: int
    title: str
    severity: Severity
    rationale: str
    source: str
    mode: Mode
    cadence: Cadence = Cadence.EVENT

    def __post_init__(self) -> None:
        if not RULE_ID.match(self.id):
            raise ValueError(f"rule id {self.id!r} must be dotted lowercase, e.g. dosing.ceiling")
        if self.version < 1:
            raise ValueError(f"rule {self.id} needs a version of at least 1")
        object.__setattr__(self, "severity", Severity(self.severity))
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "cadence", Cadence(self.cadence))

    def finding(self, subject: Subject, summary: str, evidence: Mapping[str, EvidenceValue],
                key: tuple[KeyPart, ...] = (), severity: Severity | None = None,
                occurrence: KeyPart | None = None) -> Finding:
        """Return this rule's finding about `subject`, identified for de-duplication by `key`.

        `key` names the case (the root cause beyond the subject); `occurrence`, when a case
        gathers many events, names the one event seen (a dose id, a check-in id).
        """
        return Finding(rule_id=self.id, rule_version=self.version,
                       severity=severity or self.severity, subject=subject, summary=summary,
                       evidence=evidence, dedup_key=dedup_key(self.id, subject, key),
                       occurrence=None if occurrence is None else str(occurrence))


@dataclass(frozen=True)
class Rule:
    """A rule's metadata paired with its pure check of facts under a policy."""

    meta: RuleMeta
    check: Check


class Registry:
    """Hold rules by id, in registration order, with modes an organisation may override."""

    def __init__(self, rules: Iterable[Rule] = (), modes: Mapping[str, Mode] | None = None):
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            self.add(rule)
        self._modes: dict[str, Mode] = {}
        for rule_id, mode in (modes or {}).items():
            self.get(rule_id)
            self._modes[rule_id] = Mode(mode)

    def add(self, rule: Rule) -> None:
        """Register `rule`, refusing an id that is already taken."""
        if rule.meta.id in self._rules:
            raise DuplicateRule(f"rule {rule.meta.id} is already registered")
        self._rules[rule.meta.id] = rule

    def rule(self, meta: RuleMeta) -> Callable[[Check], Check]:
        """Register the decorated function as the check of the rule `meta` describes."""

        def register(check: Check) -> Check:
            self.add(Rule(meta, check))
            return check

        return register

    def get(self, rule_id: str) -> Rule:
        """Return the rule registered under `rule_id`."""
        try:
            return self._rules[rule_id]
        except KeyError:
            raise UnknownRule(f"no rule {rule_id!r} is registered") from None

    def mode(self, rule_id: str) -> Mode:
        """Return how `rule_id` runs here: its override if one is set, else its own mode."""
        return self._modes.get(rule_id) or self.get(rule_id).meta.mode

    def with_modes(self, overrides: Mapping[str, Mode]) -> Registry:
        """Return these rules with `overrides` on top, leaving this registry as it is."""
        return Registry(self._rules.values(), {**self._modes, **overrides})

    def of_cadence(self, cadence: Cadence) -> Registry:
        """Return only the rules that run at `cadence`, with their modes."""
        rules = [rule for rule in self._rules.values() if rule.meta.cadence is cadence]
        return Registry(rules, {rule.meta.id: self._modes[rule.meta.id] for rule in rules
                                if rule.meta.id in self._modes})

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())
