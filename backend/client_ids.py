"""Ids the sender chose: a retry finds the record it stored; another record under the id is refused.

Phones and clients name their records themselves, so a request lost on the way back can be sent
again harmlessly. What is stored is never changed: a different record under a known id is a
conflict, not an update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def stored_twin(stored: T | None, incoming: object, *, content: Callable[[T], object],
                conflict: Exception) -> T | None:
    """Return `stored` when `incoming` retries it, None for a new id; else raise `conflict`."""
    if stored is None:
        return None
    if content(stored) == incoming:
        return stored
    raise conflict
