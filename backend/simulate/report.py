"""Score the flags of a simulated organisation against its ground truth.

A flag *names* an id when the id is its subject, its nurse or patient, or appears in any text of
its evidence (a holder `bag:<nurse id>` names the nurse); it names a ledger entry by id, or by
the `seq` its evidence gives (the chain verifier knows a broken entry by its place). Each
non-shadow flag is then exactly one of:

- **expected**: it is the labelled rule about a labelled honest clinical event (a real blood
  pressure spike is a correct alarm, not misuse);
- **injected**: it names a subject of a pattern at or after the time that pattern started;
- **early**: it names an injected subject, but before the pattern began;
- **false positive**: it names no injected subject at all.

Precision of a rule is (injected + expected) / its flags; its recall is the share of injected
patterns it caught. A pattern is caught when any injected flag names it; its delay runs from
its start to the first such flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.flags.models import Flag
from backend.simulate.truth import Pattern, Truth

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EXPECTED, INJECTED, EARLY, FALSE_POSITIVE = "expected", "injected", "early", "false_positive"
# The acceptance of issue 17: every pattern caught within 7 simulated days of its start, and
# at most 1 false positive per 1,000 honest sessions.
CATCH_WITHIN, FALSE_POSITIVES_PER_THOUSAND = timedelta(days=7), 1


@dataclass(frozen=True)
class FlagFact:
    """A stored flag as the report reads it."""

    rule_id: str
    subject_kind: str
    subject_id: str
    evidence: Mapping[str, Any]
    shadow: bool
    first_seen_at: datetime
    nurse_id: str | None = None
    patient_id: str | None = None

    def named_ids(self) -> set[str]:
        """Return every id the flag names: subject, nurse, patient, and ids in its evidence."""
        named = {value for value in (self.subject_id, self.nurse_id, self.patient_id) if value}
        for key, value in self.evidence.items():
            named.update(UUID_TEXT.findall(str(value).lower()))
            if key == "seq" or key.endswith("_seq"):
                named.add(f"seq:{value}")
        return named


@dataclass(frozen=True)
class PatternResult:
    """Whether and how fast one injected pattern was caught."""

    name: str
    started_at: datetime | None
    rule_ids: tuple[str, ...]
    first_flag_at: datetime | None

    @property
    def caught(self) -> bool:
        """Tell whether any flag named the pattern after it started."""
        return self.first_flag_at is not None

    @property
    def delay(self) -> timedelta | None:
        """Return the time from the pattern's start to its first flag."""
        if self.first_flag_at is None or self.started_at is None:
            return None
        return self.first_flag_at - self.started_at


@dataclass
class RuleStats:
    """One rule's flags by verdict, its precision and its recall."""

    rule_id: str
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (EXPECTED, INJECTED, EARLY, FALSE_POSITIVE), 0))
    patterns_caught: int = 0

    @property
    def flags(self) -> int:
        """Return how many flags the rule raised."""
        return sum(self.verdicts.values())

    @property
    def correct(self) -> int:
        """Return the flags that were right: on injected subjects or labelled events."""
        return self.verdicts[INJECTED] + self.verdicts[EXPECTED]


@dataclass(frozen=True)
class Report:
    """The scores of one simulation."""

    patterns: list[PatternResult]
    rules: list[RuleStats]
    shadow_rules: list[RuleStats]
    honest_sessions: int

    @property
    def false_positives(self) -> int:
        """Return the non-shadow flags that named no injected subject."""
        return sum(rule.verdicts[FALSE_POSITIVE] for rule in self.rules)

    @property
    def precision(self) -> Decimal | None:
        """Return correct flags over all non-shadow flags."""
        return ratio(sum(rule.correct for rule in self.rules),
                     sum(rule.flags for rule in self.rules))

    @property
    def recall(self) -> Decimal | None:
        """Return caught patterns over injected patterns."""
        return ratio(sum(result.caught for result in self.patterns), len(self.patterns))

    def per_thousand(self, flags: int) -> Decimal | None:
        """Return `flags` per 1,000 honest sessions."""
        return ratio(flags * 1000, self.honest_sessions)


def ratio(part: int, whole: int) -> Decimal | None:
    """Return part / whole to three places, or None when there is nothing to divide."""
    if not whole:
        return None
    return (Decimal(part) / whole).quantize(Decimal("0.001"), ROUND_HALF_UP)


def verdict(flag: FlagFact, truth: Truth) -> tuple[str, list[Pattern]]:
    """Return the flag's verdict and the patterns it caught."""
    named = flag.named_ids()
    if any(event.rule_id == flag.rule_id and event.visit_id in named
           for event in truth.expected):
        return EXPECTED, []
    touched = [pattern for pattern in truth.patterns if pattern.ids() & named]
    caught = [pattern for pattern in touched
              if pattern.started_at is not None and flag.first_seen_at >= pattern.started_at]
    if caught:
        return INJECTED, caught
    return (EARLY if touched else FALSE_POSITIVE), []


def _rule_stats(flags: Iterable[FlagFact], truth: Truth,
                firsts: dict[str, list[tuple[datetime, str]]] | None) -> list[RuleStats]:
    rules: dict[str, RuleStats] = {}
    caught_by: dict[str, set[str]] = {}
    for flag in flags:
        stats = rules.setdefault(flag.rule_id, RuleStats(flag.rule_id))
        kind, patterns = verdict(flag, truth)
        stats.verdicts[kind] += 1
        for pattern in patterns:
            caught_by.setdefault(flag.rule_id, set()).add(pattern.name)
            if firsts is not None:
                firsts.setdefault(pattern.name, []).append((flag.first_seen_at, flag.rule_id))
    for rule_id, names in caught_by.items():
        rules[rule_id].patterns_caught = len(names)
    return sorted(rules.values(), key=lambda stats: stats.rule_id)


def score(truth: Truth, flags: Iterable[FlagFact]) -> Report:
    """Score `flags` against `truth`: catches and delays, false positives, precision, recall."""
    flags = list(flags)
    firsts: dict[str, list[tuple[datetime, str]]] = {}
    rules = _rule_stats((flag for flag in flags if not flag.shadow), truth, firsts)
    shadow = _rule_stats((flag for flag in flags if flag.shadow), truth, None)
    patterns = []
    for pattern in truth.patterns:
        hits = sorted(firsts.get(pattern.name, []))
        patterns.append(PatternResult(
            pattern.name, pattern.started_at, tuple(sorted({rule for _, rule in hits})),
            hits[0][0] if hits else None))
    return Report(patterns, rules, shadow, truth.honest_sessions)


def _recall(stats: RuleStats, patterns: int) -> Decimal | None:
    return ratio(stats.patterns_caught, patterns)


def _duration(delay: timedelta | None) -> str:
    if delay is None:
        return "-"
    days, minutes = divmod(int(delay.total_seconds() // 60), 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days} d {hours} h" if days else f"{hours} h {minutes} min"


def _number(value: Decimal | None) -> str:
    return "n/a" if value is None else str(value)


def _rule_lines(title: str, rules: list[RuleStats], report: Report) -> list[str]:
    lines = [title, f"  {'rule':<44} {'flags':>6} {'inject':>6} {'expect':>6} {'early':>6} "
                    f"{'FP':>5} {'FP/1k':>7} {'prec':>6} {'recall':>6}"]
    for stats in rules:
        v = stats.verdicts
        lines.append(
            f"  {stats.rule_id:<44} {stats.flags:>6} {v[INJECTED]:>6} {v[EXPECTED]:>6} "
            f"{v[EARLY]:>6} {v[FALSE_POSITIVE]:>5} "
            f"{_number(report.per_thousand(v[FALSE_POSITIVE])):>7} "
            f"{_number(ratio(stats.correct, stats.flags)):>6} "
            f"{_number(_recall(stats, len(report.patterns))):>6}")
    return lines if rules else [title, "  (none)"]


def _days(delay: timedelta | None) -> str:
    return "-" if delay is None else f"{delay.total_seconds() / 86_400:.1f}"


def render(report: Report, truth: Truth) -> str:
    """Return the report as the text `vigil simulate --report` prints."""
    counts = ", ".join(f"{count} {name}" for name, count in truth.counts.items())
    lines = [f"simulation {truth.organisation}: seed {truth.seed}, {truth.days} days from "
             f"{truth.started_at.date().isoformat()}, generated in "
             f"{truth.generation_seconds:.1f} s", f"  {counts}",
             f"  population scans: {truth.scans} (nightly, as the scheduler runs them)",
             "", "injected patterns (days to catch: from the pattern's start to its first flag):"]
    for result in report.patterns:
        started = (result.started_at.astimezone(UTC).isoformat() if result.started_at
                   else "never acted")
        lines.append(f"  {result.name:<22} {'CAUGHT' if result.caught else 'missed':<7} "
                     f"after {_duration(result.delay):<12} ({_days(result.delay):>5} days) "
                     f"started {started}; rules: {', '.join(result.rule_ids) or '-'}")
    fast = sum(result.delay is not None and result.delay <= CATCH_WITHIN
               for result in report.patterns)
    per_thousand = report.per_thousand(report.false_positives)
    lines += [f"  caught within {CATCH_WITHIN.days} days of their start: {fast} of "
              f"{len(report.patterns)}",
              "", f"honest population: {report.honest_sessions} sessions, "
                  f"{report.false_positives} false positives "
                  f"({_number(per_thousand)} per 1,000 sessions; the target is at most "
                  f"{FALSE_POSITIVES_PER_THOUSAND})",
              *_rule_lines("rules (enabled):", report.rules, report),
              *_rule_lines("rules in shadow mode (not counted above):", report.shadow_rules,
                           report),
              f"overall: precision {_number(report.precision)}, recall "
              f"{_number(report.recall)}"]
    return "\n".join(lines)


def load_flags(session: Session, organisation_id: object) -> list[FlagFact]:
    """Return the organisation's stored flags as the report reads them."""
    flags = session.scalars(select(Flag).where(Flag.organisation_id == organisation_id))
    return [FlagFact(flag.rule_id, flag.subject_kind, flag.subject_id, flag.evidence or {},
                     flag.shadow, flag.first_seen_at, _text(flag.nurse_id),
                     _text(flag.patient_id)) for flag in flags]


def _text(value: object) -> str | None:
    return None if value is None else str(value)
