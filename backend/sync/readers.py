"""Read pushed records as their API schema does, without marshmallow's machinery per record.

A phone pushes records by the hundred whose values are plain JSON: whole numbers, strings,
objects of numbers. A reader compiled once per schema checks each such value's type and runs
the field's own validators, then the schema's own validators, and returns what `Schema.load`
returns. Anything else (a value of another type, an unknown or missing key, any refusal) is
read by `Schema.load` itself, so a refused record carries exactly the schema's messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, missing
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA

from backend import bounded

Reader = Callable[[dict[str, Any]], Any]
Convert = Callable[[Any], Any]


class _Unsure(Exception):
    """The value is not one the compiled reader reads; `Schema.load` will."""


def compile_reader(schema: Schema) -> Reader:
    """Return a reader equal to `schema.load` on a dict, quicker on plain JSON values."""
    # Marshmallow's hooks decide whether the lean path may read for it.
    hooks = schema._hooks
    if (any(hooks[tag] for tag in (PRE_LOAD, POST_LOAD, VALIDATES)) or schema.unknown != RAISE
            or any(many or options["pass_original"]
                   for _name, many, options in hooks[VALIDATES_SCHEMA])):
        return schema.load
    steps = [(field.data_key or name, field.attribute or name, field, _converter(field))
             for name, field in schema.load_fields.items()]
    known = frozenset(key for key, *_rest in steps)
    validators = [getattr(schema, name) for name, _many, _options in hooks[VALIDATES_SCHEMA]]

    def read(plain: dict[str, Any]) -> Any:
        if not known.issuperset(plain):
            return schema.load(plain)
        try:
            loaded = _values(plain, steps)
            for validator in validators:
                validator(loaded, partial=schema.partial, many=False, unknown=schema.unknown)
        except (_Unsure, ValidationError):
            return schema.load(plain)
        return loaded

    return read


def _values(plain: dict[str, Any], steps: list[tuple[str, str, fields.Field, Convert]]
            ) -> dict[str, Any]:
    loaded: dict[str, Any] = {}
    for key, attribute, field, convert in steps:
        if key in plain:
            loaded[attribute] = convert(plain[key])
        elif field.required:
            raise _Unsure
        elif field.load_default is not missing:
            default = field.load_default
            loaded[attribute] = default() if callable(default) else default
    return loaded


def _converter(field: fields.Field) -> Convert:
    """Return how one field reads a value, then runs the field's validators on it."""
    if field.pre_load or field.post_load:
        return _by_field(field)
    read = _plain_reader(field)
    if read is None:
        return _by_field(field)
    checks = list(field.validators)

    def convert(value: Any) -> Any:
        loaded = read(value)
        for check in checks:
            check(loaded)
        return loaded

    return convert


def _plain_reader(field: fields.Field) -> Convert | None:
    """Return a reader of the field's plain JSON values, or None if it has none."""
    kind = type(field)
    if kind in (fields.Integer, bounded.Integer):
        return _whole
    if kind is fields.String:
        return _text
    if kind is fields.UUID:
        return _uuid
    if kind is fields.Dict and field.mapping_type is dict:
        keys = _converter(field.key_field) if field.key_field else _any
        items = _converter(field.value_field) if field.value_field else _any
        return lambda value: _mapping(value, keys, items)
    return None


def _by_field(field: fields.Field) -> Convert:
    """Return a reader that asks the field itself."""
    def convert(value: Any) -> Any:
        return field.deserialize(value)
    return convert


def _whole(value: Any) -> int:
    # Exactly int: marshmallow refuses booleans, and turns floats and strings into ints.
    if type(value) is not int:
        raise _Unsure
    return value


def _text(value: Any) -> str:
    if type(value) is not str:
        raise _Unsure
    return value


def _uuid(value: Any) -> uuid.UUID:
    if type(value) is not str:
        raise _Unsure
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _Unsure from None


def _any(value: Any) -> Any:
    return value


def _mapping(value: Any, keys: Convert, items: Convert) -> dict[Any, Any]:
    if type(value) is not dict:
        raise _Unsure
    return {keys(key): items(item) for key, item in value.items()}
