"""The request fields for times, days and whole numbers, bounded to what Vigil can hold.

Every request schema reads these kinds of value through these fields (a test walks them), so a
value that a column or Python's datetime cannot hold is a 422 naming the field, never a 500: a
time past year 9999 once in UTC, an offset beyond a 64-bit integer, a count beyond its column.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from marshmallow import ValidationError, fields, validate

# Far enough either side of any real record (a birth in 1900, an expiry or a plan in 2199),
# near enough that adding a few years to either is still a date.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "must be from 1900 to 2199 (UTC)"
INT32 = 2**31 - 1
INT64 = 2**63 - 1


def moment(value: datetime) -> datetime:
    """Return an aware `value` if it falls between EARLIEST and LATEST, else refuse it."""
    # Compared, not converted: converting 9999-12-31T23:59:59-12:00 to UTC overflows.
    if not EARLIEST <= value < LATEST:
        raise ValidationError(OUT_OF_RANGE)
    return value


class DateTime(fields.AwareDateTime):
    """An ISO 8601 time with its UTC offset, from 1900 to 2199 once in UTC."""

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        return moment(super()._deserialize(value, attr, data, **kwargs))


class Date(fields.Date):
    """An ISO 8601 date from 1900 to 2199."""

    def _deserialize(self, value, attr, data, **kwargs) -> date:
        day = super()._deserialize(value, attr, data, **kwargs)
        if not EARLIEST.date() <= day < LATEST.date():
            raise ValidationError(OUT_OF_RANGE.removesuffix(" (UTC)"))
        return day


class Integer(fields.Integer):
    """A whole number within its column: a 32-bit integer, or 64-bit with `bits=64`."""

    def __init__(self, *, bits: int = 32, **kwargs) -> None:
        largest = {32: INT32, 64: INT64}[bits]
        given = kwargs.pop("validate", None)
        given = [] if given is None else [given] if callable(given) else list(given)
        column = validate.Range(-largest - 1, largest, error="must be from {min} to {max}")
        super().__init__(validate=[*given, column], **kwargs)
