"""The rating scales a session records, item by item, and the totals Vigil computes itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backend.errors import InvalidField


@dataclass(frozen=True)
class Instrument:
    """A scale: which items it has and the range each item is scored in."""

    name: str
    items: frozenset[int]
    low: int
    high: int
    short_forms: tuple[frozenset[int], ...] = ()

    def total(self, field: str, items: Mapping[str, int]) -> int:
        """Return the sum of `items` after checking them; refuse a malformed set, naming it."""
        try:
            numbers = {int(key): value for key, value in items.items()}
        except ValueError:
            raise InvalidField(field, "item keys are item numbers") from None
        given = frozenset(numbers)
        if given != self.items and given not in self.short_forms:
            raise InvalidField(field, f"{self.name} needs items {sorted(self.items)}"
                               + "".join(f" or {sorted(s)}" for s in self.short_forms))
        for number, value in numbers.items():
            if not isinstance(value, int) or isinstance(value, bool) \
                    or not self.low <= value <= self.high:
                raise InvalidField(f"{field}.{number}",
                                   f"{self.name} items score {self.low}-{self.high}")
        return sum(numbers.values())


# CLINICAL.md: CADSS 23 items 0-4, short form items 1, 2, 6, 7, 15, 22 (Rodrigues 2021).
CADSS = Instrument("CADSS", frozenset(range(1, 24)), 0, 4,
                   (frozenset({1, 2, 6, 7, 15, 22}),))
# CLINICAL.md: BPRS positive subscale, 4 items scored 1-7.
BPRS_POSITIVE = Instrument("BPRS positive", frozenset(range(1, 5)), 1, 7)
PHQ9 = Instrument("PHQ-9", frozenset(range(1, 10)), 0, 3)
MADRS = Instrument("MADRS", frozenset(range(1, 11)), 0, 6)
OUTCOMES = {"phq9": PHQ9, "madrs": MADRS}
