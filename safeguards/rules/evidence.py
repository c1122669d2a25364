"""Evidence as reviewers read it: ids, whole numbers and exact decimals, nothing unrecorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from safeguards.findings import EvidenceValue

TENTH = Decimal("0.1")


def evidence(**values: EvidenceValue | datetime | None) -> dict[str, EvidenceValue]:
    """Return `values` as evidence: times in ISO 8601, and what was never recorded left out."""
    return {name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in values.items() if value is not None}


def hours(delta: timedelta) -> Decimal:
    """Return `delta` in hours to a tenth, exactly."""
    return (Decimal(delta // timedelta(seconds=1)) / 3600).quantize(TENTH)


def minutes(delta: timedelta) -> Decimal:
    """Return `delta` in minutes to a tenth, exactly."""
    return (Decimal(delta // timedelta(seconds=1)) / 60).quantize(TENTH)
