"""The ground truth of a simulation: what was injected, into whom, from when; written as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `user_ids` names people who are not nurses (a pharmacist, a prescriber); `plan_ids` plans.
SUBJECT_KINDS = ("nurse_ids", "patient_ids", "device_ids", "visit_ids", "entry_ids",
                 "entry_seqs", "user_ids", "plan_ids")


@dataclass
class Pattern:
    """One injected misuse pattern: its name, what it touched, and when it first acted."""

    name: str
    description: str
    started_at: datetime | None = None
    subjects: dict[str, list[str]] = field(
        default_factory=lambda: {kind: [] for kind in SUBJECT_KINDS})
    sessions: int = 0
    amounts: dict[str, int] = field(default_factory=dict)

    def act(self, at: datetime, **ids: object) -> None:
        """Record that the pattern acted at `at` on the given subjects (kind → id or ids)."""
        at = at.astimezone(UTC)
        if self.started_at is None or at < self.started_at:
            self.started_at = at
        for kind, values in ids.items():
            named = self.subjects.setdefault(kind, [])
            for value in values if isinstance(values, list | tuple) else [values]:
                if value and str(value) not in named:
                    named.append(str(value))

    def add(self, amount: str, quantity_ug: int) -> None:
        """Add to one of the pattern's totals (integer micrograms or counts)."""
        self.amounts[amount] = self.amounts.get(amount, 0) + quantity_ug

    def ids(self) -> set[str]:
        """Return every id the pattern touched; a ledger entry's seq reads `seq:<n>`."""
        return {f"seq:{value}" if kind == "entry_seqs" else value
                for kind, values in self.subjects.items() for value in values}


@dataclass(frozen=True)
class ExpectedEvent:
    """An honest clinical event that a rule is right to flag: it is not misuse."""

    visit_id: str
    rule_id: str
    why: str


@dataclass
class Truth:
    """Everything the report needs to know that the database must not say."""

    organisation: str
    seed: int
    nurses: int
    patients: int
    days: int
    started_at: datetime
    ended_at: datetime | None = None
    patterns: list[Pattern] = field(default_factory=list)
    expected: list[ExpectedEvent] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    honest_sessions: int = 0
    scans: int = 0
    generation_seconds: float = 0.0

    def pattern(self, name: str) -> Pattern:
        """Return the pattern called `name`."""
        return next(pattern for pattern in self.patterns if pattern.name == name)

    def injected_ids(self) -> set[str]:
        """Return every id any pattern touched."""
        return {value for pattern in self.patterns for value in pattern.ids()}


def truth_path(instance: Path, slug: str) -> Path:
    """Return where the ground truth of organisation `slug` is kept."""
    return instance / "simulations" / f"{slug}.json"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def write(truth: Truth, path: Path) -> None:
    """Write `truth` as indented JSON at `path`, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(asdict(truth)), indent=2) + "\n")


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def read(path: Path) -> Truth:
    """Read the ground truth written by `write`."""
    raw = json.loads(path.read_text())
    patterns = [Pattern(**{**item, "started_at": _when(item["started_at"])})
                for item in raw.pop("patterns")]
    expected = [ExpectedEvent(**item) for item in raw.pop("expected")]
    return Truth(**{**raw, "started_at": _when(raw["started_at"]),
                    "ended_at": _when(raw["ended_at"])}, patterns=patterns, expected=expected)
